"""MuJoCo HalfCheetah with a target velocity or direction per task (MAML, section 5.3)."""

import keras
import tensorflow as tf

from tf_meta.rl.gymnasium_environment import GymnasiumEnvironment

TASKS = ("velocity", "direction")


@keras.saving.register_keras_serializable(package="tf_meta")
class HalfCheetah(GymnasiumEnvironment):
    """Gymnasium's `HalfCheetah-v5` as MAML's two locomotion task families.

    - `task="velocity"`: a target forward velocity drawn uniformly from [0, 2]; the reward
      is minus the distance of the forward velocity to it.
    - `task="direction"`: forward (+1) or backward (-1) with equal probability; the reward
      is the velocity in that direction.

    Both subtract `0.05 * |action|^2`, half the environment's own control cost, as rllab's
    task families did (Finn et al. 2017; Duan et al. 2016). It needs `gymnasium[mujoco]`
    (`pip install tf_meta[rl]`).

    Args:
        task: `"velocity"` or `"direction"`.
        episodes: Episodes run side by side (the learner's `episodes`).
        horizon: Steps per episode; MAML used 200.
        seed: The first reset seed.

    Raises:
        ValueError: If `task` is neither, or the counts are not positive integers.

    References:
        Finn, Abbeel and Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep
        Networks. ICML 2017. https://arxiv.org/abs/1703.03400
    """

    def __init__(self, task: str = "velocity", episodes: int = 20, horizon: int = 200, seed=0):
        if task not in TASKS:
            raise ValueError(f"`task` must be one of {TASKS}; received {task!r}.")
        self.task = task
        super().__init__("HalfCheetah-v5", episodes, horizon, seed)

    def sample_tasks(self, count, seed):
        """Target velocities in [0, 2], or directions in {-1, +1}, `[count, 1]`."""
        uniform = tf.random.stateless_uniform([count, 1], seed)
        if self.task == "velocity":
            return 2.0 * uniform
        return tf.where(uniform < 0.5, -1.0, 1.0)

    def reward(self, task, reward, information):
        """The task's reward from the forward velocity and the control cost."""
        del reward
        control = 0.5 * float(information["reward_ctrl"])
        velocity = float(information["x_velocity"])
        if self.task == "velocity":
            return -abs(velocity - float(task[0])) + control
        return float(task[0]) * velocity + control

    def get_config(self):
        """The constructor's arguments."""
        return {
            "task": self.task,
            "episodes": self.episodes,
            "horizon": self.horizon,
            "seed": self.seed,
        }
