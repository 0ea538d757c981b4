"""Meta-learning algorithms, one public class per module."""

from tf_meta.algorithms.anil import ANIL
from tf_meta.algorithms.maml import MAML
from tf_meta.algorithms.meta_learner import MetaLearner
from tf_meta.algorithms.meta_sgd import MetaSGD
from tf_meta.algorithms.prototypical import PrototypicalNetwork
from tf_meta.algorithms.reptile import Reptile

__all__ = ["ANIL", "MAML", "MetaLearner", "MetaSGD", "PrototypicalNetwork", "Reptile"]
