"""Meta-training a learned optimizer with Keras's `fit`."""

import contextlib

import keras
import tensorflow as tf

from tf_meta import adaptation
from tf_meta.multi_worker_fit import MultiWorkerFit
from tf_meta.optimizers.learned_rule import LearnedRule, checked_rule
from tf_meta.rules.update_rule import check_positive_integer

ESTIMATORS = ("truncated_backprop", "pes", "reinforce")
_TINY = 1e-12


@keras.saving.register_keras_serializable(package="tf_meta")
class OptimizerMetaLearner(MultiWorkerFit):
    """Meta-trains a `LearnedRule` on many inner training runs, as a Keras model.

    The model's only trainable weights are the rule's. Each meta-batch (from
    `TaskFamily.stream`) holds `meta_batch_size` inner problems; for each, `train_step`
    continues the problem's run from where the previous truncation stopped (its fast weights,
    the rule's state and its step live in this model's non-trainable variables) or from a
    fresh initialization when the batch says `reset`, takes `truncation_length` steps of the
    rule on its minibatches inside the graph (`tf_meta.adaptation.unroll`), and scores the
    truncation by the mean over its steps of the log training loss on the next minibatch
    (the log puts tasks whose losses differ by orders of magnitude on one scale), plus
    `loss_floor` inside the log. The
    compiled Keras optimizer then updates the rule with one of two estimators of the
    meta-gradient:

    - `"truncated_backprop"`: backpropagation through the truncation (second order unless
      `first_order`), biased toward short horizons but low in variance.
    - `"pes"`: Persistent Evolution Strategies (Vicol et al. 2021): two antithetic runs per
      problem with rule weights `theta +- epsilon`, `epsilon ~ N(0, perturbation_std^2)`
      drawn per truncation, and the estimate `xi (L+ - L-) / (2 perturbation_std^2)` where
      `xi` sums the problem's perturbations since its run started. It is unbiased for the
      whole run's (smoothed) loss, however many truncations the run spans.
    - `"reinforce"`: reinforcement learning, for a stochastic rule such as `ControllerRule`
      (training as a Markov decision process: the state is the rule's features, the action
      its outputs, the reward the truncation's decrease of the log loss). Each run starts
      with `rule.seeded_init(..., exploration=perturbation_std)`, so its actions are drawn
      around the rule's outputs, and the estimate is REINFORCE's: the gradient of the
      log-probability of the truncation's actions times the reward minus the mean reward of
      the replica's problems (the baseline).

    An inner run that diverges (its loss or weights stop being finite, the classic
    pathology of an early learned rule) adds nothing to the meta-gradient, is counted in the
    `diverged_runs` metric and restarts from the batch's fresh initialization at its next
    truncation. A non-finite inner loss at the start of a truncation (NaN or infinity in the
    data) or a non-finite meta-gradient fails the step with an `InvalidArgumentError` naming
    the meta-step, and changes neither the rule nor the stored runs. Under a distribution
    strategy the problems are spread over the replicas and the stored runs stay identical
    on all of them.

    Args:
        rule: The `LearnedRule` to meta-train; its `training_steps` should be the run
            length of the stream.
        model: The family's network, built: its structure and its forward pass (any Keras
            model; its own weights are not trained).
        loss: The inner loss, a Keras loss identifier.
        meta_batch_size: Inner problems per meta-batch (global, over all replicas).
        truncation_length: Inner steps per meta-step.
        estimator: One of `ESTIMATORS`.
        perturbation_std: The standard deviation of PES's perturbations, or of the
            actions' exploration under `"reinforce"`.
        first_order: Stop the inner gradients in truncated backpropagation.
        loss_floor: Added to the inner loss inside the meta-objective's log, so that the
            objective is `mean log(loss + loss_floor)`. Zero keeps the plain log loss,
            which rewards pushing a memorized task from 1e-4 to 1e-8 as much as a
            hundredfold gain on a hard one, and can then trade stability for it; a floor
            near the loss that counts as solved (for example 1e-5 on tasks that a tuned Adam
            drives to 3e-5) removes that reward.
        seed: Seed of PES's perturbations.
        **kwargs: Passed to `keras.Model`.

    Raises:
        ValueError: Naming the argument, if `rule` is not a `LearnedRule`, `model` has no
            trainable weights, a count is not a positive integer, `estimator` is unknown or
            `perturbation_std` is not positive or `loss_floor` is negative.

    Example:
        ```python
        family = tf_meta.optimizers.sinusoid_family()
        rule = tf_meta.optimizers.MLPRule(learning_rate=1e-3, training_steps=200)
        network = family.build_model()
        learner = tf_meta.optimizers.OptimizerMetaLearner(rule, network, family.loss)
        learner.compile(optimizer=keras.optimizers.Adam(1e-3))
        learner.fit(family.stream(network, 8, 20, 200), steps_per_epoch=100)
        model.compile(optimizer=tf_meta.optimizers.LearnedOptimizer(learner.rule), loss="mse")
        ```

    References:
        Metz, Maheswaranathan, Nixon, Freeman and Sohl-Dickstein. Understanding and
        correcting pathologies in the training of learned optimizers. ICML 2019.
        Vicol, Metz and Sohl-Dickstein. Unbiased Gradient Estimation in Unrolled
        Computation Graphs with Persistent Evolution Strategies. ICML 2021.
    """

    def __init__(
        self,
        rule: LearnedRule,
        model: keras.Model,
        loss="mse",
        meta_batch_size: int = 8,
        truncation_length: int = 20,
        estimator: str = "truncated_backprop",
        perturbation_std: float = 0.01,
        first_order: bool = False,
        loss_floor: float = 0.0,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        rule = checked_rule("rule", rule)
        if not model.trainable_weights:
            raise ValueError(
                f"`model` ({model.name}) has no trainable weights: there is nothing to optimize."
            )
        for name, value in (
            ("meta_batch_size", meta_batch_size),
            ("truncation_length", truncation_length),
        ):
            check_positive_integer(name, value)
        if estimator not in ESTIMATORS:
            raise ValueError(f"`estimator` must be one of {ESTIMATORS}; received {estimator!r}.")
        if estimator == "reinforce" and not hasattr(rule, "seeded_init"):
            raise ValueError(
                "`estimator='reinforce'` needs a stochastic rule with `seeded_init` and "
                f"`log_probability` (ControllerRule); received {type(rule).__name__}."
            )
        if not 0 < perturbation_std < float("inf"):
            raise ValueError(
                f"`perturbation_std` must be a positive number; received {perturbation_std!r}."
            )
        if not 0 <= loss_floor < float("inf"):
            raise ValueError(
                f"`loss_floor` must be a non-negative number; received {loss_floor!r}."
            )
        self.rule = rule
        self.model = model
        self.inner_loss = loss
        self._loss_function = adaptation.per_example_loss(loss)
        self.meta_batch_size = meta_batch_size
        self.truncation_length = truncation_length
        self.estimator = estimator
        self.perturbation_std = float(perturbation_std)
        self.first_order = first_order
        self.loss_floor = float(loss_floor)
        self.seed = seed
        self._runs = [self._run_variables(f"run{p}") for p in range(self._particles)]
        self._perturbation_sums = (
            [
                self._slot_variable(weight.shape, weight.dtype, f"perturbation_sum{index}")
                for index, weight in enumerate(rule.trainable_weights)
            ]
            if estimator == "pes"
            else []
        )
        self._loss_tracker = keras.metrics.Mean(name="loss")
        self._final_loss_tracker = keras.metrics.Mean(name="final_inner_loss")
        self._diverged_tracker = keras.metrics.Mean(name="diverged_runs")
        self.built = True

    @property
    def trainable_weights(self):
        """The rule's weights, the only ones meta-training changes.

        The network is a template (its structure and forward pass): its own variables are
        never trained, and leaving them out keeps the optimizer's variables the same when
        Keras rebuilds it from a `.keras` file.
        """
        return self.rule.trainable_weights if self.trainable else []

    @property
    def trainable_variables(self):
        """The same as `trainable_weights`."""
        return self.trainable_weights

    @property
    def _loss_dtype(self) -> tf.DType:
        """The dtype of the meta-loss: float64 for a float64 network, float32 otherwise."""
        wide = any(weight.dtype == "float64" for weight in self.model.trainable_weights)
        return tf.float64 if wide else tf.float32

    @property
    def _particles(self) -> int:
        return 2 if self.estimator == "pes" else 1

    def _slot_variable(self, shape, dtype, name):
        """A non-trainable variable with one row per inner problem, equal on all replicas."""
        return self.add_weight(
            shape=(self.meta_batch_size, *shape),
            dtype=dtype,
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
            name=name,
        )

    def _run_variables(self, prefix):
        """The stored fast weights, rule state and step of every inner problem's run."""
        weights = [
            self._slot_variable(variable.shape, variable.dtype, f"{prefix}_weight{index}")
            for index, variable in enumerate(self.model.trainable_weights)
        ]
        example = self.rule.init([tf.zeros(v.shape, v.dtype) for v in self.model.trainable_weights])
        states = [
            self._slot_variable(leaf.shape, leaf.dtype, f"{prefix}_state{index}")
            for index, leaf in enumerate(tf.nest.flatten(example))
        ]
        steps = self._slot_variable((), "int32", f"{prefix}_step")
        return weights, states, steps, example

    @property
    def metrics(self):
        """The meta-loss, the inner loss after each truncation, the diverged runs."""
        return [self._loss_tracker, self._final_loss_tracker, self._diverged_tracker]

    def train_step(self, data):
        """One meta-step on a meta-batch of truncations (see the class docstring)."""
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        batch = self._checked_batch(x)
        problems = batch["inputs"].shape[0]
        # One problem at a time in a tf.map_fn: the graph holds one problem, whatever
        # meta_batch_size is, and each problem brings its own share of the meta-gradient.
        results = self._map_problems(batch)
        ok = results["ok"]
        finished = tf.maximum(tf.reduce_sum(tf.cast(ok, tf.float32)), 1.0)
        if self.estimator == "reinforce":
            rewards = tf.where(ok, results["reward"], tf.zeros_like(results["reward"]))
            advantages = rewards - tf.reduce_sum(rewards) / tf.cast(finished, rewards.dtype)
            advantages = tf.where(ok, advantages, tf.zeros_like(advantages))
            gradients = [
                -tf.tensordot(tf.cast(advantages, g.dtype), g, axes=1) / self.meta_batch_size
                for g in results["gradients"]
            ]
        else:
            gradients = [tf.reduce_sum(g, axis=0) for g in results["gradients"]]

        def mean_of_finished(values):
            values = tf.cast(values, tf.float32)
            return tf.reduce_sum(tf.where(ok, values, tf.zeros_like(values))) / finished

        finite = tf.reduce_all(
            [tf.reduce_all(tf.math.is_finite(v)) for v in [results["first"], *gradients]]
        )
        check = tf.debugging.Assert(
            finite,
            [
                "Meta-step",
                self.optimizer.iterations,
                "of OptimizerMetaLearner: the inner loss at the start of a truncation is not "
                "finite (NaN or infinity in the data?), or the meta-gradient is not; the rule's "
                "weights and the stored runs are unchanged.",
            ],
        )
        if not self.optimizer.built:
            self.optimizer.build(self.rule.trainable_weights)
        with tf.control_dependencies([check]):
            gradients = [tf.identity(gradient) for gradient in gradients]
            self._store(batch["slot"], results)
        with tf.control_dependencies(gradients):
            self.optimizer.apply_gradients(zip(gradients, self.rule.trainable_weights, strict=True))
        self._loss_tracker.update_state(mean_of_finished(results["loss"]))
        self._final_loss_tracker.update_state(mean_of_finished(results["final"]))
        self._diverged_tracker.update_state(
            float(problems) - tf.reduce_sum(tf.cast(ok, tf.float32))
        )
        return {metric.name: metric.result() for metric in self.metrics}

    def _checked_batch(self, x):
        """The meta-batch's tensors, or a ValueError naming a missing key or a bad shape."""
        if not isinstance(x, dict):
            raise ValueError(
                "OptimizerMetaLearner trains on the dictionaries of TaskFamily.stream; "
                f"received {type(x).__name__}."
            )
        for key in ("inputs", "targets", "reset", "slot", "initial_weights"):
            if key not in x:
                raise ValueError(f"The meta-batch has no key {key!r} (see TaskFamily.stream).")
        inputs = x["inputs"]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if inputs.shape[0] is None or inputs.shape[0] * replicas != self.meta_batch_size:
            raise ValueError(
                f"`inputs` has shape {inputs.shape}: its first dimension must be the static "
                f"meta_batch_size={self.meta_batch_size} (divided by {replicas} replicas)."
            )
        if inputs.shape[1] != self.truncation_length + 1:
            raise ValueError(
                f"`inputs` has shape {inputs.shape}: its second dimension must be "
                f"truncation_length + 1 = {self.truncation_length + 1} minibatches."
            )
        initial = list(x["initial_weights"])
        expected = [tuple(v.shape) for v in self.model.trainable_weights]
        if [tuple(value.shape[1:]) for value in initial] != expected:
            raise ValueError(
                f"`initial_weights` has shapes {[tuple(v.shape[1:]) for v in initial]}; the "
                f"model's trainable weights have shapes {expected}."
            )
        self._check_gradient(x["inputs"][0, 0], x["targets"][0, 0])
        # A run that diverged in its last truncation (stored step -1) restarts.
        restart = x["reset"] | (tf.gather(self._runs[0][2].value, x["slot"]) < 0)
        return {**x, "initial_weights": initial, "restart": restart}

    def _check_gradient(self, inputs, targets) -> None:
        """A ValueError if the inner loss does not depend on any trainable weight.

        Checked once, when the step is traced, on the first problem's first minibatch.
        """
        values = [variable.value for variable in self.model.trainable_weights]
        with tf.GradientTape() as tape:
            tape.watch(values)
            loss = adaptation.mean_loss(
                self._loss_function,
                targets,
                adaptation.predictions(
                    self.model, values, [v.value for v in self.model.non_trainable_weights], inputs
                ),
            )
        if all(gradient is None for gradient in tape.gradient(loss, values)):
            raise ValueError(
                f"The inner loss does not depend on any trainable weight of {self.model.name}: "
                "the task family yields no gradient to optimize."
            )

    def _map_problems(self, batch):
        """`_problem` for every problem of the batch, stacked along a first axis."""
        elements = {
            key: batch[key] for key in ("inputs", "targets", "restart", "slot", "initial_weights")
        }
        return tf.map_fn(self._problem, elements, fn_output_signature=self._signature())

    def _signature(self):
        """The structure and dtypes `_problem` returns (for `tf.map_fn`)."""
        dtype = self._loss_dtype

        def spec(value):
            return tf.TensorSpec(value.shape, value.dtype)

        runs = [
            (
                [spec(v) for v in self.model.trainable_weights],
                [tf.TensorSpec(v.shape[1:], v.dtype) for v in states],
            )
            for _, states, _, _ in self._runs
        ]
        signature = {
            "loss": tf.TensorSpec((), dtype),
            "final": tf.TensorSpec((), dtype),
            "first": tf.TensorSpec((self._particles,), dtype),
            "ok": tf.TensorSpec((), tf.bool),
            "reward": tf.TensorSpec((), dtype),
            "gradients": [spec(w) for w in self.rule.trainable_weights],
            "weights": [weights for weights, _ in runs],
            "states": [states for _, states in runs],
            "steps": tf.TensorSpec((self._particles,), tf.int32),
        }
        if self.estimator == "pes":
            signature["sums"] = [spec(w) for w in self.rule.trainable_weights]
        return signature

    def _problem(self, element):
        """One problem's truncation (twice under PES) and its share of the meta-gradient.

        Returns:
            A dictionary (see `_signature`): the meta-loss (the mean of both particles'
            under PES), the last inner loss, the log loss before the first step of each
            particle, whether the run stayed finite (`ok`), the reward (decrease of the log
            loss, for REINFORCE), the gradient share (zero for a diverged run; under
            REINFORCE, the gradient of the actions' log-probability), and the new stored
            weights, states, steps and, under PES, accumulated perturbations.
        """
        weights = self.rule.trainable_weights
        if self.estimator == "pes":
            seed = tf.stack(
                [tf.cast(self.optimizer.iterations, tf.int32) + self.seed * 7919, element["slot"]]
            )
            offsets = [
                self.perturbation_std
                * tf.random.stateless_normal(
                    w.shape, tf.random.experimental.stateless_fold_in(seed, i), dtype=w.dtype
                )
                for i, w in enumerate(weights)
            ]
            perturbations = [offsets, [-offset for offset in offsets]]
        else:
            perturbations = [None]
        if self.estimator == "pes":  # no gradient: the two losses are the estimate
            runs = [
                self._particle_truncation(element, particle, offsets)
                for particle, offsets in enumerate(perturbations)
            ]
            gradients = None
        else:
            with tf.GradientTape() as tape:
                runs = [self._particle_truncation(element, 0, None)]
                target = runs[0]["gain" if self.estimator == "reinforce" else "loss"]
            gradients = self._gradients(tape, target)
        ok = tf.reduce_all(
            [
                tf.reduce_all(tf.math.is_finite(value))
                for run in runs
                for value in [run["loss"], run["final"], *run["weights"]]
            ]
            + [tf.reduce_all(tf.math.is_finite(g)) for g in gradients or []]
        )
        dtype = self._loss_dtype
        result = {
            "loss": tf.add_n([run["loss"] for run in runs]) / len(runs),
            "final": tf.cast(runs[0]["final"], dtype),
            "first": tf.stack([run["first"] for run in runs]),
            "ok": ok,
            "reward": runs[0]["first"] - runs[0]["loss"],
            "weights": [run["weights"] for run in runs],
            "states": [run["states"] for run in runs],
            "steps": tf.where(ok, tf.stack([run["step"] for run in runs]), -1),
        }
        if self.estimator == "pes":
            sums = [
                tf.where(element["restart"], offset, variable.value[element["slot"]] + offset)
                for variable, offset in zip(self._perturbation_sums, perturbations[0], strict=True)
            ]
            difference = runs[0]["loss"] - runs[1]["loss"]
            scale = difference / (2.0 * self.perturbation_std**2 * self.meta_batch_size)
            scale = tf.where(ok, scale, tf.zeros_like(scale))
            result["sums"] = sums
            gradients = [tf.cast(scale, total.dtype) * total for total in sums]
        elif self.estimator == "truncated_backprop":
            gradients = [g / self.meta_batch_size for g in gradients]
        result["gradients"] = [tf.where(ok, g, tf.zeros_like(g)) for g in gradients]
        return result

    def _particle_truncation(self, element, particle, offsets):
        """One run's truncation, from its stored state or, at a restart, a fresh one."""
        weights, states, steps, example = self._runs[particle]
        restart, slot = element["restart"], element["slot"]
        stored = [variable.value[slot] for variable in weights]
        start = [
            tf.where(restart, a, b) for a, b in zip(element["initial_weights"], stored, strict=True)
        ]
        if self.estimator == "reinforce":
            seed = tf.stack([slot + 7919 * self.seed, tf.cast(self.optimizer.iterations, tf.int32)])
            fresh = self.rule.seeded_init(start, seed, self.perturbation_std)
        else:
            fresh = self.rule.init(start)
        saved = [variable.value[slot] for variable in states]
        state = tf.nest.pack_sequence_as(
            example,
            [tf.where(restart, a, b) for a, b in zip(tf.nest.flatten(fresh), saved, strict=True)],
        )
        step = tf.where(restart, 0, steps.value[slot])
        mapping = None
        if offsets is not None:
            mapping = [
                (variable, variable.value + offset)
                for variable, offset in zip(self.rule.trainable_weights, offsets, strict=True)
            ]
        loss, final, end, end_state, first = self._truncation(
            element["inputs"], element["targets"], start, state, step, mapping
        )
        run = {
            "loss": loss,
            "final": final,
            "first": first,
            "weights": end,
            "states": tf.nest.flatten(end_state),
            "step": step + self.truncation_length,
        }
        if self.estimator == "reinforce":
            run["gain"] = self.rule.log_probability(end_state) - self.rule.log_probability(state)
        return run

    def _truncation(self, inputs, targets, weights, state, step, mapping):
        """One problem's truncation: `(meta_loss, final_loss, weights, state, first)`.

        `first` is the log loss before the first step.

        The steps run in a `tf.while_loop` (one step of `tf_meta.adaptation.unroll` per
        iteration), so the graph holds one step whatever `truncation_length` is.
        """
        non_trainable = [v.value for v in self.model.non_trainable_weights]

        def body(index, weights, state, total, first):
            losses = []

            def gradients_function(values, current):
                loss, gradients = adaptation.loss_and_gradients(
                    self.model,
                    self._loss_function,
                    values,
                    non_trainable,
                    tf.gather(inputs, index),
                    tf.gather(targets, index),
                )
                losses.append(loss)
                return gradients

            path, state = adaptation.unroll(
                self.rule,
                weights,
                state,
                gradients_function,
                1,
                first_order=self.first_order or self.estimator == "reinforce",
                first_step=step + index,
            )
            # The loss before the first step does not depend on the rule: not scored.
            logarithm = self._log_loss(losses[0])
            scored = tf.where(index > 0, logarithm, tf.zeros_like(logarithm))
            first = tf.where(index > 0, first, logarithm)
            return index + 1, path[-1], state, total + scored, first

        scope = keras.StatelessScope(state_mapping=mapping) if mapping else contextlib.nullcontext()
        with scope:
            zero = tf.zeros((), self._loss_dtype)
            _, weights, state, total, first = tf.while_loop(
                lambda index, *_: index < self.truncation_length,
                body,
                (tf.constant(0), list(weights), state, zero, zero),
            )
        final = adaptation.mean_loss(
            self._loss_function,
            targets[-1],
            adaptation.predictions(self.model, weights, non_trainable, inputs[-1]),
        )
        meta_loss = (total + self._log_loss(final)) / self.truncation_length
        return meta_loss, final, weights, state, first

    def _log_loss(self, loss):
        """The meta-objective's term for one inner loss: `log(loss + loss_floor)`."""
        return tf.cast(tf.math.log(loss + (self.loss_floor + _TINY)), self._loss_dtype)

    def _gradients(self, tape, target):
        """The gradient of `target` for every rule weight (zeros where it does not reach)."""
        gradients = tape.gradient(target, self.rule.trainable_weights)
        return [
            tf.zeros_like(weight) if gradient is None else gradient
            for gradient, weight in zip(gradients, self.rule.trainable_weights, strict=True)
        ]

    def _store(self, slots, results) -> None:
        """Writes the problems' new rows into the stored runs, on every replica alike.

        A diverged run was given step -1, so that it restarts.
        """
        assignments = []
        for particle, (weights, states, steps, _) in enumerate(self._runs):
            assignments += list(zip(weights, results["weights"][particle], strict=True))
            assignments += list(zip(states, results["states"][particle], strict=True))
            assignments.append((steps, results["steps"][:, particle]))
        if self.estimator == "pes":
            assignments += list(zip(self._perturbation_sums, results["sums"], strict=True))
        context = tf.distribute.get_replica_context()
        gathered = tf.distribute.get_strategy().num_replicas_in_sync > 1
        if gathered:
            slots = context.all_gather(slots, axis=0)
        for variable, values in assignments:
            if gathered:
                values = context.all_gather(values, axis=0)
            variable.assign(tf.tensor_scatter_nd_update(variable.value, slots[:, None], values))

    def get_config(self):
        """The learner's configuration, with the rule and the network serialized inside."""
        config = super().get_config()
        config.update(
            rule=keras.saving.serialize_keras_object(self.rule),
            model=keras.saving.serialize_keras_object(self.model),
            loss=self.inner_loss
            if isinstance(self.inner_loss, str)
            else keras.saving.serialize_keras_object(self.inner_loss),
            meta_batch_size=self.meta_batch_size,
            truncation_length=self.truncation_length,
            estimator=self.estimator,
            perturbation_std=self.perturbation_std,
            first_order=self.first_order,
            loss_floor=self.loss_floor,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Rebuilds the learner from `get_config`'s output."""
        config = dict(config)
        for key in ("rule", "model"):
            config[key] = keras.saving.deserialize_keras_object(
                config[key], custom_objects=custom_objects
            )
        if isinstance(config.get("loss"), dict):
            config["loss"] = keras.saving.deserialize_keras_object(
                config["loss"], custom_objects=custom_objects
            )
        return cls(**config)
