"""2D point navigation, the meta-RL task family of MAML's section 5.3."""

import keras
import numpy as np
import tensorflow as tf

from tf_meta.rl.environment import TaskEnvironment
from tf_meta.rules.update_rule import check_positive, check_positive_integer


@keras.saving.register_keras_serializable(package="tf_meta")
class PointNavigation(TaskEnvironment):
    """A point in the plane moves to a goal that is the task (Finn et al. 2017, section 5.3).

    The state and the observation are the point's position, starting at the origin. An
    action is a velocity, clipped to `[-max_speed, max_speed]` per coordinate; the reward is
    minus the distance to the goal after the move. Goals are drawn uniformly from the square
    `[-goal_range, goal_range]^2` (the unit square centred on the start, as in MAML's
    experiments), and an episode lasts `horizon` steps.

    Args:
        horizon: Steps per episode.
        max_speed: The clipping bound of each action coordinate.
        goal_range: Half the side of the square goals are drawn from.

    Raises:
        ValueError: If `horizon` is not a positive integer, or a bound is not a positive
            number.

    References:
        Finn, Abbeel and Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep
        Networks. ICML 2017. https://arxiv.org/abs/1703.03400
    """

    observation_size = 2
    action_size = 2
    task_size = 2

    def __init__(self, horizon: int = 100, max_speed: float = 0.1, goal_range: float = 0.5):
        self.horizon = check_positive_integer("horizon", horizon)
        self.max_speed = check_positive("max_speed", max_speed)
        self.goal_range = check_positive("goal_range", goal_range)

    def sample_tasks(self, count, seed):
        """Goals `[count, 2]`, uniform in the square."""
        return tf.random.stateless_uniform(
            [count, 2], seed, minval=-self.goal_range, maxval=self.goal_range
        )

    def initial_state(self, tasks):
        """The origin."""
        return tf.zeros_like(tasks)

    def observe(self, states, tasks):
        """The position."""
        del tasks
        return states

    def transition(self, states, actions, tasks):
        """Moves by the clipped velocity; the reward is minus the distance to the goal."""
        states = states + tf.clip_by_value(actions, -self.max_speed, self.max_speed)
        return states, -tf.norm(states - tasks, axis=-1)

    def goal_blind_bound(self, goals, iterations: int = 200) -> float:
        """The best expected mean return on `goals` of any policy that does not see the goal.

        The observation is the position alone, so before adaptation a policy follows the same
        (random) path whatever the goal. Each step then earns at most minus the mean
        distance from the goals' geometric median, so no such policy, MAML's initialization
        or a policy pretrained on all goals, can average more than `horizon` times that. A
        path that reaches the median in its first move and stays there attains it when
        the median is within `max_speed` of the origin in each coordinate.

        Args:
            goals: Goals `[count, 2]`.
            iterations: Weiszfeld iterations for the geometric median.

        Returns:
            The bound, a float.

        Raises:
            ValueError: If `goals` is not a non-empty `[count, 2]` array of finite values.
        """
        goals = np.asarray(goals, np.float64)
        if goals.ndim != 2 or goals.shape[1] != 2 or not len(goals):
            raise ValueError(f"`goals` must be [count, 2] with count > 0, not {goals.shape}")
        if not np.all(np.isfinite(goals)):
            raise ValueError("`goals` must be finite")
        median = goals.mean(axis=0)
        for _ in range(iterations):  # Weiszfeld's fixed-point iteration
            weights = 1.0 / np.maximum(np.linalg.norm(goals - median, axis=1), 1e-12)
            median = weights @ goals / weights.sum()
        return -self.horizon * float(np.linalg.norm(goals - median, axis=1).mean())

    def get_config(self):
        """The constructor's arguments."""
        return {"horizon": self.horizon, "max_speed": self.max_speed, "goal_range": self.goal_range}
