"""Meta-reinforcement learning: task families as batched TensorFlow environments, and MAML."""

from tf_meta.rl import rollouts
from tf_meta.rl.environment import TaskEnvironment
from tf_meta.rl.gymnasium_environment import GymnasiumEnvironment
from tf_meta.rl.half_cheetah import HalfCheetah
from tf_meta.rl.maml_policy_gradient import MAMLPolicyGradient
from tf_meta.rl.meta_world import MetaWorldML1
from tf_meta.rl.point_navigation import PointNavigation
from tf_meta.rl.policy_export import export_policy
from tf_meta.rl.two_link_arm import TwoLinkArm

__all__ = [
    "GymnasiumEnvironment",
    "HalfCheetah",
    "MAMLPolicyGradient",
    "MetaWorldML1",
    "PointNavigation",
    "TaskEnvironment",
    "TwoLinkArm",
    "export_policy",
    "rollouts",
]
