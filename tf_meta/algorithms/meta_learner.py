"""The base class of every meta-learner: a `keras.Model` over episode batches."""

from collections.abc import Callable, Mapping

import keras
import numpy as np
import tensorflow as tf

from tf_meta import adaptation
from tf_meta.multi_worker_fit import MultiWorkerFit

EPISODE_KEYS = ("support_x", "support_y", "query_x")
EPISODE_FORMAT = (
    "An episode batch is the pair (x, y) with x = {'support_x': [tasks, shots, *features], "
    "'support_y': [tasks, shots, *targets], 'query_x': [tasks, queries, *features]} and "
    "y = query_y: [tasks, queries, *targets]."
)


def _shape(value) -> tf.TensorShape:
    return tf.TensorShape(getattr(value, "shape", np.shape(value)))


def _dtype(value) -> tf.DType | None:
    """The TensorFlow dtype of a tensor or array, or None for one TensorFlow has no number for."""
    try:
        return tf.as_dtype(getattr(value, "dtype", None) or np.asarray(value).dtype)
    except TypeError:
        return None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"{message} {EPISODE_FORMAT}")


def validate_episode(inputs, targets=None) -> None:
    """Checks that `(inputs, targets)` is an episode batch with consistent shapes.

    Dimensions unknown at trace time (the task axis under a distribution strategy) are
    skipped; every known dimension must match exactly, so nothing is broadcast silently.

    Args:
        inputs: The `x` of an episode batch: a dict with the keys of `EPISODE_KEYS`.
        targets: The `y` of an episode batch (`query_y`), or None when there is none.

    Raises:
        ValueError: Naming the key and the shapes received and expected, if `inputs` is not
            a dict, a key is missing or unknown, a rank is too low, or two shapes that must
            agree do not.
    """
    _require(
        isinstance(inputs, Mapping),
        f"Expected an episode batch, received x of type {type(inputs).__name__} with shape "
        f"{_shape(inputs)}.",
    )
    missing = [key for key in EPISODE_KEYS if key not in inputs]
    unexpected = sorted(key for key in inputs if key not in EPISODE_KEYS)
    hint = " Pass query_y as the target y, not inside x." if "query_y" in unexpected else ""
    _require(
        not missing and not unexpected,
        f"Episode keys missing: {missing}, unexpected: {unexpected}; received keys "
        f"{sorted(inputs)}, expected {list(EPISODE_KEYS)}.{hint}",
    )
    shapes = {key: _shape(inputs[key]) for key in EPISODE_KEYS}
    if targets is not None:
        shapes["query_y"] = _shape(targets)
    minimum_ranks = {"support_x": 3, "support_y": 2, "query_x": 3, "query_y": 2}
    for key, shape in shapes.items():
        _require(
            shape.rank is not None and shape.rank >= minimum_ranks[key],
            f"'{key}' must have rank >= {minimum_ranks[key]} ([tasks, examples, ...]); "
            f"received shape {shape}.",
        )

    def agree(key, dims, other, other_dims, what):
        received = shapes[key][dims[0] : dims[1]]
        expected = shapes[other][other_dims[0] : other_dims[1]]
        _require(
            received.rank == expected.rank and received.is_compatible_with(expected),
            f"'{key}' has {what} {received} but '{other}' has {expected} "
            f"('{key}' shape {shapes[key]}, '{other}' shape {shapes[other]}).",
        )

    values = {**{key: inputs[key] for key in EPISODE_KEYS}, "query_y": targets}
    for key in shapes:
        dtype = _dtype(values[key])
        if dtype is None or not (dtype.is_floating or dtype.is_integer):
            name = dtype.name if dtype is not None else np.asarray(values[key]).dtype
            _require(
                False,
                f"'{key}' must hold numbers (floating point or integers); received dtype {name}.",
            )
    for key, shape in shapes.items():
        # No task is fine (a replica's share of a last, partial batch); no example is not.
        _require(
            0 not in shape.as_list()[1:],
            f"'{key}' has an empty axis: shape {shape}. Every task needs at least one "
            "support and one query example, and features and targets need a size.",
        )
    for key in shapes:
        if key != "support_x":
            agree(key, (0, 1), "support_x", (0, 1), "task axis")
    agree("support_y", (1, 2), "support_x", (1, 2), "examples")
    agree("query_x", (2, None), "support_x", (2, None), "feature shape")
    if targets is not None:
        agree("query_y", (1, 2), "query_x", (1, 2), "examples")
        agree("query_y", (2, None), "support_y", (2, None), "target shape")


@keras.saving.register_keras_serializable(package="tf_meta")
class MetaLearner(MultiWorkerFit):
    """A meta-learner: a Keras model that adapts a wrapped network to each task.

    Calling the learner on an episode batch `x` adapts to each task's support set and
    returns the query predictions `[tasks, queries, ...]`, so `fit`, `evaluate` and
    `predict` work on episode batches (see `EPISODE_FORMAT`) and `compile(loss=...,
    metrics=[...])` applies to `(query_y, query_predictions)`. The compiled loss is the
    outer (query) loss and, unless `inner_loss` is given, also the inner (support) loss.

    Tasks of a meta-batch are adapted one after another inside the graph (`tf.map_fn`);
    the task axis may be unknown at trace time, as it is per replica under a
    `tf.distribute` strategy. A meta-training step differentiates each task inside that
    loop (`meta_gradients_by_task`), so only the tasks in flight hold activations. The
    inner loss is averaged per task without the `1 / num_replicas` scaling that Keras
    applies to the outer loss, so a step under a strategy equals the same step on one
    device.

    Two options change speed and memory, not the result:
    - `vectorize_tasks` adapts the tasks together (`tf.vectorized_map`, which falls back to
      a loop for ops it cannot vectorize) and differentiates the whole meta-batch at once.
      It is a large gain for small networks and a loss for convolutions, whose filter
      gradients TensorFlow does not vectorize; under `jit_compile` it needs every op
      vectorizable (README: "Speed and memory options").
    - `gradient_checkpointing` makes the meta-gradient recompute each inner step instead
      of storing its activations (`tf_meta.checkpointing.recompute`; MAML and the learners
      built on it): memory no longer grows with the activations of every inner step, for
      the cost of a second pass through each.
    The prototypical network has no inner steps to checkpoint and Reptile never
    differentiates through adaptation: both refuse `gradient_checkpointing`.

    Subclasses implement `adapt_weights`, the inner loop on fast weights. Adaptation runs
    the network on fast weights in a `keras.StatelessScope` (the mechanism of
    `stateless_call`), in training mode: the wrapped model's variables never change, and
    batch normalization uses the statistics of the batch it sees during adaptation and
    query prediction (transductive, as in MAML); its moving statistics are never updated.

    Args:
        model: The network to meta-learn: any built or unbuilt Keras model (Sequential,
            functional or subclassed) mapping one task's examples `[examples, *features]`
            to predictions.
        inner_loss: The support loss of the inner loop (a Keras loss identifier). None
            uses the loss given to `compile`.
        vectorize_tasks: Adapt the tasks of a meta-batch together instead of in a loop.
        gradient_checkpointing: Recompute each inner step for the meta-gradient instead
            of storing its activations.
        **kwargs: Passed to `keras.Model` (`name`, ...).

    Raises:
        ValueError: If `model` is not a Keras model, or is built and has no trainable
            weights.
    """

    def __init__(
        self,
        model: keras.Model,
        inner_loss=None,
        vectorize_tasks: bool = False,
        gradient_checkpointing: bool = False,
        **kwargs,
    ):
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"`model` must be a keras.Model; received {type(model).__name__}: {model!r}."
            )
        # Inputs reach the wrapped model uncast: its own layers cast them as they expect.
        super().__init__(autocast=False, **kwargs)
        self.model = model
        self.inner_loss = inner_loss
        self.vectorize_tasks = bool(vectorize_tasks)
        self.gradient_checkpointing = bool(gradient_checkpointing)
        if model.built:
            self._check_trainable_weights()

    def _check_trainable_weights(self) -> None:
        if not self.model.trainable_weights:
            raise ValueError(
                f"`model` ({self.model.name}) has no trainable weights: there is nothing to "
                "adapt or meta-learn."
            )

    def build(self, input_shape):
        """Builds the wrapped model for one task's inputs.

        Args:
            input_shape: A dict of shapes with the keys of an episode batch.
        """
        shapes = {key: tf.TensorShape(shape) for key, shape in dict(input_shape).items()}
        validate_episode({key: keras.KerasTensor(shape) for key, shape in shapes.items()})
        _build_network(self.model, shapes["support_x"][2:])
        self._check_trainable_weights()
        self.built = True

    @property
    def support_loss(self) -> Callable:
        """The per-example loss of the inner loop: `inner_loss`, or else the compiled loss.

        Raises:
            ValueError: If there is neither.
        """
        identifier = self.inner_loss if self.inner_loss is not None else self.loss
        if identifier is None:
            raise ValueError(
                "No inner loss: pass `inner_loss=` to the learner or `loss=` to `compile`."
            )
        return adaptation.per_example_loss(identifier)

    def adapt_weights(
        self,
        trainable_values: list[tf.Tensor],
        non_trainable_values: list[tf.Tensor],
        support_x: tf.Tensor,
        support_y: tf.Tensor,
        steps: int | None = None,
        training: bool = False,
    ) -> list[tf.Tensor]:
        """The inner loop for one task: from initial to adapted fast weights.

        Args:
            trainable_values: Initial fast weights, one per trainable variable of `.model`.
            non_trainable_values: Values of the non-trainable variables of `.model`.
            support_x: Support inputs of one task, `[shots, *features]`.
            support_y: Support targets of one task, `[shots, *targets]`.
            steps: Number of inner steps; None uses the learner's default for `training`.
            training: Whether this is a meta-training step (whose outer gradient may flow
                through adaptation) or evaluation.

        Returns:
            The adapted fast weights.
        """
        raise NotImplementedError

    def predict_task(
        self,
        weights: list[tf.Tensor],
        non_trainable_values: list[tf.Tensor],
        support_x: tf.Tensor,
        query_x: tf.Tensor,
    ) -> tf.Tensor:
        """Predicts one task's queries with its adapted weights, all queries as one batch.

        Args:
            weights: The adapted fast weights.
            non_trainable_values: Values of the non-trainable variables of `.model`.
            support_x: Support inputs of the task (unused here; a non-transductive
                learner predicts each query beside them).
            query_x: Query inputs of the task.

        Returns:
            Query predictions.
        """
        del support_x
        return adaptation.predictions(self.model, weights, non_trainable_values, query_x)

    def weight_values(self) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
        """The current values of `.model`'s trainable and non-trainable variables."""
        return (
            [tf.convert_to_tensor(variable.value) for variable in self.model.trainable_variables],
            [
                tf.convert_to_tensor(variable.value)
                for variable in self.model.non_trainable_variables
            ],
        )

    def call(self, inputs, training=False):
        """Adapts to each task's support set and predicts its queries.

        Args:
            inputs: An episode batch `x` (see `EPISODE_FORMAT`).
            training: Whether this is a meta-training step.

        Returns:
            Query predictions `[tasks, queries, *outputs]`.
        """
        return self.adapt_and_predict(inputs, training=training)

    def adapt_and_predict(self, inputs, steps: int | None = None, training: bool = False):
        """Adapts to each task's support set with `steps` inner steps and predicts queries.

        Args:
            inputs: An episode batch `x` (see `EPISODE_FORMAT`).
            steps: Number of inner steps; None uses the learner's default.
            training: Whether this is a meta-training step.

        Returns:
            Query predictions `[tasks, queries, *outputs]`, in float32 if the model
            computes in half precision.

        Raises:
            ValueError: If `inputs` is not a valid episode batch.
        """

        def one_task(trainable_values, non_trainable_values, support_x, support_y, query_x):
            weights = self.adapt_weights(
                trainable_values,
                non_trainable_values,
                support_x,
                support_y,
                steps=steps,
                training=training,
            )
            return self.predict_task(weights, non_trainable_values, support_x, query_x)

        return self.map_tasks(inputs, one_task, lambda query_spec: query_spec)

    def map_tasks(self, inputs, function, output_signature):
        """Runs `function` on every task of an episode batch, inside the graph.

        Args:
            inputs: An episode batch `x` (see `EPISODE_FORMAT`).
            function: `function(trainable_values, non_trainable_values, support_x,
                support_y, query_x)` for one task, given the current values of `.model`'s
                variables (read once for the whole batch).
            output_signature: A function from the spec of one task's query predictions to
                the (nested) spec of `function`'s result.

        Returns:
            The results of `function`, stacked over tasks.

        Raises:
            ValueError: If `inputs` is not a valid episode batch.
        """
        (support_x, support_y, query_x), values, non_trainable_values, own = self.task_arguments(
            inputs
        )
        count = len(self.model.trainable_variables)

        def one_task(*arguments):
            mapping = list(zip(own, arguments[count : len(values)], strict=True))
            with keras.StatelessScope(state_mapping=mapping):
                return function(
                    list(arguments[:count]), non_trainable_values, *arguments[len(values) :]
                )

        tasks = (support_x, support_y, query_x)
        if self.vectorize_tasks:
            return tf.vectorized_map(
                lambda task: one_task(*values, *task), tasks, fallback_to_while_loop=True
            )
        return tf.map_fn(
            lambda task: one_task(*values, *task),
            tasks,
            fn_output_signature=output_signature(self.query_output_spec(query_x)),
        )

    def own_variables(self) -> list:
        """The learner's trainable variables outside `.model` (learned inner learning rates).

        They are read once per meta-batch and enter each task as arguments, as the network's
        weights do: a task function then reads no variable inside the task loop.
        """
        return [v for v in self.trainable_variables if all(v is not w for w in self.model.weights)]

    def task_arguments(self, inputs):
        """What every task of a batch receives, read once for the whole batch.

        Returns:
            The episode tensors `(support_x, support_y, query_x)`; the values of `.model`'s
            trainable variables followed by those of `own_variables()`; the values of
            `.model`'s non-trainable variables; and `own_variables()`.
        """
        tensors = episode_tensors(inputs)
        trainable_values, non_trainable_values = self.weight_values()
        own = self.own_variables()
        values = trainable_values + [tf.convert_to_tensor(variable.value) for variable in own]
        return tensors, values, non_trainable_values, own

    def training_task(self, trainable_values, non_trainable_values, support_x, support_y, query_x):
        """One task's outputs in a meta-training step: its adapted query predictions.

        MAML's multi-step loss overrides this (and `training_output_spec`, `training_loss`
        and `final_predictions`) to return the predictions after every inner step.

        Args:
            trainable_values: Initial fast weights, one per trainable variable of `.model`.
            non_trainable_values: Values of the non-trainable variables of `.model`.
            support_x: Support inputs of one task.
            support_y: Support targets of one task.
            query_x: Query inputs of one task.
        """
        weights = self.adapt_weights(
            trainable_values, non_trainable_values, support_x, support_y, training=True
        )
        return self.predict_task(weights, non_trainable_values, support_x, query_x)

    def training_output_spec(self, query_spec: tf.TensorSpec) -> tf.TensorSpec:
        """The spec of `training_task`'s result, given that of one task's query predictions."""
        return query_spec

    def training_loss(self, y, outputs, sample_weight) -> tf.Tensor:
        """The outer loss of `training_task`'s outputs stacked over tasks (`compute_loss`)."""
        return self.compute_loss(y=y, y_pred=outputs, sample_weight=sample_weight, training=True)

    def final_predictions(self, outputs) -> tf.Tensor:
        """The query predictions `[tasks, queries, ...]` within stacked training outputs."""
        return outputs

    def update_training_state(self, outputs) -> None:
        """Assigns the state that a training step's outputs carry.

        A learner adapting fast weights carries none; the prototypical network carries its
        encoder's moving statistics.

        Args:
            outputs: `training_task`'s outputs, stacked over tasks.
        """
        del outputs

    def training_outputs(self, inputs):
        """`training_task`'s outputs for every task of an episode batch, stacked."""
        return self.map_tasks(inputs, self.training_task, self.training_output_spec)

    def meta_gradients_by_task(self, x, y, sample_weight):
        """The loss, outputs and meta-gradient of a batch, each task differentiated in turn.

        A Keras loss with its default reduction averages over the examples of the batch, and
        every task has as many queries, so the batch's loss is the mean of its tasks' losses
        and its meta-gradient the mean of theirs (other reductions take the step from
        outside the loop). Each task's gradient is taken inside the task loop, by a tape
        around that task alone: its activations are freed before the next task, and its
        forward and backward passes lie in one graph function, where TensorFlow's oneDNN
        rewrite applies to every gradient kernel (differentiating the whole `tf.map_fn`
        from outside leaves max pooling's gradient on a kernel ten times slower; README:
        "Speed and memory options").

        Args:
            x: An episode batch `x`.
            y: Query targets `[tasks, queries, ...]`.
            sample_weight: Query weights `[tasks, queries]`, or None.

        Returns:
            `(loss, outputs, gradients)`: the batch's loss as `compute_loss` returns it,
            `training_task`'s outputs stacked over tasks, and one gradient (or None) per
            entry of `trainable_variables`.
        """
        (support_x, support_y, query_x), values, non_trainable_values, own = self.task_arguments(x)
        count = len(self.model.trainable_variables)
        tasks = (support_x, support_y, query_x, y)
        if sample_weight is not None:
            tasks += (sample_weight,)
        unconnected = set()  # positions of `values` that no task's loss depends on

        def one_task(task):
            # Copies made inside the loop: a tape there cannot see the loop's captures.
            inside = [tf.identity(value) for value in values]
            with tf.GradientTape() as tape:
                tape.watch(inside)
                with keras.StatelessScope(
                    state_mapping=list(zip(own, inside[count:], strict=True))
                ):
                    outputs = self.training_task(inside[:count], non_trainable_values, *task[:3])
                weight = task[4][None] if sample_weight is not None else None
                batched = tf.nest.map_structure(lambda output: output[None], outputs)
                loss = self.training_loss(task[3][None], batched, weight)
                scaled = self.optimizer.scale_loss(loss)
            loss = tf.cast(loss, tf.float32)
            gradients = tape.gradient(scaled, inside)
            unconnected.update(i for i, gradient in enumerate(gradients) if gradient is None)
            gradients = [
                tf.zeros_like(value) if gradient is None else gradient
                for value, gradient in zip(inside, gradients, strict=True)
            ]
            return loss, outputs, gradients

        query_spec = self.query_output_spec(query_x)
        losses, outputs, gradients = tf.map_fn(
            one_task,
            tasks,
            fn_output_signature=(
                tf.TensorSpec([], tf.float32),
                self.training_output_spec(query_spec),
                [tf.TensorSpec(value.shape, value.dtype) for value in values],
            ),
        )
        task_count = tf.shape(support_x)[0]
        means = [
            None
            if i in unconnected
            else tf.reduce_sum(gradient, 0) / tf.cast(task_count, gradient.dtype)
            for i, gradient in enumerate(gradients)
        ]
        by_variable = {
            id(v): g for v, g in zip(self.model.trainable_variables + own, means, strict=True)
        }
        return (
            tf.reduce_sum(losses) / tf.cast(task_count, tf.float32),
            outputs,
            [by_variable.get(id(variable)) for variable in self.trainable_variables],
        )

    def query_output_spec(self, query_x: tf.Tensor) -> tf.TensorSpec:
        """The spec of one task's query predictions, float32 for half-precision models.

        Args:
            query_x: Query inputs with a task axis, `[tasks, queries, *features]`.
        """
        output = self.model.compute_output_spec(
            keras.KerasTensor(query_x.shape[1:], dtype=query_x.dtype)
        )
        dtype = adaptation.at_least_float32(tf.zeros([], output.dtype)).dtype
        return tf.TensorSpec(output.shape, dtype)

    def build_symbolically(self, inputs) -> None:
        """Builds the learner the way `__call__` does, for steps that never call it.

        Args:
            inputs: An episode batch `x`.
        """
        if not self.built:
            self(
                {
                    key: keras.KerasTensor(inputs[key].shape, inputs[key].dtype)
                    for key in EPISODE_KEYS
                }
            )

    def track_loss(self, loss: tf.Tensor, inputs) -> None:
        """Updates the `loss` metric from a custom step, as Keras's own step does.

        Args:
            loss: The loss as `compute_loss` returns it (scaled by `1 / replicas`).
            inputs: The episode batch `x`, whose task count weighs the value.
        """
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(
                    loss * replicas, sample_weight=tf.shape(inputs[EPISODE_KEYS[0]])[0]
                )

    def train_step(self, data):
        """One meta-training step on a checked episode batch (see `meta_train_step`).

        The update depends on the checked batch through the gradients, so a batch that fails
        the run-time checks changes nothing, not even the optimizer's step counter.
        """
        return self.meta_train_step(checked_labelled_episode(data))

    def meta_train_step(self, data):
        """The meta-training step proper: query loss, meta-gradient and update.

        The loss is that of the adapted predictions, its gradient is taken with respect to
        the initial weights (through adaptation). This is Keras's `train_step` except that
        the update waits for the gradients (see `apply_meta_gradients`).

        Args:
            data: A validated episode batch `(x, query_y)`.

        Returns:
            The logs of the step.
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self.build_symbolically(x)
        averaged = getattr(self.loss, "reduction", "sum_over_batch_size") == "sum_over_batch_size"
        if averaged and not (self.vectorize_tasks or self.losses):
            loss, outputs, gradients = self.meta_gradients_by_task(x, y, sample_weight)
        else:
            with tf.GradientTape() as tape:
                outputs = self.training_outputs(x)
                loss = self.training_loss(y, outputs, sample_weight)
                scaled = self.optimizer.scale_loss(loss)
            gradients = tape.gradient(scaled, self.trainable_variables)
        self.apply_meta_gradients(gradients)
        self.update_training_state(outputs)
        self.track_loss(loss, x)
        return self.compute_metrics(
            x, y, self.final_predictions(outputs), sample_weight=sample_weight
        )

    def apply_meta_gradients(self, gradients: list[tf.Tensor]) -> None:
        """Updates `trainable_variables` with the optimizer, once the gradients exist.

        In Keras's own step the optimizer's step counter is incremented independently of
        the gradients, so a step failing at run time (a label out of range) would still
        count. Here every update waits for the gradients: a failed step changes nothing.

        Args:
            gradients: One gradient (or None) per entry of `trainable_variables`.
        """
        variables = self.trainable_variables
        if not self.optimizer.built:
            self.optimizer.build(variables)  # outside the control dependencies, to be lifted
        with tf.control_dependencies([gradient for gradient in gradients if gradient is not None]):
            self.optimizer.apply_gradients(zip(gradients, variables, strict=True))

    def test_step(self, data):
        """One evaluation step: post-adaptation query loss and metrics."""
        return super().test_step(checked_labelled_episode(data))

    def adapt(self, support_x, support_y, steps: int | None = None) -> list[tf.Tensor]:
        """Adapts to one task and returns its fast weights.

        Args:
            support_x: Support inputs of one task, `[shots, *features]` (no task axis).
            support_y: Support targets of one task, `[shots, *targets]`.
            steps: Number of inner steps; None uses the learner's evaluation default.

        Returns:
            The adapted weights, one tensor per entry of `.model.trainable_variables`.

        Raises:
            ValueError: If the support inputs and targets disagree in their number of
                examples.
        """
        support_x = tf.convert_to_tensor(support_x)
        support_y = tf.convert_to_tensor(support_y)
        validate_episode(
            {"support_x": support_x[None], "support_y": support_y[None], "query_x": support_x[None]}
        )
        _build_network(self.model, support_x.shape[1:], support_x.dtype)
        trainable_values, non_trainable_values = self.weight_values()
        return self.adapt_weights(
            trainable_values, non_trainable_values, support_x, support_y, steps=steps
        )

    def adapted_model(self, support_x, support_y, steps: int | None = None) -> keras.Model:
        """A standalone copy of `.model` holding the weights adapted to one task.

        The copy is an ordinary Keras model: call it, save it or fine-tune it further.
        Note that in inference mode its batch-normalization layers use moving statistics,
        which meta-training does not update; call it with `training=True` to predict
        transductively as the learner does.

        Args:
            support_x: Support inputs of one task, `[shots, *features]`.
            support_y: Support targets of one task, `[shots, *targets]`.
            steps: Number of inner steps; None uses the learner's evaluation default.

        Returns:
            A new `keras.Model`; the learner and `.model` are unchanged.
        """
        weights = self.adapt(support_x, support_y, steps=steps)
        clone = keras.models.clone_model(self.model)
        _build_network(clone, np.shape(support_x)[1:], self.model.input_dtype)
        for variable, value in zip(clone.trainable_variables, weights, strict=True):
            variable.assign(value)
        for variable, source in zip(
            clone.non_trainable_variables, self.model.non_trainable_variables, strict=True
        ):
            variable.assign(source)
        return clone

    def get_config(self):
        """The learner's configuration, with the wrapped model serialized inside it."""
        config = super().get_config()
        config["model"] = keras.saving.serialize_keras_object(self.model)
        config["vectorize_tasks"] = self.vectorize_tasks
        config["gradient_checkpointing"] = self.gradient_checkpointing
        config["inner_loss"] = (
            self.inner_loss
            if self.inner_loss is None or isinstance(self.inner_loss, str)
            else keras.saving.serialize_keras_object(self.inner_loss)
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Rebuilds a learner from `get_config`'s output."""
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(
            config["model"], custom_objects=custom_objects
        )
        if isinstance(config.get("inner_loss"), dict):
            config["inner_loss"] = keras.saving.deserialize_keras_object(
                config["inner_loss"], custom_objects=custom_objects
            )
        return cls(**config)


def _build_network(model: keras.Model, feature_shape, dtype=None) -> None:
    """Builds `model` for examples of `feature_shape` by calling it symbolically."""
    if not model.built:
        model(keras.KerasTensor((None, *feature_shape), dtype=dtype or model.input_dtype))


def _finite(key: str, value: tf.Tensor) -> tf.Tensor:
    """`value`, checked at run time for NaN and Inf if it is floating point."""
    if not value.dtype.is_floating:
        return value
    return tf.debugging.check_numerics(value, f"Episode key '{key}' contains NaN or Inf")


def _checked(tensors: dict[str, tf.Tensor], finite_keys) -> dict[str, tf.Tensor]:
    """`tensors` with run-time checks of what `validate_episode` could not see at trace time.

    Dimensions unknown when the step is traced (Keras relaxes shapes when it retraces; an
    exported signature has a dynamic example axis) are asserted at run time: no empty axis,
    and the same agreements as `validate_episode`. The floating-point values of
    `finite_keys` are checked for NaN and Inf. Every check names the key.
    """
    tensors = {key: tf.convert_to_tensor(value) for key, value in tensors.items()}
    if not all(value.shape.is_fully_defined() for value in tensors.values()):
        shapes = {key: tf.shape(value) for key, value in tensors.items()}
        pairs = [(key, "support_x", 0, 1, "task axis") for key in tensors if key != "support_x"]
        pairs += [
            ("support_y", "support_x", 1, 2, "examples"),
            ("query_x", "support_x", 2, None, "feature shape"),
        ]
        if "query_y" in tensors:
            pairs += [
                ("query_y", "query_x", 1, 2, "examples"),
                ("query_y", "support_y", 2, None, "target shape"),
            ]
        assertions = [
            tf.debugging.assert_positive(shape[1:], message=f"'{key}' has an empty axis")
            for key, shape in shapes.items()
        ] + [
            tf.debugging.assert_equal(
                shapes[key][start:end],
                shapes[other][start:end],
                message=f"'{key}' and '{other}' disagree on the {what}",
            )
            for key, other, start, end, what in pairs
        ]
        with tf.control_dependencies(assertions):
            tensors = {key: tf.identity(value) for key, value in tensors.items()}
    return {
        key: _finite(key, value) if key in finite_keys else value for key, value in tensors.items()
    }


def episode_tensors(inputs) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Validates an episode batch `x` and returns its support inputs, targets and queries.

    Args:
        inputs: An episode batch `x` (see `EPISODE_FORMAT`).

    Returns:
        `(support_x, support_y, query_x)` as tensors. They fail at run time with an
        `InvalidArgumentError` naming the key if they contain NaN or Inf, or if a dimension
        unknown at trace time is empty or disagrees, before anything that depends on them
        (an update of weights) runs.

    Raises:
        ValueError: If `inputs` is not a valid episode batch (see `validate_episode`).
    """
    validate_episode(inputs)
    tensors = _checked({key: inputs[key] for key in EPISODE_KEYS}, EPISODE_KEYS)
    return tuple(tensors[key] for key in EPISODE_KEYS)


def checked_labelled_episode(data):
    """Validates an episode batch `(x, query_y)` with targets (see `validate_episode`).

    Args:
        data: The batch a training or evaluation step receives.

    Returns:
        `data` with `query_y` checked at run time as `episode_tensors` checks `x`, and
        against `x`'s shapes. `x` itself is checked once, where the learner reads it
        (`episode_tensors`), and everything that changes state depends on it.

    Raises:
        ValueError: If `data` has no targets or is not a valid episode batch.
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    _require(y is not None, "The episode batch has no targets: pass query_y as y.")
    validate_episode(x, y)
    targets = _checked({**{key: x[key] for key in EPISODE_KEYS}, "query_y": y}, ["query_y"])
    return keras.utils.pack_x_y_sample_weight(x, targets["query_y"], sample_weight)
