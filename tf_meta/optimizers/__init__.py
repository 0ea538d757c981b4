"""Learned optimization: update rules that are networks, as Keras optimizers and inner rules.

A `LearnedRule` is a small network applied to every weight tensor. It is an inner update
rule of `tf_meta.adaptation` (so MAML can adapt with it) and, wrapped in a
`LearnedOptimizer`, a `keras.optimizers.Optimizer` that any model can compile with.
`OptimizerMetaLearner` meta-trains a rule's weights on a `TaskFamily` of inner problems with
Keras's `fit`.
"""

from tf_meta.optimizers.controller_rule import ControllerRule
from tf_meta.optimizers.families import image_family, sinusoid_family
from tf_meta.optimizers.hyperparameter_controller import HyperparameterController
from tf_meta.optimizers.learned_optimizer import LearnedOptimizer
from tf_meta.optimizers.learned_rule import LearnedRule
from tf_meta.optimizers.lstm_optimizer import LSTMOptimizer
from tf_meta.optimizers.lstm_rule import LSTMRule
from tf_meta.optimizers.mlp_rule import MLPRule
from tf_meta.optimizers.optimizer_meta_learner import ESTIMATORS, OptimizerMetaLearner
from tf_meta.optimizers.task_family import TaskFamily

__all__ = [
    "ESTIMATORS",
    "ControllerRule",
    "HyperparameterController",
    "LearnedOptimizer",
    "LearnedRule",
    "LSTMOptimizer",
    "LSTMRule",
    "MLPRule",
    "OptimizerMetaLearner",
    "TaskFamily",
    "image_family",
    "sinusoid_family",
]
