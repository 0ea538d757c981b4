"""tf_meta: meta-learning and meta-optimization as Keras 3 models on TensorFlow."""

from tf_meta import (
    adaptation,
    callbacks,
    checkpointing,
    data,
    distribution,
    evaluation,
    models,
    serving,
    training,
)
from tf_meta.algorithms import ANIL, MAML, MetaLearner, MetaSGD, PrototypicalNetwork, Reptile

__version__ = "0.1.0"

__all__ = [
    "ANIL",
    "MAML",
    "MetaLearner",
    "MetaSGD",
    "PrototypicalNetwork",
    "Reptile",
    "adaptation",
    "callbacks",
    "checkpointing",
    "data",
    "distribution",
    "evaluation",
    "models",
    "serving",
    "training",
]
