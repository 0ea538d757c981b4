"""Meta-learning algorithms, one public class per module."""

from tf_meta.algorithms.maml import MAML
from tf_meta.algorithms.meta_learner import MetaLearner

__all__ = ["MAML", "MetaLearner"]
