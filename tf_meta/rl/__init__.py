"""Meta-reinforcement learning: task families as batched TensorFlow environments, and MAML."""

from tf_meta.rl import rollouts
from tf_meta.rl.environment import TaskEnvironment
from tf_meta.rl.maml_policy_gradient import MAMLPolicyGradient
from tf_meta.rl.point_navigation import PointNavigation

__all__ = ["MAMLPolicyGradient", "PointNavigation", "TaskEnvironment", "rollouts"]
