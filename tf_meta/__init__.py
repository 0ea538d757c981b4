"""tf_meta: meta-learning and meta-optimization as Keras 3 models on TensorFlow."""

from tf_meta import (
    adaptation,
    backup,
    callbacks,
    checkpointing,
    data,
    distribution,
    episode,
    evaluation,
    models,
    optimizers,
    rl,
    rules,
    serving,
    training,
)
from tf_meta.algorithms import (
    ANIL,
    IMAML,
    MAML,
    MetaLearner,
    MetaSGD,
    PrototypicalNetwork,
    Reptile,
    Task,
)

__version__ = "0.1.0"

__all__ = [
    "ANIL",
    "IMAML",
    "MAML",
    "MetaLearner",
    "MetaSGD",
    "PrototypicalNetwork",
    "Reptile",
    "Task",
    "adaptation",
    "backup",
    "callbacks",
    "checkpointing",
    "data",
    "distribution",
    "episode",
    "evaluation",
    "models",
    "optimizers",
    "rl",
    "rules",
    "serving",
    "training",
]
