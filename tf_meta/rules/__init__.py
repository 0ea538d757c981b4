"""Inner update rules: how fast weights move at each inner step, one rule per module.

A rule follows the optax shape: `init(weights) -> state` and `update(gradients, state,
weights, step) -> (weights, state)`, pure functions of tensors. `tf_meta.adaptation.inner_loop`
runs any rule differentiably (second order), first order or checkpointed. Hyperparameters a
learner meta-learns (Meta-SGD's rates) are Keras variables handed to the rule; `init` reads
them into the state, so the meta-gradient reaches them through every inner step.
"""

from tf_meta.rules.adam import Adam
from tf_meta.rules.gradient_descent import GradientDescent
from tf_meta.rules.per_step_gradient_descent import PerStepGradientDescent
from tf_meta.rules.per_weight_gradient_descent import PerWeightGradientDescent
from tf_meta.rules.update_rule import UpdateRule

__all__ = [
    "Adam",
    "GradientDescent",
    "PerStepGradientDescent",
    "PerWeightGradientDescent",
    "UpdateRule",
]
