"""The base class of every meta-learner: a `keras.Model` over episode batches."""

import itertools
import logging
import warnings
from collections.abc import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from tf_meta import adaptation, episode
from tf_meta.algorithms.task import Task
from tf_meta.multi_worker_fit import MultiWorkerFit


@keras.saving.register_keras_serializable(package="tf_meta")
class MetaLearner(MultiWorkerFit):
    """A meta-learner: a Keras model that adapts a wrapped network to each task.

    Calling the learner on an episode batch `x` (`tf_meta.episode`) adapts to each task's
    support set and returns the query predictions `[tasks, queries, ...]`, so `fit`,
    `evaluate` and `predict` work on episode batches and `compile(loss=..., metrics=[...])`
    applies to `(query_y, query_predictions)`. The compiled loss is the outer (query) loss
    and, unless `inner_loss` is given, also the inner (support) loss.

    **The contract.** A learner is four hooks on one task (a `Task`: the initial fast
    weights, the support set and the query inputs); everything else (the task loop,
    distribution, the update, saving, serving) is this class's:

    1. `adapt_task(task, steps, training)` returns the task's adapted state: fast weights
       for a gradient-based learner (run `tf_meta.adaptation.inner_loop` with an update
       rule from `tf_meta.rules`; never write an inner loop), prototypes for a metric one.
    2. `predict_queries(task, adapted, training)` predicts the task's queries from it. The
       default runs the network on fast weights.
    3. `task_loss(task, adapted, predictions, query_y, sample_weight)` is the task's outer
       loss. The default is the compiled loss of the predictions.
    4. `meta_gradient(task, adapted, loss, tape)` is the task's contribution to the update
       of the initial weights and learned variables. The default differentiates `loss`
       with `tape`, which watched `task.weights` and `task.learned` from before adaptation
       (MAML). Reptile returns a weight difference; iMAML an implicit gradient.

    Only `adapt_task` is required. The network runs on fast weights in a
    `keras.StatelessScope` (the mechanism of `stateless_call`): inside the hooks, reading
    a variable of the network or of the learner yields the task's value of it, and the
    wrapped model's variables never change in the inner loop. Gradient-based learners run
    the network in training mode (`tf_meta.adaptation.predictions`): batch normalization
    uses the statistics of the batch it sees (transductive, as in MAML) and its moving
    statistics are never updated. A metric learner (`metric_based = True`) receives
    one-hot support labels over the batch's ways; whatever its network assigns to its
    non-trainable variables in a training step (moving statistics) is averaged over the
    tasks of the global batch and assigned after the step.

    **A training step** runs the hooks for each task under a tape inside the task loop
    (`tf.map_fn`), so only the task in flight holds activations, and applies the mean of
    the tasks' meta-gradients over the tasks of the global batch, once every gradient
    exists: a batch that fails a run-time check changes nothing, not even the optimizer's
    step counter. A meta-batch with no task at all fails the step with an
    `InvalidArgumentError` and changes nothing; under a distribution strategy a replica
    may receive no task (a last, partial batch), and the step equals the single-device step
    on the tasks that exist. With a loss that does not average over its batch, or losses
    added by layers, the default `meta_gradient` is taken once, from outside the task loop,
    of the whole batch's loss.

    Two options change speed and memory, not the result:
    - `vectorize_tasks` adapts the tasks together (`tf.vectorized_map`, which falls back to
      a loop for ops it cannot vectorize), each task's meta-gradient taken inside the map.
      It is a large gain for small networks and a loss for convolutions, whose filter
      gradients TensorFlow does not vectorize; under `jit_compile` it needs every op
      vectorizable (README: "Speed and memory options"). The default, `"auto"`, chooses
      from those measurements: without `jit_compile`, it vectorizes a `Sequential` or
      functional network made only of `Dense` layers and layers without weights (measured
      4.2x the task loop on MAML's sinusoid MLP, where convolutions measured 0.5x to 0.6x);
      otherwise it keeps the loop and logs why, once. Under `jit_compile` XLA compiles the
      loop itself (measured 3.9x the loop without XLA, 4.6x vectorized), and refuses the
      loops that vectorization falls back to for some ops. A step traced for unknown
      example axes (shapes that changed between batches) runs the loop whatever the option,
      so that an empty axis is refused by name. Differentiating the mapped
      losses from outside the map instead makes XLA compile the step again for every
      batch (in plain TensorFlow too: any reduction to a scalar inside
      `tf.vectorized_map`, differentiated from outside, does it).
    - `gradient_checkpointing` recomputes each inner step for the meta-gradient instead of
      storing its activations (`tf_meta.adaptation.inner_loop`).

    Class attribute:
        metric_based: True for a learner whose network maps examples to embeddings that
            adaptation compares (prototypical networks): its support labels reach the
            hooks one-hot over the batch's ways, and serving adds an `embed` endpoint.

    Args:
        model: The network to meta-learn: any built or unbuilt Keras model (Sequential,
            functional or subclassed) mapping one task's examples `[examples, *features]`
            to predictions.
        inner_loss: The support loss of the inner loop (a Keras loss identifier). None
            uses the loss given to `compile`.
        vectorize_tasks: Adapt the tasks of a meta-batch together (True) or in a loop
            (False); `"auto"` chooses by the network (above).
        gradient_checkpointing: Recompute each inner step for the meta-gradient instead
            of storing its activations.
        **kwargs: Passed to `keras.Model` (`name`, ...).

    Raises:
        ValueError: If `model` is not a Keras model, or is built and has no trainable
            weights.

    Example:
        A new gradient-based learner is a few lines (see `MAML` and `Reptile`):

        ```python
        class OneStep(tf_meta.MetaLearner):
            def adapt_task(self, task, steps=None, training=False):
                def gradients(weights, step):
                    return tf_meta.adaptation.loss_and_gradients(
                        self.model, self.support_loss, weights, task.non_trainable_weights,
                        task.support_x, task.support_y)[1]
                path = tf_meta.adaptation.inner_loop(
                    tf_meta.rules.GradientDescent(0.1), task.weights, gradients, steps=1)
                return path[-1]
        ```
    """

    metric_based = False

    def __init__(
        self,
        model: keras.Model,
        inner_loss=None,
        vectorize_tasks: bool | str = "auto",
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
        if vectorize_tasks not in (True, False, "auto"):
            raise ValueError(
                f"`vectorize_tasks` must be True, False or 'auto'; received {vectorize_tasks!r}."
            )
        self.vectorize_tasks = vectorize_tasks
        self._logged_loop_reasons = set()
        # Set by `fit` and the `make_*_function`s (see `make_train_function`).
        self._stacked_steps = False
        self._compiled_step = self._compiled_test_step = None
        self.gradient_checkpointing = bool(gradient_checkpointing)
        if model.built:
            self._check_trainable_weights()

    def _vectorizing(self, elements) -> bool:
        """Whether the tasks of `elements` run under `tf.vectorized_map`.

        `vectorize_tasks=False` never vectorizes, and `"auto"` only where its rule allows
        (class docstring). Neither does a trace for a batch whose example axes are unknown
        (Keras relaxes the shapes it traces for when they change): there, TensorFlow runs
        the vectorized ops of an empty axis before the check that names it. Each reason
        for the loop is logged once.
        """
        if not self.vectorize_tasks:
            return False
        reason = None
        if self.vectorize_tasks == "auto":
            reason = self._vectorization_obstacle()
            if reason is None and self.jit_compile:
                reason = "jit_compile (XLA compiles the task loop itself)"
        if reason is None and not all(
            tensor.shape[1:].is_fully_defined() for tensor in tf.nest.flatten(elements)
        ):
            reason = "example axes unknown when the step is traced (shapes changed)"
        if reason is not None and reason not in self._logged_loop_reasons:
            self._logged_loop_reasons.add(reason)
            logging.getLogger("tf_meta").info(
                "%s: the tasks run in a loop, not vectorized, because of %s.", self.name, reason
            )
        return reason is None

    def _vectorization_obstacle(self) -> str | None:
        """Why `vectorize_tasks="auto"` keeps the task loop for this learner, or None.

        Subclasses with an op that `tf.vectorized_map` cannot convert add theirs.
        """
        return _unvectorized_layer(self.model)

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
        episode.validate_episode({key: keras.KerasTensor(shape) for key, shape in shapes.items()})
        _build_network(self.model, shapes[episode.SUPPORT_X][2:])
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

    @property
    def classifies(self) -> bool:
        """Whether targets are integer class labels: a metric learner's, or a sparse loss's.

        Class labels are checked at run time: a fractional value, or a label beyond the
        network's outputs, fails the step with an `InvalidArgumentError` naming the key.
        """
        if self.metric_based:
            return True
        loss = self.inner_loss if self.inner_loss is not None else self.loss
        name = loss if isinstance(loss, str) else keras.saving.serialize_keras_object(loss)
        return "sparse_categorical" in str(name).lower()

    def _checked_labels(self, key: str, labels, inputs):
        """`labels` of `key` with the run-time checks of class labels, if `classifies`.

        Args:
            key: The episode key of `labels`.
            labels: Class labels with a task axis.
            inputs: The inputs they label, with a task axis (for the network's outputs).
        """
        if not self.classifies:
            return labels
        classes = None
        if not self.metric_based:
            _build_network(self.model, inputs.shape[2:], inputs.dtype)
            classes = self._query_output_spec(inputs).shape[-1]
        return episode.checked_class_labels(key, labels, classes)

    def fit(self, x=None, y=None, *arguments, **keywords):
        """Keras's `fit`, refusing an endless stream without `steps_per_epoch`.

        The learner is built from the first batch's shapes before any callback runs, so
        that callbacks needing a built model (Keras's `BackupAndRestore`) work, and so is
        its optimizer, so that the step is traced once.

        On an endless `tf.data.Dataset`, with `jit_compile=True` and `steps_per_execution`
        k > 1, on one device, the k meta-steps of an execution run in one XLA program: the
        stream is batched by k and the compiled program loops over the stacked batches.
        Keras launches the compiled step once per meta-step instead, from a loop over the
        `tf.data` iterator, which measured 0.58x JAX's meta-steps per second on the sinusoid
        MLP (`benchmarks/step_overhead.py`); this way, 100 steps per execution measured
        1.06x (`benchmarks/throughput.py`). The steps, metrics, logs and callbacks are
        Keras's for `steps_per_execution`: the logs after the last step.

        Raises:
            ValueError: If `x` is an infinite `tf.data.Dataset` and `steps_per_epoch` is
                not given: one epoch would never end.
        """
        inputs = x
        if isinstance(x, tf.data.Dataset):
            if (
                keywords.get("steps_per_epoch") is None
                and x.cardinality() == tf.data.INFINITE_CARDINALITY
            ):
                raise ValueError(
                    "`x` is an infinite episode stream and `steps_per_epoch` is None, so the "
                    "first epoch would never end. Pass `steps_per_epoch=` (meta-steps per "
                    "epoch), or make the stream finite (`num_tasks=`, `.take(n)`)."
                )
            spec = x.element_spec
            inputs = spec[0] if isinstance(spec, tuple) else spec
        elif isinstance(x, Iterator) and not self.built:
            # A generator is built from its first batch, which is put back in front.
            first = next(x, None)
            if first is not None:
                x = (batch for batch in itertools.chain([first], x))
                inputs = first[0] if isinstance(first, tuple) else first
        if not self.built and _is_episode(inputs):
            with self.distribute_strategy.scope():
                self.build_symbolically(inputs)
        if self.built and self.optimizer is not None and not self.optimizer.built:
            # Built inside the first trace instead, its variables would make TensorFlow
            # trace the step a second time.
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
        stacked = self._stacks_steps(x)
        if stacked != self._stacked_steps:
            self.train_function = None
        self._stacked_steps = stacked
        if stacked:
            # The metrics' variables, built here: inside the compiled loop they could not be.
            self._symbolic_build(data_batch=x.element_spec)
            x = x.batch(self.steps_per_execution, drop_remainder=True)
        return super().fit(x, y, *arguments, **keywords)

    def _stacks_steps(self, x) -> bool:
        """Whether `fit` runs an execution's meta-steps in one XLA program (see `fit`)."""
        return (
            isinstance(x, tf.data.Dataset)
            and x.cardinality() == tf.data.INFINITE_CARDINALITY
            and self.jit_compile is True
            and self.steps_per_execution > 1
            and self._on_one_device()
        )

    def _on_one_device(self) -> bool:
        """Whether the learner trains without a distribution strategy."""
        return self._distribute_strategy is None and not tf.distribute.has_strategy()

    def make_train_function(self, force=False):
        """Keras's step function, with the batch checked before XLA compiles the rest.

        XLA drops run-time checks (`check_numerics`, `tf.debugging` asserts), so under
        `jit_compile` on one device the checks of `_checked_batch` run in Keras's
        uncompiled function and the rest of `train_step` in a compiled one, which starts
        only once they pass. With stacked batches (`fit`), the compiled function runs
        several meta-steps. Under a distribution strategy Keras compiles its whole step
        (the optimizer's cross-replica update cannot run in a nested function), and the
        checks are dropped.
        """
        if self.train_function is not None and not force:
            return self.train_function
        self._compiled_step = None
        if not self._stacked_steps:
            function, self._compiled_step = self._checked_then_compiled(
                super().make_train_function, self._step, force
            )
            return function
        steps = self.steps_per_execution

        @tf.function(jit_compile=True, reduce_retracing=True)
        def several_steps(batches):
            def one_step(index):
                self.train_step(tf.nest.map_structure(lambda stacked: stacked[index], batches))
                return (index + 1,)

            tf.while_loop(lambda index: index < steps, one_step, (tf.constant(0),))
            return self.get_metrics_result()

        @tf.function
        def function(iterator):
            batches = iterator.get_next()
            # The k batches checked as one of k times the tasks.
            merged = tf.nest.map_structure(
                lambda stacked: tf.reshape(
                    stacked, tf.concat([[-1], tf.shape(stacked)[2:]], axis=0)
                ),
                batches,
            )
            with tf.control_dependencies(tf.nest.flatten(self._checked_batch(merged))):
                batches = tf.nest.map_structure(tf.identity, batches)
            return several_steps(batches)

        self.train_function = function
        return function

    def make_test_function(self, force=False):
        """Keras's evaluation function, with the batch checked before XLA (as for training)."""
        if self.test_function is not None and not force:
            return self.test_function
        function, self._compiled_test_step = self._checked_then_compiled(
            super().make_test_function, self._test_step, force
        )
        return function

    def _checked_then_compiled(self, make, step, force):
        """Keras's `make(force)`, and `step` compiled by XLA (or None).

        The step is compiled under `jit_compile` on one device, for Keras's uncompiled
        function to call once `_checked_batch` passes.
        """
        if not self.jit_compile or self.run_eagerly or not self._on_one_device():
            return make(force), None
        compiled = tf.function(step, jit_compile=True, reduce_retracing=True)
        self.jit_compile = False  # Keras's function around the compiled step
        try:
            return make(force), compiled
        finally:
            self.jit_compile = True

    # The contract: four hooks on one task.

    def adapt_task(self, task: Task, steps: int | None = None, training: bool = False):
        """Adapts to one task's support set.

        Args:
            task: The task, with its initial fast weights.
            steps: Number of inner steps; None uses the learner's default for `training`.
            training: Whether this is a meta-training step (whose meta-gradient may flow
                through adaptation) or evaluation.

        Returns:
            The adapted state: any nest of tensors (fast weights, prototypes).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement `adapt_task`.")

    def predict_queries(self, task: Task, adapted, training: bool = False) -> tf.Tensor:
        """Predicts one task's queries from its adapted state, all queries as one batch.

        The default runs the network on the adapted fast weights, in training mode.

        Args:
            task: The task.
            adapted: What `adapt_task` returned.
            training: Whether this is a meta-training step.

        Returns:
            Query predictions `[queries, *outputs]`.
        """
        del training
        return adaptation.predictions(self.model, adapted, task.non_trainable_weights, task.query_x)

    def task_loss(self, task: Task, adapted, predictions, query_y, sample_weight=None):
        """The outer loss of one task.

        The default is the compiled loss of `predictions` (the one `compute_loss` gives).

        Args:
            task: The task.
            adapted: What `adapt_task` returned.
            predictions: What `predict_queries` returned.
            query_y: The task's query targets `[queries, *targets]`.
            sample_weight: The queries' weights `[queries]`, or None.

        Returns:
            A scalar.
        """
        del task, adapted
        return self.compute_loss(
            y=query_y[None],
            y_pred=predictions[None],
            sample_weight=None if sample_weight is None else sample_weight[None],
            training=True,
        )

    def meta_gradient(self, task: Task, adapted, loss, tape: tf.GradientTape) -> list:
        """One task's meta-gradient: its contribution to the outer update.

        The default is the gradient of `loss` with respect to the initial fast weights and
        the learned variables, through adaptation.

        Args:
            task: The task; `tape` watched `task.weights` and `task.learned`.
            adapted: What `adapt_task` returned.
            loss: The task's outer loss (as the optimizer scales it for mixed precision),
                computed under `tape`.
            tape: The tape that recorded adaptation, prediction and the loss.

        Returns:
            One gradient (or None) per entry of `task.weights + task.learned`.
        """
        del adapted
        return tape.gradient(loss, task.weights + task.learned)

    # Keras's entry points and the public API.

    def call(self, inputs, training=False):
        """Adapts to each task's support set and predicts its queries.

        Args:
            inputs: An episode batch `x` (see `tf_meta.episode`).
            training: Whether this is a meta-training step.

        Returns:
            Query predictions `[tasks, queries, *outputs]`.
        """
        return self.adapt_and_predict(inputs, training=training)

    def adapt_and_predict(self, inputs, steps: int | None = None, training: bool = False):
        """Adapts to each task's support set with `steps` inner steps and predicts queries.

        Args:
            inputs: An episode batch `x` (see `tf_meta.episode`).
            steps: Number of inner steps; None uses the learner's default.
            training: Whether this is a meta-training step.

        Returns:
            Query predictions `[tasks, queries, *outputs]`, in float32 if the model
            computes in half precision.

        Raises:
            ValueError: If `inputs` is not a valid episode batch.
        """

        def one_task(task, extra):
            del extra
            adapted = self.adapt_task(task, steps=steps, training=training)
            return adaptation.at_least_float32(self.predict_queries(task, adapted, training))

        tasks = self._tasks(inputs)
        return self._map(tasks, (), one_task, self._query_output_spec(tasks[1][2]))[0]

    def train_step(self, data):
        """One meta-training step on a checked episode batch (see the class docstring)."""
        if self._compiled_step is not None:
            return self._compiled_step(self._checked_batch(data))
        return self._step(data)

    def _checked_batch(self, data):
        """`data` once every run-time check of a training step on it has passed.

        They are the checks `_step` makes itself: under XLA, which drops them, they run
        before the compiled step instead (`make_train_function`).
        """
        x, y, sample_weight, _ = self._checked_targets(data)
        with tf.control_dependencies(self._checked_episode(x)):
            return keras.utils.pack_x_y_sample_weight(
                tf.nest.map_structure(tf.identity, x),
                tf.identity(y),
                None if sample_weight is None else tf.identity(sample_weight),
            )

    def _checked_targets(self, data):
        """`(x, y, sample_weight, task_count)` of a batch, `y` once its checks have passed.

        The checks of a step's targets: the batch has a task, and its query labels fit the
        network (`_checked_labels`). `task_count` is the global batch's (`_task_count`).
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(
            episode.checked_labelled_episode(data)
        )
        task_count = self._task_count(y)
        with tf.control_dependencies([self._has_tasks(y, task_count)]):
            y = tf.identity(self._checked_labels(episode.QUERY_Y, y, x[episode.QUERY_X]))
        return x, y, sample_weight, task_count

    def _checked_episode(self, inputs):
        """`(support_x, support_y, query_x)` of an episode batch, checked at run time.

        The support labels are one-hot over the batch's ways for a metric learner
        (`one_hot_labels` checks class labels itself), else checked by `_checked_labels`.
        """
        support_x, support_y, query_x = episode.episode_tensors(inputs)
        if self.metric_based:
            support_y = episode.one_hot_labels(support_y)
        else:
            support_y = self._checked_labels(episode.SUPPORT_Y, support_y, support_x)
        return support_x, support_y, query_x

    def _step(self, data):
        """`train_step`'s work, its checks included (dropped under XLA)."""
        x, y, sample_weight, task_count = self._checked_targets(data)
        self._warn_on_retrace((x, y, sample_weight))
        self.build_symbolically(x)
        averaged = getattr(self.loss, "reduction", "sum_over_batch_size") == "sum_over_batch_size"
        by_task = type(self).meta_gradient is not MetaLearner.meta_gradient or (
            averaged and not self.losses
        )
        if by_task:
            loss, predictions, gradients = self._by_task_step(x, y, sample_weight)
        else:
            self._warn_on_recompiling_step()
            loss, predictions, gradients = self._whole_batch_step(x, y, sample_weight, averaged)
        # Sums over this replica's tasks, to be divided by the global batch's task count,
        # unless the loss is not a mean over its batch: then the gradient is applied as is.
        # The update waits for the loss too: bad query targets fail the step before anything
        # changes, also for a learner whose meta-gradient does not depend on them (Reptile).
        self._apply(gradients, task_count if by_task or averaged else None, [loss])
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss, sample_weight=tf.shape(y)[0])
        return self.compute_metrics(x, y, predictions, sample_weight=sample_weight)

    def _warn_on_recompiling_step(self) -> None:
        """Warns when the whole-batch step runs with vectorized tasks under XLA.

        That step differentiates the tasks' losses from outside `tf.vectorized_map`, and XLA
        then compiles it again at every batch (measured: 0.5 meta-steps/s against 250 for
        the same MAML with a mean-reduced loss). It is the step of a loss that is not a mean
        over its batch (`reduction="sum"`) or of a network with layer losses (regularizers).
        """
        if self.vectorize_tasks is True and self.jit_compile:
            warnings.warn(
                f"{self.name}: with `vectorize_tasks=True` and `jit_compile=True`, a loss that "
                "is not a mean over its batch (`reduction='sum'`) or layer losses "
                f"({len(self.losses)} here) make XLA compile the training step again at every "
                "batch, about 500 times slower. Use a mean-reduced loss without layer losses, "
                "or drop one of the two options.",
                stacklevel=2,
            )

    def _warn_on_retrace(self, data) -> None:
        """Warns, once per learner, when the training step is traced for other shapes.

        Keras traces the step again when a batch's shapes differ from those it was traced
        for (a last, smaller batch of a finite stream; batches of varying ways or shots):
        the trace, and under `jit_compile` the compilation, is paid again. The warning
        names each key whose shape changed.
        """
        names = {(1,): episode.QUERY_Y, (2,): "sample_weight"}
        shapes = tuple(
            (names.get(path, "/".join(str(part) for part in path[1:])), _shape(tensor))
            for path, tensor in keras.tree.flatten_with_path(data)
            if tensor is not None
        )
        previous = getattr(self, "_traced_shapes", None)
        self._traced_shapes = shapes
        if previous is None or previous == shapes or getattr(self, "_warned_retrace", False):
            return
        self._warned_retrace = True
        changed = ", ".join(
            f"{key} {before} -> {after}"
            for (key, before), (_, after) in zip(previous, shapes, strict=False)
            if before != after
        )
        warnings.warn(
            f"{self.name}'s training step is traced again because the episode batch's "
            f"shapes changed: {changed or 'its structure changed'}. Each new shape costs a "
            "trace (and an XLA compilation under `jit_compile`); give every batch the same "
            "shapes (for a finite stream, a pool size that the meta-batch size divides).",
            stacklevel=2,
        )

    def test_step(self, data):
        """One evaluation step: post-adaptation query loss and metrics.

        A meta-batch with no task fails it, as it fails a training step.
        """
        if self._compiled_test_step is not None:
            return self._compiled_test_step(self._checked_batch(data))
        return self._test_step(data)

    def _test_step(self, data):
        """`test_step`'s work, its checks included (dropped under XLA)."""
        x, y, sample_weight, _ = self._checked_targets(data)
        return super().test_step(keras.utils.pack_x_y_sample_weight(x, y, sample_weight))

    def build_symbolically(self, inputs) -> None:
        """Builds the learner the way `__call__` does, from an episode batch or its spec.

        Args:
            inputs: An episode batch `x`, or its `element_spec`.
        """
        if not self.built:
            self(
                {
                    key: keras.KerasTensor(inputs[key].shape, inputs[key].dtype)
                    for key in episode.KEYS
                }
            )

    def adapt(self, support_x, support_y, steps: int | None = None):
        """Adapts to one task and returns its adapted state (`adapt_task`'s result).

        Args:
            support_x: Support inputs of one task, `[shots, *features]` (no task axis).
            support_y: Support targets of one task, `[shots, *targets]`.
            steps: Number of inner steps; None uses the learner's evaluation default.

        Returns:
            The adapted state: for a gradient-based learner, one tensor per entry of
            `.model.trainable_variables`; for a prototypical network, the prototypes.

        Raises:
            ValueError: If the support inputs and targets disagree in their number of
                examples, or are not numbers.
            tf.errors.InvalidArgumentError: If they contain NaN or Inf.
        """
        support_x = tf.convert_to_tensor(support_x)
        support_y = tf.convert_to_tensor(support_y)
        # The support inputs stand in for the queries, which adaptation does not read.
        batch = {
            episode.SUPPORT_X: support_x[None],
            episode.SUPPORT_Y: support_y[None],
            episode.QUERY_X: support_x[None],
        }
        _build_network(self.model, support_x.shape[1:], support_x.dtype)
        weights, tensors = self._tasks(batch)
        task = Task(*weights, *(tensor[0] for tensor in tensors))
        with self._task_scope(task):
            return self.adapt_task(task, steps=steps)

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

        Raises:
            NotImplementedError: For a metric learner, which adapts no weights: `adapt`
                returns its task state.
        """
        if self.metric_based:
            raise NotImplementedError(
                f"{type(self).__name__} adapts no weights; `adapt` returns its task state "
                "(the prototypes), and `predict` scores queries against it."
            )
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

    # The task loop and the update, private.

    def _own_variables(self) -> list:
        """The learner's trainable variables outside `.model` (learned inner rates)."""
        return [v for v in self.trainable_variables if all(v is not w for w in self.model.weights)]

    def _tasks(self, inputs):
        """The checked episode tensors and the weight values every task starts from.

        Returns:
            `(weights, tensors)`: `(trainable, non_trainable, learned)` values, read once
            for the batch, and `(support_x, support_y, query_x)`, the support labels
            one-hot over the batch's ways for a metric learner.
        """
        support_x, support_y, query_x = self._checked_episode(inputs)
        read = lambda variables: [tf.convert_to_tensor(v.value) for v in variables]  # noqa: E731
        weights = (
            read(self.model.trainable_variables),
            read(self.model.non_trainable_variables),
            read(self._own_variables()),
        )
        return weights, (support_x, support_y, query_x)

    def _task_scope(self, task: Task) -> keras.StatelessScope:
        """A scope in which the network's and the learner's variables read as `task`'s."""
        mapping = list(zip(self.model.trainable_variables, task.weights, strict=True))
        mapping += list(
            zip(self.model.non_trainable_variables, task.non_trainable_weights, strict=True)
        )
        mapping += list(zip(self._own_variables(), task.learned, strict=True))
        return keras.StatelessScope(state_mapping=mapping)

    def _map(self, tasks, extra, function, output_spec, statistics=False):
        """`function(task, extra_element)` for every task of the batch, stacked over tasks.

        Each task's weights are copies made inside the loop, which a tape there can watch,
        and the hooks run in the task's `_task_scope`. A batch with no task gives empty
        results without running `function`.

        Returns:
            `(results, statistics, updated)`: with `statistics`, the values of the network's
            non-trainable variables after each task, and the positions of those that some
            task assigned (known when the loop is traced); else None and an empty set.
        """
        (trainable, non_trainable, learned), tensors = tasks
        count = len(trainable)
        updated = set()

        def one_task(elements):
            inside = [tf.identity(value) for value in trainable + learned]
            task = Task(inside[:count], non_trainable, inside[count:], *elements[:3])
            with self._task_scope(task) as scope:
                results = function(task, elements[3:])
            if not statistics:
                return results
            values = []
            for index, (variable, value) in enumerate(
                zip(self.model.non_trainable_variables, non_trainable, strict=True)
            ):
                current = scope.get_current_value(variable)
                if current is not None and current is not value:
                    updated.add(index)
                    value = current
                values.append(value)
            return results, values

        if statistics:
            output_spec = (
                output_spec,
                [tf.TensorSpec(value.shape, value.dtype) for value in non_trainable],
            )
        elements = (*tensors, *extra)

        def mapped():
            if self._vectorizing(elements):
                return tf.vectorized_map(one_task, elements, fallback_to_while_loop=True)
            return tf.map_fn(one_task, elements, fn_output_signature=output_spec)

        def empty():
            return tf.nest.map_structure(
                # An unknown size (the ways) as 1, so that reductions over it stay defined.
                lambda spec: tf.zeros(
                    [0, *[1 if d is None else d for d in spec.shape]], spec.dtype
                ),
                output_spec,
            )

        if tensors[0].shape[0]:
            results = mapped()
        else:  # possibly no task: a replica's share of a last, partial batch
            results = tf.nest.map_structure(
                lambda value, spec: tf.ensure_shape(value, [None, *spec.shape]),
                tf.cond(tf.shape(tensors[0])[0] > 0, mapped, empty),
                output_spec,
            )
        if statistics:
            return results[0], results[1], updated
        return results, None, updated

    def _query_output_spec(self, query_x: tf.Tensor) -> tf.TensorSpec:
        """The spec of one task's query predictions, float32 for half-precision models.

        A metric learner's predictions are `[queries, ways]`, the ways following the batch.
        """
        if self.metric_based:
            return tf.TensorSpec([query_x.shape[1], None], tf.float32)
        output = self.model.compute_output_spec(
            keras.KerasTensor(query_x.shape[1:], dtype=query_x.dtype)
        )
        dtype = adaptation.at_least_float32(tf.zeros([], output.dtype)).dtype
        return tf.TensorSpec(output.shape, dtype)

    def _by_task_step(self, x, y, sample_weight):
        """The loss, predictions and summed meta-gradient, each task differentiated in turn.

        Each task's gradient is taken inside the task loop, by a tape around that task
        alone: its activations are freed before the next task, and its forward and backward
        passes lie in one graph function, where TensorFlow's oneDNN rewrite applies to every
        gradient kernel (README: "Speed and memory options"). Under `vectorize_tasks`,
        `tf.vectorized_map` vectorizes the tasks' tapes together.

        Returns:
            `(loss, predictions, gradients)`: the mean loss of the replica's tasks, their
            predictions, and one summed gradient (or None) per `trainable_variables` entry.
        """
        tasks = self._tasks(x)
        (trainable, _, learned), tensors = tasks
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        unconnected = set()  # positions of the weights that no task's meta-gradient reaches

        def one_task(task, extra):
            with tf.GradientTape() as tape:
                tape.watch(task.weights + task.learned)
                adapted, predictions, loss = self._training_hooks(task, extra)
                # Unscaled by the replicas: the mean over the global batch is taken later.
                loss = loss * replicas
                scaled = self.optimizer.scale_loss(loss)
            gradients = self.meta_gradient(task, adapted, scaled, tape)
            unconnected.update(i for i, gradient in enumerate(gradients) if gradient is None)
            gradients = [
                tf.zeros_like(value) if gradient is None else tf.convert_to_tensor(gradient)
                for value, gradient in zip(task.weights + task.learned, gradients, strict=True)
            ]
            return loss, predictions, gradients

        extra = (y,) if sample_weight is None else (y, sample_weight)
        spec = (
            tf.TensorSpec([], tf.float32),
            self._query_output_spec(tensors[2]),
            [tf.TensorSpec(value.shape, value.dtype) for value in trainable + learned],
        )
        (losses, predictions, gradients), statistics, updated = self._map(
            tasks, extra, one_task, spec, statistics=True
        )
        self._assign_statistics(statistics, updated)
        sums = [None if i in unconnected else tf.reduce_sum(g, 0) for i, g in enumerate(gradients)]
        by_variable = {
            id(v): g
            for v, g in zip(
                self.model.trainable_variables + self._own_variables(), sums, strict=True
            )
        }
        gradients = [by_variable.get(id(variable)) for variable in self.trainable_variables]
        local_count = tf.cast(tf.shape(tensors[0])[0], tf.float32)
        return tf.math.divide_no_nan(tf.reduce_sum(losses), local_count), predictions, gradients

    def _training_hooks(self, task: Task, extra):
        """A training step's three hooks on one task, its query targets (and weights) `extra`.

        Returns:
            `(adapted, predictions, loss)`, the predictions at least float32 and the loss
            float32.
        """
        adapted = self.adapt_task(task, training=True)
        predictions = adaptation.at_least_float32(self.predict_queries(task, adapted, True))
        weights = extra[1] if len(extra) > 1 else None
        loss = self.task_loss(task, adapted, predictions, extra[0], weights)
        return adapted, predictions, tf.cast(loss, tf.float32)

    def _whole_batch_step(self, x, y, sample_weight, averaged: bool):
        """The loss, predictions and meta-gradient of the batch, from outside the task loop.

        Each task's loss is `task_loss`'s; the batch's loss is their mean, or their sum for
        a loss summed over its batch (`reduction="sum"`).

        Args:
            x: The episode batch `x`.
            y: Its query targets.
            sample_weight: Query weights, or None.
            averaged: Whether the compiled loss averages over its batch.

        Returns:
            As `_by_task_step`, except that a loss averaged over its batch gives the sum of
            the tasks' gradients, and any other loss the gradient of the batch's loss.
        """
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            tasks = self._tasks(x)
            spec = self._query_output_spec(tasks[1][2])

            def one_task(task, extra):
                return self._training_hooks(task, extra)[1:]

            extra = (y,) if sample_weight is None else (y, sample_weight)
            spec = (spec, tf.TensorSpec([], tf.float32))
            (predictions, losses), statistics, updated = self._map(
                tasks, extra, one_task, spec, statistics=True
            )
            # The batch's loss: the mean of the tasks' losses (every task has as many
            # queries), or their sum for a loss summed over its batch.
            loss = tf.reduce_sum(losses)
            if averaged:
                loss = tf.math.divide_no_nan(loss, tf.cast(tf.shape(losses)[0], tf.float32))
            scaled = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, self.trainable_variables)
        self._assign_statistics(statistics, updated)
        if averaged:
            # Keras averages the replica's tasks and scales by 1 / replicas: back to a sum.
            local = tf.cast(tf.shape(tasks[1][0])[0] * replicas, tf.float32)
            gradients = [None if g is None else g * tf.cast(local, g.dtype) for g in gradients]
        return (loss * replicas if averaged else loss), predictions, gradients

    def _assign_statistics(self, statistics, updated) -> None:
        """Moves each assigned non-trainable variable to the mean of the tasks' values.

        The mean is over all tasks of the global batch: replicas sum their tasks' values and
        counts, so every replica assigns the same value, the one a single device would.
        """
        context = tf.distribute.get_replica_context()
        for index in sorted(updated):
            variable = self.model.non_trainable_variables[index]
            values = statistics[index]
            total = tf.reduce_sum(values, axis=0)
            size = tf.cast(tf.shape(values)[0], values.dtype)
            if tf.distribute.get_strategy().num_replicas_in_sync > 1:
                total, size = context.all_reduce(tf.distribute.ReduceOp.SUM, [total, size])
            variable.assign(tf.where(size > 0, total / tf.maximum(size, 1), variable.value))

    def _task_count(self, query_y):
        """The number of tasks in the global batch (all replicas), as float32."""
        task_count = tf.cast(tf.shape(query_y)[0], tf.float32)
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            context = tf.distribute.get_replica_context()
            task_count = context.all_reduce(tf.distribute.ReduceOp.SUM, task_count)
        return task_count

    def _has_tasks(self, query_y, task_count):
        """A run-time check that the global batch has a task (`task_count`), naming it."""
        if tf.distribute.get_strategy().num_replicas_in_sync == 1 and query_y.shape[0]:
            return tf.no_op()  # known when traced: no check to run
        return tf.debugging.assert_positive(task_count, message=_NO_TASK)

    def _apply(self, gradients, task_count, dependencies) -> None:
        """Updates `trainable_variables`, once every gradient exists and a task does.

        In Keras's own step the optimizer's step counter is incremented independently of
        the gradients, so a step failing at run time (a label out of range) would still
        count. Here every update waits for the gradients and for `dependencies` (the loss,
        which waits for the check that the global batch has a task): a failed step changes
        nothing.

        Args:
            gradients: One gradient (or None) per entry of `trainable_variables`.
            task_count: The number of tasks in the global batch, by which `gradients`, sums
                over this replica's tasks, are divided; None applies them as they are (a
                loss that is not a mean over its batch).
            dependencies: Tensors that must be computed before the update.
        """
        variables = self.trainable_variables
        if not self.optimizer.built:
            self.optimizer.build(variables)  # outside the control dependencies, to be lifted
        # A network weight the outer loss does not reach (a zeroed head) is not updated.
        network = {id(variable) for variable in self.model.trainable_variables}
        gradients = [
            tf.zeros(variable.shape, variable.dtype)
            if gradient is None and id(variable) in network
            else gradient
            for gradient, variable in zip(gradients, variables, strict=True)
        ]
        with tf.control_dependencies(list(dependencies)):
            gradients = [
                None
                if g is None
                else (g + 0 if task_count is None else g / tf.cast(task_count, g.dtype))
                for g in gradients
            ]
        with tf.control_dependencies([g for g in gradients if g is not None]):
            self.optimizer.apply_gradients(zip(gradients, variables, strict=True))

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


def _shape(tensor) -> tuple | str:
    """A tensor's shape as a tuple, or "unknown rank"."""
    shape = tf.TensorShape(tensor.shape)
    return "unknown rank" if shape.rank is None else tuple(shape)


def _is_episode(inputs) -> bool:
    """Whether `inputs` is a valid episode batch `x` (or its spec)."""
    try:
        episode.validate_episode(inputs)
    except ValueError:
        return False
    return True


_NO_TASK = "The meta-batch has no task (its task axis is empty): nothing to learn from"


# Layers that `vectorize_tasks="auto"` vectorizes: Dense, and layers without weights of
# which the sinusoid MLP is made. Convolutions measured slower vectorized (their filter
# gradients run in a loop), and layers not measured are not assumed to be faster.
_VECTORIZED_LAYERS = (
    keras.layers.InputLayer,
    keras.layers.Dense,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.Flatten,
    keras.layers.Reshape,
)


def _unvectorized_layer(model: keras.Model) -> str | None:
    """Why `vectorize_tasks="auto"` keeps a loop over tasks for `model`, or None.

    Only a `Sequential` or functional network is inspected: a subclassed model's `call`
    may run any op, and under XLA an op that cannot be vectorized is an error.
    """
    if not isinstance(model, keras.Sequential) and type(model).__name__ != "Functional":
        return f"the subclassed network {type(model).__name__}"
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            reason = _unvectorized_layer(layer)
            if reason is not None:
                return reason
        elif not isinstance(layer, _VECTORIZED_LAYERS):
            return f"its {type(layer).__name__} layer {layer.name!r}"
    return None


def _build_network(model: keras.Model, feature_shape, dtype=None) -> None:
    """Builds `model` for examples of `feature_shape` by calling it symbolically."""
    if not model.built:
        model(keras.KerasTensor((None, *feature_shape), dtype=dtype or model.input_dtype))
