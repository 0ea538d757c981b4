"""The contract of a task family of environments written as batched TensorFlow ops."""

import tensorflow as tf


class TaskEnvironment:
    """A family of environments, one per task parameter, stepped as batched TensorFlow ops.

    An environment is a set of pure functions on tensors, so that rollouts of a whole
    meta-batch of tasks run inside a compiled `train_step`, with no Python in the loop.
    Subclasses set four sizes and implement three methods; each method takes a batch, whose
    rows may belong to different tasks:

    - `sample_tasks(count, seed) -> [count, task_size]`: task parameters (a goal, a target),
      drawn from the stateless `seed` (a pair of integers).
    - `initial_state(tasks) -> [batch, state_size]`: the state at the start of an episode.
    - `observe(states, tasks) -> [batch, observation_size]`: what the policy sees.
    - `transition(states, actions, tasks) -> (states, rewards)`: one step of the dynamics and
      its reward `[batch]`.

    `step` wraps `transition` with the checks of the contract: an action of the wrong shape
    is a `ValueError` naming `action` when traced, and a NaN or infinite reward fails at run
    time with an `InvalidArgumentError` naming `reward`, before anything depends on it.

    Attributes:
        in_graph: Whether the steps are graph ops (else Python, as for Gymnasium).
        observation_size: The length of an observation.
        action_size: The length of an action.
        task_size: The length of a task parameter.
        horizon: The number of steps in an episode.
    """

    observation_size: int
    action_size: int
    task_size: int
    horizon: int
    in_graph = True

    def sample_tasks(self, count: int, seed) -> tf.Tensor:
        """Task parameters `[count, task_size]` from the stateless `seed`."""
        raise NotImplementedError

    def initial_state(self, tasks: tf.Tensor) -> tf.Tensor:
        """The states `[batch, state_size]` at the start of an episode of each task."""
        raise NotImplementedError

    def observe(self, states: tf.Tensor, tasks: tf.Tensor) -> tf.Tensor:
        """The observations `[batch, observation_size]` of `states`."""
        raise NotImplementedError

    def transition(self, states: tf.Tensor, actions: tf.Tensor, tasks: tf.Tensor):
        """The next states and the rewards `[batch]` of taking `actions` in `states`."""
        raise NotImplementedError

    def step(self, states: tf.Tensor, actions: tf.Tensor, tasks: tf.Tensor):
        """`transition` with the contract's checks.

        Args:
            states: `[batch, state_size]`.
            actions: `[batch, action_size]`.
            tasks: `[batch, task_size]`.

        Returns:
            `(states, rewards)`: the next states and the rewards `[batch]`.

        Raises:
            ValueError: If `actions` is not `[batch, action_size]`.
            tf.errors.InvalidArgumentError: At run time, if a reward is NaN or infinite.
        """
        actions = tf.convert_to_tensor(actions)
        if actions.shape.rank != 2 or actions.shape[-1] != self.action_size:
            raise ValueError(
                f"`action` must be [batch, {self.action_size}] for {type(self).__name__}; "
                f"received shape {actions.shape}."
            )
        states, rewards = self.transition(states, actions, tasks)
        rewards = tf.debugging.check_numerics(rewards, f"{type(self).__name__}: NaN or Inf reward")
        return states, rewards

    def task_stream(self, meta_batch_size: int, seed: int = 0) -> tf.data.Dataset:
        """An endless stream of task batches `[meta_batch_size, task_size]` for `fit`.

        Batch `i` is drawn from the stateless seed `(seed, i)`.
        """
        return tf.data.Dataset.counter().map(
            lambda index: self.sample_tasks(meta_batch_size, tf.stack([seed, index]))
        )

    def get_config(self) -> dict:
        """The constructor's arguments."""
        return {}

    @classmethod
    def from_config(cls, config: dict):
        """Rebuilds the environment from `get_config`'s output."""
        return cls(**config)
