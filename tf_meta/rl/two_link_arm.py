"""A planar two-link arm reaching a target that is the task: the simplest robot-arm family."""

import math

import keras
import tensorflow as tf

from tf_meta.rl.environment import TaskEnvironment
from tf_meta.rules.update_rule import check_positive, check_positive_integer


@keras.saving.register_keras_serializable(package="tf_meta")
class TwoLinkArm(TaskEnvironment):
    """A torque-controlled planar arm of two links whose fingertip must reach a target.

    The arm lies in a horizontal plane (no gravity). Each link has mass `mass` at its middle
    and the moment of inertia of a uniform rod, `mass * length**2 / 12`, and each joint has
    viscous damping `damping`. With joint angles `q` and velocities `dq`, the dynamics are
    the manipulator equation (Spong, Hutchinson and Vidyasagar 2006, section 7.3)
    `M(q) ddq + c(q, dq) + damping * dq = torque`, with

        M11 = I1 + I2 + m (lc**2 + l**2 + lc**2 + 2 l lc cos q2),
        M12 = I2 + m (lc**2 + l lc cos q2),   M22 = I2 + m lc**2,
        c1 = -m l lc sin q2 (2 dq1 dq2 + dq2**2),   c2 = m l lc sin q2 dq1**2,

    (`l` the link length, `lc = l / 2`), integrated by semi-implicit Euler with step `dt`.
    Torques are clipped to `[-max_torque, max_torque]`. The arm starts straight along the
    x axis at rest. The task is a target drawn uniformly over angles and radii of the annulus
    between 0.3 and 0.9 of the arm's reach. The reward is minus the fingertip's distance to
    the target minus `control_cost` times the squared torque. The observation (8 values) is
    `cos q`, `sin q`, `dq`, and the fingertip's offset from the target.

    Args:
        horizon: Steps per episode.
        length: The length of each link.
        mass: The mass of each link.
        damping: The joints' viscous damping.
        max_torque: The clipping bound of each torque.
        control_cost: The weight of the squared torque in the reward.
        dt: The integration step.

    Raises:
        ValueError: If `horizon` is not a positive integer, or another argument is not a
            positive number (`control_cost` may be 0).
    """

    observation_size = 8
    action_size = 2
    task_size = 2

    def __init__(
        self,
        horizon: int = 50,
        length: float = 0.5,
        mass: float = 1.0,
        damping: float = 0.1,
        max_torque: float = 1.0,
        control_cost: float = 0.01,
        dt: float = 0.05,
    ):
        self.horizon = check_positive_integer("horizon", horizon)
        self.length = check_positive("length", length)
        self.mass = check_positive("mass", mass)
        self.damping = check_positive("damping", damping)
        self.max_torque = check_positive("max_torque", max_torque)
        if isinstance(control_cost, bool) or not 0 <= control_cost < math.inf:
            raise ValueError(f"`control_cost` must be >= 0; received {control_cost!r}.")
        self.control_cost = float(control_cost)
        self.dt = check_positive("dt", dt)

    def sample_tasks(self, count, seed):
        """Targets `[count, 2]`, uniform over angles and radii of the annulus."""
        uniform = tf.random.stateless_uniform([count, 2], seed)
        radius = 2 * self.length * (0.3 + 0.6 * uniform[:, 0])
        angle = 2 * math.pi * uniform[:, 1]
        return tf.stack([radius * tf.cos(angle), radius * tf.sin(angle)], axis=-1)

    def initial_state(self, tasks):
        """Angles and velocities `[batch, 4]`, all zero: straight along x, at rest."""
        return tf.zeros([tf.shape(tasks)[0], 4])

    def fingertip(self, states):
        """The fingertip's position `[batch, 2]`."""
        q1, q2 = states[:, 0], states[:, 0] + states[:, 1]
        x = self.length * (tf.cos(q1) + tf.cos(q2))
        y = self.length * (tf.sin(q1) + tf.sin(q2))
        return tf.stack([x, y], axis=-1)

    def observe(self, states, tasks):
        """`cos q`, `sin q`, `dq` and the fingertip's offset from the target."""
        angles, velocities = states[:, :2], states[:, 2:]
        return tf.concat(
            [tf.cos(angles), tf.sin(angles), velocities, self.fingertip(states) - tasks], axis=-1
        )

    def accelerations(self, states, torques):
        """The joints' angular accelerations `[batch, 2]` under `torques` (unclipped)."""
        m, length = self.mass, self.length
        center = length / 2
        inertia = m * length**2 / 12
        q2, dq1, dq2 = states[:, 1], states[:, 2], states[:, 3]
        cos2, sin2 = tf.cos(q2), tf.sin(q2)
        m11 = 2 * inertia + m * (2 * center**2 + length**2 + 2 * length * center * cos2)
        m12 = inertia + m * (center**2 + length * center * cos2)
        m22 = tf.fill(tf.shape(q2), inertia + m * center**2)
        c1 = -m * length * center * sin2 * (2 * dq1 * dq2 + dq2**2)
        c2 = m * length * center * sin2 * dq1**2
        right1 = torques[:, 0] - c1 - self.damping * dq1
        right2 = torques[:, 1] - c2 - self.damping * dq2
        determinant = m11 * m22 - m12 * m12
        return tf.stack(
            [
                (m22 * right1 - m12 * right2) / determinant,
                (m11 * right2 - m12 * right1) / determinant,
            ],
            axis=-1,
        )

    def transition(self, states, actions, tasks):
        """One semi-implicit Euler step; the reward is minus distance minus control cost."""
        torques = tf.clip_by_value(actions, -self.max_torque, self.max_torque)
        velocities = states[:, 2:] + self.dt * self.accelerations(states, torques)
        angles = states[:, :2] + self.dt * velocities
        states = tf.concat([angles, velocities], axis=-1)
        distance = tf.norm(self.fingertip(states) - tasks, axis=-1)
        return states, -distance - self.control_cost * tf.reduce_sum(torques**2, axis=-1)

    def get_config(self):
        """The constructor's arguments."""
        return {
            "horizon": self.horizon,
            "length": self.length,
            "mass": self.mass,
            "damping": self.damping,
            "max_torque": self.max_torque,
            "control_cost": self.control_cost,
            "dt": self.dt,
        }
