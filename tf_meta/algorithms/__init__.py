"""Meta-learning algorithms, one public class per module."""

from tf_meta.algorithms.anil import ANIL
from tf_meta.algorithms.imaml import IMAML
from tf_meta.algorithms.maml import MAML
from tf_meta.algorithms.meta_learner import MetaLearner
from tf_meta.algorithms.meta_sgd import MetaSGD
from tf_meta.algorithms.prototypical import PrototypicalNetwork
from tf_meta.algorithms.reptile import Reptile
from tf_meta.algorithms.task import Task

__all__ = [
    "ANIL",
    "IMAML",
    "MAML",
    "MetaLearner",
    "MetaSGD",
    "PrototypicalNetwork",
    "Reptile",
    "Task",
]
