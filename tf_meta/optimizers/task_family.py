"""Inner problems for meta-training an optimizer: a network and a source of tasks."""

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from tf_meta import adaptation
from tf_meta.rules.update_rule import check_positive_integer


class TaskFamily:
    """A distribution over inner training problems: one network, many tasks.

    An inner problem trains a fresh initialization of the family's network on one task's
    training set, in minibatches, for a run of `run_length` steps. `stream` yields the
    meta-batches that `OptimizerMetaLearner.fit` consumes: for each of `meta_batch_size`
    slots, the minibatches of the slot's next truncation of its run, a fresh initialization
    and `reset=True` when the slot's run starts (slots start at staggered points of their
    runs, as in learned_optimization, so that a meta-batch mixes early and late steps).

    Args:
        build_model: Builds the family's network, a built Keras model (any architecture).
        sample_task: `sample_task(generator)` draws one task's training set, a pair of
            arrays `(inputs, targets)` with examples along the first axis, from a
            `numpy.random.Generator`.
        loss: The inner loss, a Keras loss identifier.
        batch_size: Examples per inner step, drawn without replacement within a batch.
        name: The family's name, for tables and plots.

    Raises:
        ValueError: If `batch_size` is not a positive integer.

    Example:
        ```python
        family = tf_meta.optimizers.TaskFamily(
            lambda: tf_meta.models.mlp((1,), (40, 40), 1), sample_sinusoid, loss="mse"
        )
        ```
    """

    def __init__(
        self,
        build_model: Callable[[], keras.Model],
        sample_task: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]],
        loss="mse",
        batch_size: int = 32,
        name: str = "family",
    ):
        check_positive_integer("batch_size", batch_size)
        self.build_model = build_model
        self.sample_task = sample_task
        self.loss = loss
        self.batch_size = batch_size
        self.name = name

    def task(self, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One task's training set, checked: float32 inputs, at least `batch_size` examples.

        Raises:
            ValueError: If the arrays' first dimensions differ or hold fewer than
                `batch_size` examples.
        """
        inputs, targets = self.sample_task(generator)
        inputs, targets = np.asarray(inputs), np.asarray(targets)
        if len(inputs) != len(targets) or len(inputs) < self.batch_size:
            raise ValueError(
                f"`sample_task` of family {self.name!r} must return inputs and targets with "
                f"the same number of examples, at least batch_size={self.batch_size}; "
                f"received shapes {inputs.shape} and {targets.shape}."
            )
        return inputs.astype(np.float32), targets

    def initial_weights(self, model: keras.Model, generator) -> list[np.ndarray]:
        """A fresh initialization of `model`'s trainable weights.

        Kernels (rank 2 or more) are drawn Glorot-uniform, the initializer of Keras's
        Dense and convolution layers; vectors (biases, normalization scales) keep the
        values `build_model` gave them. Override for another scheme.

        Args:
            model: The family's network.
            generator: A `numpy.random.Generator`.

        Returns:
            One array per entry of `model.trainable_weights`.
        """
        weights = []
        for variable in model.trainable_weights:
            value = keras.ops.convert_to_numpy(variable.value)
            if value.ndim >= 2:
                receptive = int(np.prod(value.shape[:-2]))
                limit = np.sqrt(6.0 / (receptive * (value.shape[-2] + value.shape[-1])))
                value = generator.uniform(-limit, limit, value.shape)
            weights.append(value.astype(variable.dtype))
        return weights

    def batches(self, task, count: int, generator) -> tuple[np.ndarray, np.ndarray]:
        """`count` minibatches of `task`, stacked: `[count, batch_size, ...]`."""
        inputs, targets = task
        indices = np.stack(
            [generator.choice(len(inputs), self.batch_size, replace=False) for _ in range(count)]
        )
        return inputs[indices], targets[indices]

    def stream(
        self,
        model: keras.Model,
        meta_batch_size: int,
        truncation_length: int,
        run_length: int,
        seed: int = 0,
    ) -> tf.data.Dataset:
        """Meta-batches of truncations of inner runs, for `OptimizerMetaLearner.fit`.

        Args:
            model: The family's network, built (its weights give the shapes).
            meta_batch_size: Inner problems per meta-batch (the learner's).
            truncation_length: Inner steps per truncation (the learner's).
            run_length: Inner steps of a whole run: a multiple of `truncation_length`.
            seed: Seed of the tasks, initializations and minibatches.

        Returns:
            An infinite `tf.data.Dataset` of dictionaries: `inputs` and `targets`
            `[meta_batch_size, truncation_length + 1, batch_size, ...]` (the last minibatch
            measures the loss after the truncation's last step), `reset` `[meta_batch_size]`,
            `slot` (each problem's index) and `initial_weights`, a fresh initialization (one
            array per trainable weight with a leading `meta_batch_size` axis), which a run
            starts from at a reset or after diverging.

        Raises:
            ValueError: If a length is not a positive integer or `run_length` is not a
                multiple of `truncation_length`.
        """
        for name, value in (
            ("meta_batch_size", meta_batch_size),
            ("truncation_length", truncation_length),
            ("run_length", run_length),
        ):
            check_positive_integer(name, value)
        if run_length % truncation_length:
            raise ValueError(
                f"`run_length` ({run_length}) must be a multiple of `truncation_length` "
                f"({truncation_length})."
            )
        truncations = run_length // truncation_length
        generator = np.random.default_rng(seed)
        example_inputs, example_targets = self.task(np.random.default_rng(seed))

        def elements():
            tasks = [None] * meta_batch_size
            # Staggered starts: slot i begins at truncation i * truncations // slots.
            positions = [i * truncations // meta_batch_size for i in range(meta_batch_size)]
            first = [True] * meta_batch_size
            while True:
                for slot in range(meta_batch_size):
                    reset = first[slot] or positions[slot] == 0
                    if reset:
                        tasks[slot] = self.task(generator)
                        first[slot] = False
                    inputs, targets = self.batches(tasks[slot], truncation_length + 1, generator)
                    # Every step carries one: a diverged run restarts from it.
                    initial = self.initial_weights(model, generator)
                    positions[slot] = (positions[slot] + 1) % truncations
                    yield {
                        "inputs": inputs,
                        "targets": targets,
                        "reset": np.array(reset),
                        "slot": np.array(slot, np.int32),
                        "initial_weights": tuple(initial),
                    }

        leading = (truncation_length + 1, self.batch_size)
        signature = {
            "inputs": tf.TensorSpec(leading + example_inputs.shape[1:], tf.float32),
            "targets": tf.TensorSpec(
                leading + example_targets.shape[1:], tf.as_dtype(example_targets.dtype)
            ),
            "reset": tf.TensorSpec((), tf.bool),
            "slot": tf.TensorSpec((), tf.int32),
            "initial_weights": tuple(
                tf.TensorSpec(variable.shape, variable.dtype)
                for variable in model.trainable_weights
            ),
        }
        # Batched by tf.data, so that a distribution strategy splits the meta-batch.
        dataset = tf.data.Dataset.from_generator(elements, output_signature=signature)
        return dataset.batch(meta_batch_size, drop_remainder=True).prefetch(2)

    def training_curve(
        self,
        optimizer: keras.optimizers.Optimizer,
        task,
        steps: int,
        seed: int = 0,
        every: int = 10,
        build_model: Callable[[], keras.Model] | None = None,
    ) -> np.ndarray:
        """Trains a fresh network on `task` with a Keras optimizer; its training-loss curve.

        The network (from `build_model`, default the family's) starts from
        `initial_weights` drawn with `seed`, and takes `steps` steps of
        `Model.train_on_batch` on minibatches drawn with `seed`, so two optimizers given
        the same seed see the same initialization and the same minibatches.

        Args:
            optimizer: A new Keras optimizer (it is compiled into the network).
            task: One task's `(inputs, targets)`, from `task`.
            steps: Training steps.
            seed: Seed of the initialization and the minibatches.
            every: Steps between two measurements of the loss on the whole training set.
            build_model: Another network for the same tasks (a wider one, say).

        Returns:
            The loss on the task's whole training set before training and after every
            `every` steps, `[steps // every + 1]`; infinite from a step where it is not
            finite (the run diverged) on.
        """
        model = (build_model or self.build_model)()
        generator = np.random.default_rng(seed)
        for variable, value in zip(
            model.trainable_weights, self.initial_weights(model, generator), strict=True
        ):
            variable.assign(value)
        model.compile(optimizer=optimizer, loss=self.loss)
        inputs, targets = task
        loss = adaptation.per_example_loss(self.loss)
        batch_inputs, batch_targets = self.batches(task, steps, generator)

        def measured():
            value = float(adaptation.mean_loss(loss, targets, model(inputs, training=False)))
            return value if np.isfinite(value) else np.inf

        curve = [measured()]
        for step in range(steps):
            model.train_on_batch(batch_inputs[step], batch_targets[step])
            if (step + 1) % every == 0:
                curve.append(measured())
                if not np.isfinite(curve[-1]):
                    break
        curve += [np.inf] * (steps // every + 1 - len(curve))
        return np.array(curve)
