"""A task family over a Gymnasium environment, stepped outside the graph."""

import numpy as np
import tensorflow as tf

from tf_meta.rl.environment import TaskEnvironment
from tf_meta.rules.update_rule import check_positive_integer


class GymnasiumEnvironment(TaskEnvironment):
    """The `TaskEnvironment` contract over external Gymnasium environments.

    The rollout and the learner stay in the graph; each environment step leaves it through
    `tf.numpy_function` to step a Gymnasium vector environment (`SyncVectorEnv`) of
    `episodes` copies, one per episode run side by side. So any Gymnasium environment with
    a task parameter (MuJoCo locomotion, Meta-World) trains with the same learner as the
    in-graph families, at the simulator's speed. Not under `jit_compile`: XLA cannot call
    Python.

    A subclass names the environment (or builds it, overriding `make_environment`) and
    implements the task: `sample_tasks` (graph code,
    as for any family), `set_task(environment, task)` to configure one copy for a task
    (a NumPy vector), and optionally `reward(task, reward, information)` to compute the
    task's reward from the environment's own reward and `info` dict. Actions are clipped
    to the action space's bounds before each step. The state carried
    in the graph is the observation and a flag that the episode has ended: after a
    termination, rewards are 0 and the observation stays the last one.

    Each reset seeds the copies with `seed` and a count of resets, so a fresh process that
    runs the same rollouts gets the same results. If the environment reports `success` in
    its `info` (Meta-World does), `successes` holds, per copy, whether the current episode
    has succeeded.

    Args:
        environment_id: The Gymnasium id (`"HalfCheetah-v5"`).
        episodes: The number of copies: the `episodes` of the learner that uses it.
        horizon: Steps per episode (at most the environment's own time limit).
        seed: The first reset seed.
        **make_arguments: Passed to `gymnasium.make`.

    Raises:
        ValueError: If `episodes` or `horizon` is not a positive integer, or `horizon`
            exceeds the environment's time limit.
    """

    task_size = 1
    in_graph = False

    def __init__(
        self, environment_id: str, episodes: int, horizon: int, seed: int = 0, **make_arguments
    ):
        import gymnasium  # an optional dependency: `pip install tf_meta[rl]`

        self.environment_id = environment_id
        self.episodes = check_positive_integer("episodes", episodes)
        self.horizon = check_positive_integer("horizon", horizon)
        self.seed = int(seed)
        self.make_arguments = dict(make_arguments)
        self.vector = gymnasium.vector.SyncVectorEnv(
            [self.make_environment for _ in range(self.episodes)]
        )
        limit = getattr(self.vector.envs[0].spec, "max_episode_steps", None)
        if limit is not None and self.horizon > limit:
            raise ValueError(
                f"`horizon` ({horizon}) exceeds {environment_id}'s time limit of {limit} steps."
            )
        self.observation_size = int(np.prod(self.vector.single_observation_space.shape))
        self.action_size = int(np.prod(self.vector.single_action_space.shape))
        self._resets = 0
        self._tasks = None
        self.successes = np.zeros(self.episodes, bool)

    def make_environment(self):
        """One copy of the environment; the default is `gymnasium.make` of the id."""
        import gymnasium

        return gymnasium.make(self.environment_id, **self.make_arguments)

    def set_task(self, environment, task: np.ndarray) -> None:
        """Configures one copy (the unwrapped Gymnasium environment) for `task`."""
        del environment, task

    def reward(self, task: np.ndarray, reward: float, information: dict) -> float:
        """The task's reward; the default is the environment's own `reward`."""
        del task, information
        return reward

    def _reset(self, tasks):
        count = len(tasks)
        if count != self.episodes:
            raise ValueError(
                f"{type(self).__name__} runs {self.episodes} episodes at a time; a rollout "
                f"asked for {count}. Build it with `episodes` equal to the learner's."
            )
        self._tasks = np.array(tasks)
        for environment, task in zip(self.vector.envs, self._tasks, strict=True):
            self.set_task(environment.unwrapped, task)
        seeds = [self.seed + self._resets * self.episodes + index for index in range(count)]
        self._resets += 1
        observations, _ = self.vector.reset(seed=seeds)
        self.successes = np.zeros(count, bool)
        return np.concatenate(
            [observations.reshape(count, -1), np.zeros([count, 1])], axis=1
        ).astype(np.float32)

    def _step(self, states, actions):
        ended = states[:, -1] > 0
        space = self.vector.single_action_space
        actions = np.clip(actions, space.low, space.high).reshape(len(states), *space.shape)
        observations, rewards, terminated, truncated, information = self.vector.step(actions)
        rewards = np.array(
            [
                self.reward(task, reward, {key: value[index] for key, value in information.items()})
                for index, (task, reward) in enumerate(zip(self._tasks, rewards, strict=True))
            ]
        )
        if "success" in information:
            self.successes |= ~ended & (np.asarray(information["success"]) > 0)
        observations = observations.reshape(len(states), -1)
        observations = np.where(ended[:, None], states[:, :-1], observations)
        rewards = np.where(ended, 0.0, rewards)
        ended = ended | terminated | truncated
        new_states = np.concatenate([observations, ended[:, None]], axis=1)
        return new_states.astype(np.float32), rewards.astype(np.float32)

    def initial_state(self, tasks):
        """Resets the copies for `tasks`: their observations and a cleared ended flag."""
        states = tf.numpy_function(self._reset, [tasks], tf.float32, stateful=True)
        return tf.ensure_shape(states, [self.episodes, self.observation_size + 1])

    def observe(self, states, tasks):
        """The observation part of the state."""
        del tasks
        return states[:, :-1]

    def transition(self, states, actions, tasks):
        """Steps the copies (after each one's episode ended: reward 0, observation kept)."""
        del tasks
        states, rewards = tf.numpy_function(
            self._step, [states, actions], (tf.float32, tf.float32), stateful=True
        )
        states = tf.ensure_shape(states, [self.episodes, self.observation_size + 1])
        return states, tf.ensure_shape(rewards, [self.episodes])

    def get_config(self):
        """The constructor's arguments."""
        return {
            "environment_id": self.environment_id,
            "episodes": self.episodes,
            "horizon": self.horizon,
            "seed": self.seed,
            **self.make_arguments,
        }
