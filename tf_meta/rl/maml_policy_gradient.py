"""MAML for reinforcement learning: a Gaussian policy adapted by policy gradient."""

import keras
import tensorflow as tf

from tf_meta import adaptation, rules
from tf_meta.rl import rollouts, trust_region
from tf_meta.rl.environment import TaskEnvironment
from tf_meta.rules.update_rule import check_positive, check_positive_integer

OUTER_STEPS = ("optimizer", "trpo", "ppo")


@keras.saving.register_keras_serializable(package="tf_meta")
class MAMLPolicyGradient(keras.Model):
    """MAML with policy-gradient inner and outer losses (Finn et al. 2017, section 3.2).

    `fit` takes a stream of task batches `[tasks, task_size]` (`environment.task_stream`).
    For each task, in the graph:

    1. `episodes` rollouts of the current Gaussian policy (the `policy` network's mean and a
       learned log standard deviation, one per action coordinate) give the support batch;
    2. the inner loop (`tf_meta.adaptation.inner_loop`, gradient descent by default) takes
       `inner_steps` REINFORCE steps on fast weights: the loss is minus the mean of
       `log pi(a | s) * A`, with advantages `A` from GAE over the linear feature baseline
       fitted to the batch (Duan et al. 2016), standardized as rllab does;
    3. `episodes` rollouts of the adapted policy give the query batch, and its REINFORCE
       loss, differentiated through adaptation (second order unless `first_order`), is the
       task's outer loss.

    With `inner_steps=0` this is a policy gradient over the tasks, without adaptation:
    the pretrained baseline of MAML's experiments.

    The outer step is the compiled optimizer's (`outer_step="optimizer"`, e.g. Adam) on the
    mean of the tasks' meta-gradients, or MAML's own, `outer_step="trpo"`: the trust-region
    step of Schulman et al. (2015) on the adapted policies. It maximizes the query rollouts'
    importance-weighted advantage under a bound `max_kl` on the mean KL divergence between
    the adapted policies before and after the step, both functions of the initial weights
    through adaptation on the same support rollouts: the natural gradient from 10
    conjugate-gradient iterations with Fisher-vector products (Hessian-vector products of
    the KL, differentiated through adaptation), then a backtracking line search that keeps
    the KL bound and an improvement. The TRPO step runs on one replica. Or
    `outer_step="ppo"`: the clipped surrogate of Schulman et al. (2017) on the same
    importance ratios, `min(r A, clip(r, 1 - clip_ratio, 1 + clip_ratio) A)`, maximized by
    `outer_epochs` updates of the compiled optimizer on one batch of rollouts (each update
    adapts again, on the stored support rollouts, from the current weights; the optimizer's
    iterations count the updates). Its first update is exactly the `"optimizer"` step's.
    As in MAML's paper, the meta-gradient ignores that the support rollouts' distribution
    depends on the initial weights.

    Rollouts are reproducible: in training step `n` (the optimizer's iterations), task `i`
    of the batch draws its support rollouts from the stateless seed
    `(seed, (n * 4096 + i) * 16)` (inner step `k` adds `k` to the second entry) and its
    query rollouts from `(seed, (n * 4096 + i) * 16 + 8)`.

    Logged metrics: `loss`, and the mean undiscounted episode return of the tasks before
    (`return_before`) and after (`return_after`) adaptation.

    Args:
        policy: A Keras network mapping observations `[batch, observation_size]` to action
            means `[batch, action_size]`.
        environment: The task family (`tf_meta.rl.TaskEnvironment`).
        inner_learning_rate: The inner step size.
        inner_steps: Inner policy-gradient steps.
        episodes: Rollouts per task, for the support batch and again for the query batch.
        first_order: Whether to stop the inner gradients (first-order MAML).
        discount: The discount factor.
        gae_lambda: GAE's lambda (1 gives discounted returns minus the baseline).
        initial_log_std: The initial log standard deviation of the actions.
        seed: The seed of the rollouts' noise; step `i`'s noise is a function of it and `i`.
        outer_step: `"optimizer"` (the compiled optimizer), `"trpo"` or `"ppo"`.
        max_kl: The trust region of the TRPO step.
        clip_ratio: PPO's clipping range of the importance ratio.
        outer_epochs: PPO's optimizer updates on each batch of rollouts.
        **kwargs: Passed to `keras.Model`.

    Raises:
        ValueError: If `policy` is not a Keras model, `environment` is not a
            `TaskEnvironment`, or a number is out of range (each named).

    References:
        Finn, Abbeel and Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep
        Networks. ICML 2017. https://arxiv.org/abs/1703.03400
        Williams. Simple statistical gradient-following algorithms for connectionist
        reinforcement learning. Machine Learning 8, 1992.
        Schulman, Moritz, Levine, Jordan and Abbeel. High-Dimensional Continuous Control
        Using Generalized Advantage Estimation. ICLR 2016. https://arxiv.org/abs/1506.02438
        Schulman, Levine, Moritz, Jordan and Abbeel. Trust Region Policy Optimization.
        ICML 2015. https://arxiv.org/abs/1502.05477
        Schulman, Wolski, Dhariwal, Radford and Klimov. Proximal Policy Optimization
        Algorithms. 2017. https://arxiv.org/abs/1707.06347
    """

    def __init__(
        self,
        policy: keras.Model,
        environment: TaskEnvironment,
        inner_learning_rate: float = 0.1,
        inner_steps: int = 1,
        episodes: int = 20,
        first_order: bool = False,
        discount: float = 0.99,
        gae_lambda: float = 1.0,
        initial_log_std: float = 0.0,
        seed: int = 0,
        outer_step: str = "optimizer",
        max_kl: float = 0.01,
        clip_ratio: float = 0.2,
        outer_epochs: int = 5,
        **kwargs,
    ):
        if not isinstance(policy, keras.Model):
            raise ValueError(f"`policy` must be a keras.Model; received {policy!r}.")
        if not isinstance(environment, TaskEnvironment):
            raise ValueError(
                f"`environment` must be a tf_meta.rl.TaskEnvironment; received {environment!r}."
            )
        super().__init__(**kwargs)
        self.policy = policy
        self.environment = environment
        self.inner_learning_rate = check_positive("inner_learning_rate", inner_learning_rate)
        self.inner_steps = check_positive_integer("inner_steps", inner_steps, minimum=0)
        self.episodes = check_positive_integer("episodes", episodes)
        self.first_order = bool(first_order)
        self.discount = check_positive("discount", discount)
        if self.discount > 1:
            raise ValueError(f"`discount` must be in (0, 1]; received {discount!r}.")
        self.gae_lambda = float(gae_lambda)
        if not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"`gae_lambda` must be in [0, 1]; received {gae_lambda!r}.")
        self.initial_log_std = float(initial_log_std)
        self.seed = int(seed)
        if outer_step not in OUTER_STEPS:
            raise ValueError(f"`outer_step` must be one of {OUTER_STEPS}; received {outer_step!r}.")
        self.outer_step = outer_step
        self.max_kl = check_positive("max_kl", max_kl)
        self.clip_ratio = check_positive("clip_ratio", clip_ratio)
        self.outer_epochs = check_positive_integer("outer_epochs", outer_epochs)
        self.return_before = keras.metrics.Mean(name="return_before")
        self.return_after = keras.metrics.Mean(name="return_after")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self._returns_function = tf.function(self._returns, reduce_retracing=True)
        self.build()

    def build(self, input_shape=None):
        """Builds the policy for the environment's observations and the log-std."""
        del input_shape
        if not self.policy.built:
            self.policy(keras.KerasTensor((None, self.environment.observation_size)))
        if not self.policy.trainable_weights:
            raise ValueError(f"`policy` ({self.policy.name}) has no trainable weights.")
        self.log_std = self.add_weight(
            shape=(self.environment.action_size,),
            initializer=keras.initializers.Constant(self.initial_log_std),
            name="log_std",
        )
        self.built = True

    @property
    def metrics(self):
        """The loss and the returns before and after adaptation."""
        return [self.loss_tracker, self.return_before, self.return_after]

    # Pieces on fast weights: the policy's trainable values followed by the log-std.

    def initial_weights(self) -> list:
        """The current policy weights and log-std, as tensors."""
        return [tf.convert_to_tensor(v.value) for v in self.policy.trainable_variables] + [
            tf.convert_to_tensor(self.log_std.value)
        ]

    def mean_actions(self, weights, observations):
        """The policy's action means `[batch, action_size]` with fast `weights`."""
        non_trainable = [tf.convert_to_tensor(v.value) for v in self.policy.non_trainable_variables]
        return adaptation.predictions(self.policy, weights[:-1], non_trainable, observations)

    def sample(self, weights, task, seed):
        """`episodes` rollouts of the policy with fast `weights` on one task.

        Returns:
            `(observations, actions, rewards)` as `tf_meta.rl.rollouts.rollout` returns them.
        """
        weights = [tf.stop_gradient(weight) for weight in weights]

        def act(observations, noise):
            return self.mean_actions(weights, observations) + tf.exp(weights[-1]) * noise

        return rollouts.rollout(self.environment, act, task, self.episodes, seed)

    def advantages(self, observations, rewards) -> tf.Tensor:
        """Standardized GAE advantages `[episodes, steps]` over the batch's linear baseline."""
        returns = rollouts.discounted_returns(rewards, self.discount)
        values = rollouts.linear_baseline(observations, returns, self.environment.horizon)
        return rollouts.advantages(rewards, values, self.discount, self.gae_lambda)

    def surrogate_loss(self, weights, observations, actions, rewards) -> tf.Tensor:
        """REINFORCE's loss on a batch of rollouts: minus the mean of `log pi(a|s) * A`."""
        advantage = self.advantages(observations, rewards)
        flat = tf.reshape(observations, [-1, self.environment.observation_size])
        means = tf.reshape(self.mean_actions(weights, flat), tf.shape(actions))
        log_probability = rollouts.gaussian_log_probability(actions, means, weights[-1])
        return -tf.reduce_mean(log_probability * advantage)

    def adapt(self, weights, task, seed, steps: int, first_order: bool = True, batches=None):
        """Fast weights after `steps` policy-gradient steps on fresh rollouts of one task.

        Each step samples `episodes` rollouts with the current fast weights (from the
        stateless seed `seed + [0, step]`) and descends their REINFORCE loss.

        Args:
            weights: The initial fast weights.
            task: One task parameter.
            seed: The stateless seed (an int64 pair).
            steps: The number of steps.
            first_order: Whether to stop the inner gradients.
            batches: A list to which each step's rollouts are appended, or None.

        Returns:
            `(path, returns)`: the fast weights after each step, and the mean episode return
            of each step's rollouts.
        """
        returns = []

        def fresh_batch(current, step):
            batch = self.sample(current, task, seed + tf.constant([0, 1], seed.dtype) * step)
            if batches is not None:
                batches.append(batch)
            returns.append(rollouts.mean_return(batch[2]))
            return batch

        return self._inner_loop(weights, fresh_batch, steps, first_order), returns

    def _inner_loop(self, weights, batch_of_step, steps: int, first_order: bool):
        """`steps` REINFORCE steps of gradient descent on the batches `batch_of_step` gives.

        Args:
            weights: The initial fast weights.
            batch_of_step: `batch_of_step(current_weights, step)` returns the rollouts
                `(observations, actions, rewards)` of that step.
            steps: The number of steps.
            first_order: Whether to stop the inner gradients.

        Returns:
            The fast weights after each step (`tf_meta.adaptation.inner_loop`'s path).
        """

        def gradients(current, step):
            batch = batch_of_step(current, step)
            with tf.GradientTape() as tape:
                tape.watch(current)
                loss = self.surrogate_loss(current, *batch)
            return tape.gradient(loss, current, unconnected_gradients="zero")

        return adaptation.inner_loop(
            rules.GradientDescent(self.inner_learning_rate),
            weights,
            gradients,
            steps,
            first_order=first_order,
        )

    def adapt_to_rollouts(self, observations, actions, rewards, steps: int | None = None):
        """Fast weights after `steps` REINFORCE steps on given rollouts of one task.

        This is how a deployed policy adapts to a client's transitions (the serving
        export): unlike `adapt`, every step reuses the same rollouts, since no new ones
        can be sampled.

        Args:
            observations: `[episodes, steps, observation_size]`.
            actions: `[episodes, steps, action_size]`, the actions taken.
            rewards: `[episodes, steps]`.
            steps: Adaptation steps; None uses `inner_steps`.

        Returns:
            The fast weights (the policy's trainable values, then the log-std).

        Raises:
            ValueError: If the rollouts' shapes disagree with the environment's sizes.
        """
        steps = self.inner_steps if steps is None else steps
        check_positive_integer("steps", steps, minimum=0)
        observations = tf.convert_to_tensor(observations, tf.float32)
        actions = tf.convert_to_tensor(actions, tf.float32)
        rewards = tf.convert_to_tensor(rewards, tf.float32)
        for name, value, rank, size in (
            ("observations", observations, 3, self.environment.observation_size),
            ("actions", actions, 3, self.environment.action_size),
            ("rewards", rewards, 2, None),
        ):
            if value.shape.rank != rank or (size is not None and value.shape[-1] != size):
                wanted = "[episodes, steps" + (f", {size}]" if size else "]")
                raise ValueError(f"`{name}` must be {wanted}; received shape {value.shape}.")
        rewards = tf.debugging.check_numerics(rewards, "`rewards` contains NaN or Inf")
        weights = self.initial_weights()
        path = self._inner_loop(
            weights, lambda current, step: (observations, actions, rewards), steps, True
        )
        return path[-1] if path else weights

    def _task_seed(self, index, offset):
        """The stateless seed of task `index` of this step's batch."""
        step = tf.cast(self.optimizer.iterations if self.optimizer else 0, tf.int64)
        return tf.stack([tf.constant(self.seed, tf.int64), (step * 4096 + index) * 16 + offset])

    def _collect(self, tasks):
        """Rollouts for an outer step that reuses them (TRPO, PPO), without gradient.

        Each task adapts on fresh support rollouts, as in `train_step`, then samples its
        query rollouts with the adapted policy.

        Returns:
            `(elements, before, after, total)`. `elements` is the tuple `(support,
            observations, actions, advantage, old_means, old_log_std)`: every inner step's
            support rollouts (three tensors per step, `[tasks, ...]`), the query rollouts
            flattened over episodes and steps (`[tasks, episodes * horizon, ...]`), their
            advantages, and the adapted policy's action means and log-std on them.
            `before` and `after` are each task's mean return before and after adaptation;
            `total` is the task count over all replicas.
        """
        initial = self.initial_weights()
        count, first, total = self._replica_share(tasks)
        steps = self.inner_steps
        size = self.environment.action_size

        def collect(elements):
            task, index = elements
            batches = []
            path, returns = self.adapt(
                initial, task, self._task_seed(index, 0), steps, batches=batches
            )
            fast = path[-1] if path else initial
            observations, actions, rewards = self.sample(fast, task, self._task_seed(index, 8))
            advantage = self.advantages(observations, rewards)
            flat = tf.reshape(observations, [-1, self.environment.observation_size])
            means = self.mean_actions(fast, flat)
            after = rollouts.mean_return(rewards)
            return (
                [value for batch in batches for value in batch],
                flat,
                tf.reshape(actions, [-1, size]),
                tf.reshape(advantage, [-1]),
                means,
                tf.broadcast_to(fast[-1], tf.shape(means)),
                returns[0] if returns else after,
                after,
            )

        data = tf.map_fn(
            collect,
            (tasks, first + tf.range(count)),
            parallel_iterations=self._parallel_tasks(),
            fn_output_signature=(
                [tf.TensorSpec(None, tf.float32)] * (3 * steps),
                tf.TensorSpec([None, self.environment.observation_size], tf.float32),
                tf.TensorSpec([None, size], tf.float32),
                tf.TensorSpec([None], tf.float32),
                tf.TensorSpec([None, size], tf.float32),
                tf.TensorSpec([None, size], tf.float32),
                tf.float32,
                tf.float32,
            ),
        )
        data = [tf.stop_gradient(value) for value in tf.nest.flatten(data)]
        support, rest = data[: 3 * steps], data[3 * steps :]
        return (support, *rest[:-2]), rest[-2], rest[-1], total

    def _log_ratio(self, weights, element):
        """The adapted policy's log-probability ratio to the collected one, and its KL.

        Args:
            weights: Initial weights; the policy adapts from them on the stored support
                rollouts (so the ratio is a function of them through adaptation).
            element: One task's `(support, observations, actions, advantage, old_means,
                old_log_std)` from `_collect`.

        Returns:
            `(log_ratio [count], kl [count])`: `log pi'(a|s) - log pi_old(a|s)` and
            `KL(pi_old || pi')` per query step.
        """
        support, observations, actions, _, old_means, old_log_std = element
        path = self._inner_loop(
            weights,
            lambda current, step: support[3 * step : 3 * step + 3],
            self.inner_steps,
            self.first_order,
        )
        fast = path[-1] if path else weights
        means = self.mean_actions(fast, observations)
        log_std = tf.broadcast_to(fast[-1], tf.shape(means))
        log_ratio = rollouts.gaussian_log_probability(
            actions, means, log_std
        ) - rollouts.gaussian_log_probability(actions, old_means, old_log_std)
        return log_ratio, trust_region.gaussian_kl(old_means, old_log_std, means, log_std)

    def _update_metrics(self, loss, before, after):
        self.loss_tracker.update_state(loss)
        self.return_before.update_state(before)
        self.return_after.update_state(after)
        return {metric.name: metric.result() for metric in self.metrics}

    def _clipped_step(self, tasks):
        """The PPO outer step (see the class docstring): `outer_epochs` optimizer updates.

        The logged loss is the clipped surrogate's before the first update.
        """
        elements, before, after, total = self._collect(tasks)
        variables = self.policy.trainable_variables + [self.log_std]

        def update():
            """One optimizer update on the stored rollouts; returns the loss before it."""
            initial = self.initial_weights()

            def one_task(element):
                weights = [tf.identity(value) for value in initial]
                with tf.GradientTape() as tape:
                    tape.watch(weights)
                    log_ratio, _ = self._log_ratio(weights, element)
                    surrogate = rollouts.clipped_surrogate(
                        tf.exp(log_ratio), element[3], self.clip_ratio
                    )
                    loss = -tf.reduce_mean(surrogate)
                return loss, tape.gradient(loss, weights, unconnected_gradients="zero")

            losses, gradients = tf.map_fn(
                one_task,
                elements,
                fn_output_signature=(
                    tf.float32,
                    [tf.TensorSpec(value.shape, value.dtype) for value in initial],
                ),
            )
            self._apply_task_gradients(variables, gradients, total)
            return tf.reduce_mean(losses)

        loss = update()
        for _ in range(self.outer_epochs - 1):
            update()
        return self._update_metrics(loss, before, after)

    def _apply_task_gradients(self, variables, gradients, total):
        """Applies the sum of this replica's per-task gradients over the global task count.

        The optimizer sums the replicas, so the update is the mean over all tasks.
        """
        by_variable = {
            id(variable): tf.reduce_sum(gradient, axis=0) / tf.cast(total, gradient.dtype)
            for variable, gradient in zip(variables, gradients, strict=True)
        }
        # In `trainable_variables`' order, the order a loaded optimizer is built in.
        gradients = [by_variable[id(variable)] for variable in self.trainable_variables]
        with tf.control_dependencies(gradients):
            self.optimizer.apply_gradients(zip(gradients, self.trainable_variables, strict=True))

    def _trust_region_step(self, tasks):
        """MAML's TRPO outer step (see the class docstring) on one replica."""
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            raise ValueError("`outer_step='trpo'` runs on one replica; use 'optimizer'.")
        initial = self.initial_weights()
        elements, before, after, _ = self._collect(tasks)

        def terms(weights, element):
            """The task's surrogate (to minimize) and KL, as functions of the weights."""
            log_ratio, kl = self._log_ratio(weights, element)
            return -tf.reduce_mean(tf.exp(log_ratio) * element[3]), tf.reduce_mean(kl)

        def mean_over_tasks(function, output_signature):
            results = tf.map_fn(function, elements, fn_output_signature=output_signature)
            return tf.nest.map_structure(lambda value: tf.reduce_mean(value, axis=0), results)

        specs = [tf.TensorSpec(value.shape, value.dtype) for value in initial]

        def surrogate_gradient(element):
            weights = [tf.identity(value) for value in initial]
            with tf.GradientTape() as tape:
                tape.watch(weights)
                loss, _ = terms(weights, element)
            return loss, tape.gradient(loss, weights, unconnected_gradients="zero")

        loss, gradient = mean_over_tasks(surrogate_gradient, (tf.float32, specs))

        def fisher_product(vector):
            def one_task(element):
                weights = [tf.identity(value) for value in initial]
                with tf.GradientTape() as outer:
                    outer.watch(weights)
                    with tf.GradientTape() as inner:
                        inner.watch(weights)
                        _, kl = terms(weights, element)
                    kl_gradient = inner.gradient(kl, weights, unconnected_gradients="zero")
                    projection = trust_region.dot(kl_gradient, vector)
                return outer.gradient(projection, weights, unconnected_gradients="zero")

            products = mean_over_tasks(one_task, specs)
            return [p + 1e-5 * v for p, v in zip(products, vector, strict=True)]

        direction = trust_region.conjugate_gradient(fisher_product, [-g for g in gradient])
        curvature = 0.5 * trust_region.dot(direction, fisher_product(direction))
        full_step = [d * tf.sqrt(self.max_kl / tf.maximum(curvature, 1e-12)) for d in direction]

        def evaluate(fraction):
            candidate = [w + fraction * d for w, d in zip(initial, full_step, strict=True)]
            return mean_over_tasks(
                lambda element: terms(candidate, element), (tf.float32, tf.float32)
            )

        def search_condition(trial, accepted):
            return tf.logical_and(trial < 15, tf.logical_not(accepted))

        def search_body(trial, accepted):
            new_loss, new_kl = evaluate(0.8 ** tf.cast(trial, tf.float32))
            accepted = tf.logical_and(new_loss < loss, new_kl <= self.max_kl)
            return trial + tf.cast(tf.logical_not(accepted), tf.int32), accepted

        trial, accepted = tf.while_loop(
            search_condition, search_body, (tf.constant(0), tf.constant(False))
        )
        fraction = tf.where(accepted, 0.8 ** tf.cast(trial, tf.float32), 0.0)
        variables = self.policy.trainable_variables + [self.log_std]
        for variable, value, step in zip(variables, initial, full_step, strict=True):
            variable.assign(value + fraction * step)
        self.optimizer.iterations.assign_add(1)
        return self._update_metrics(loss, before, after)

    def _replica_share(self, tasks):
        """This replica's task count, the global index of its first task, the global count.

        On one device: the batch's count, 0 and the count. Under a distribution strategy
        the replicas' counts are gathered, so that every task keeps the index (and so the
        rollouts) it has on one device.
        """
        count = tf.cast(tf.shape(tasks)[0], tf.int64)
        if tf.distribute.get_strategy().num_replicas_in_sync == 1:
            return count, tf.constant(0, tf.int64), count
        context = tf.distribute.get_replica_context()
        counts = context.all_gather(count[None], axis=0)
        replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
        return count, tf.reduce_sum(counts[:replica]), tf.reduce_sum(counts)

    def _parallel_tasks(self) -> int | None:
        """One task at a time for an environment stepped outside the graph (one simulator)."""
        return None if self.environment.in_graph else 1

    def compile(self, *arguments, jit_compile="auto", **keywords):
        """Keras's `compile`; without XLA for an environment stepped outside the graph.

        The optimizer is built for the policy at once: the TRPO step never applies it,
        only counts its iterations (which number the rollouts' seeds), and built here its
        saved state is the one that `BackupAndRestore` builds before restoring, so a
        resumed run keeps the count.

        Raises:
            ValueError: If `jit_compile=True` and the environment is not in the graph.
        """
        if not self.environment.in_graph:
            if jit_compile is True:
                raise ValueError(
                    f"`jit_compile=True` cannot compile {type(self.environment).__name__}, "
                    "whose steps run in Python outside the graph."
                )
            jit_compile = False
        super().compile(*arguments, jit_compile=jit_compile, **keywords)
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def _checked_tasks(self, tasks) -> tf.Tensor:
        tasks = tf.convert_to_tensor(tasks, tf.float32)
        size = self.environment.task_size
        if tasks.shape.rank != 2 or tasks.shape[-1] != size:
            raise ValueError(f"`tasks` must be [tasks, {size}]; received shape {tasks.shape}.")
        return tf.debugging.check_numerics(tasks, "`tasks` contains NaN or Inf")

    def train_step(self, data):
        """One meta-step: each task's meta-gradient inside the task loop, their mean applied.

        Under a distribution strategy each replica differentiates its share of the tasks,
        and the step equals the single-device step on the same batch.
        """
        tasks = self._checked_tasks(data[0] if isinstance(data, tuple) else data)
        if self.outer_step == "trpo":
            return self._trust_region_step(tasks)
        if self.outer_step == "ppo":
            return self._clipped_step(tasks)
        initial = self.initial_weights()
        variables = self.policy.trainable_variables + [self.log_std]

        def one_task(elements):
            task, index = elements
            weights = [tf.identity(value) for value in initial]
            with tf.GradientTape() as tape:
                tape.watch(weights)
                path, returns = self.adapt(
                    weights, task, self._task_seed(index, 0), self.inner_steps, self.first_order
                )
                fast = path[-1] if path else weights
                query = self.sample(fast, task, self._task_seed(index, 8))
                loss = self.surrogate_loss(fast, *query)
            gradients = tape.gradient(loss, weights, unconnected_gradients="zero")
            after = rollouts.mean_return(query[2])
            return loss, returns[0] if returns else after, after, gradients

        count, first, total = self._replica_share(tasks)
        losses, before, after, gradients = tf.map_fn(
            one_task,
            (tasks, first + tf.range(count)),
            parallel_iterations=self._parallel_tasks(),
            fn_output_signature=(
                tf.float32,
                tf.float32,
                tf.float32,
                [tf.TensorSpec(value.shape, value.dtype) for value in initial],
            ),
        )
        self._apply_task_gradients(variables, gradients, total)
        return self._update_metrics(tf.reduce_mean(losses), before, after)

    def test_step(self, data):
        """The returns before and after `inner_steps` first-order adaptation steps."""
        tasks = self._checked_tasks(data[0] if isinstance(data, tuple) else data)
        returns = self.adaptation_returns(tasks, self.inner_steps, seed=self.seed + 1)
        self.return_before.update_state(returns[:, 0])
        self.return_after.update_state(returns[:, -1])
        return {metric.name: metric.result() for metric in self.metrics[1:]}

    def adaptation_returns(self, tasks, steps: int, seed: int = 0) -> tf.Tensor:
        """Mean episode returns of each task after 0, 1, ..., `steps` adaptation steps.

        Args:
            tasks: Task parameters `[tasks, task_size]`.
            steps: The most adaptation steps.
            seed: The seed of the rollouts.

        Returns:
            `[tasks, steps + 1]`: column `k` is the mean undiscounted return of `episodes`
            fresh rollouts after `k` steps.
        """
        tasks = self._checked_tasks(tasks)
        check_positive_integer("steps", steps, minimum=0)
        return self._returns_function(tasks, steps, tf.constant(seed, tf.int64))

    def _returns(self, tasks, steps, seed):
        """`adaptation_returns` as one graph (`_returns_function` compiles it)."""
        initial = self.initial_weights()

        def one_task(elements):
            task, index = elements
            task_seed = tf.stack([seed, index * 16])
            path, returns = self.adapt(initial, task, task_seed, steps)
            last = self.sample(path[-1] if path else initial, task, task_seed + [0, 8])
            return tf.stack([*returns, rollouts.mean_return(last[2])])

        return tf.map_fn(
            one_task,
            (tasks, tf.range(tf.cast(tf.shape(tasks)[0], tf.int64))),
            parallel_iterations=self._parallel_tasks(),
            fn_output_signature=tf.TensorSpec([steps + 1], tf.float32),
        )

    def call(self, tasks):
        """The mean return of each task after `inner_steps` adaptation steps `[tasks]`."""
        return self.adaptation_returns(tasks, self.inner_steps, seed=self.seed + 1)[:, -1]

    def get_config(self):
        """The learner's configuration, with the policy and the environment inside it."""
        return {
            **super().get_config(),
            "policy": keras.saving.serialize_keras_object(self.policy),
            "environment": keras.saving.serialize_keras_object(self.environment),
            "inner_learning_rate": self.inner_learning_rate,
            "inner_steps": self.inner_steps,
            "episodes": self.episodes,
            "first_order": self.first_order,
            "discount": self.discount,
            "gae_lambda": self.gae_lambda,
            "initial_log_std": self.initial_log_std,
            "seed": self.seed,
            "outer_step": self.outer_step,
            "max_kl": self.max_kl,
            "clip_ratio": self.clip_ratio,
            "outer_epochs": self.outer_epochs,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Rebuilds the learner from `get_config`'s output."""
        config = dict(config)
        for key in ("policy", "environment"):
            config[key] = keras.saving.deserialize_keras_object(
                config[key], custom_objects=custom_objects
            )
        return cls(**config)
