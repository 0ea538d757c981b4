"""Meta-SGD: MAML with learned per-parameter inner learning rates."""

import keras

from tf_meta import rules
from tf_meta.algorithms.maml import MAML


@keras.saving.register_keras_serializable(package="tf_meta")
class MetaSGD(MAML):
    """Meta-SGD: learns the initialization and a learning rate for every parameter.

    With one episode, `train_step` adapts each task like MAML, except that the inner step
    is `w - alpha * g` with `alpha` a learned tensor of the same shape as `w`; the outer
    optimizer then updates the initial weights and the rates together from the query
    loss. The rates are the learner's own variables `inner_learning_rates`, one per
    trainable weight of the model in the same order, initialized to
    `inner_learning_rate`. The paper uses one inner step, with the second-order gradient
    (the default; `first_order=True` still learns the rates, whose gradient needs no
    second derivatives). The inner rule is `tf_meta.rules.PerWeightGradientDescent`.

    Args:
        model: The network (any Keras model).
        inner_learning_rate: Initial value of every learned rate; must be positive.
        **kwargs: The other arguments of `MAML` (`inner_steps`, `first_order`,
            `eval_inner_steps`, `inner_loss`, `name`, ...).

    Raises:
        ValueError: As `MAML`, e.g. for a non-positive `inner_learning_rate`, or if
            `per_step_learning_rates` is set: the rates are per parameter already.

    References:
        Li, Zhou, Chen and Li. Meta-SGD: Learning to Learn Quickly for Few-Shot Learning.
        arXiv:1707.09835, 2017.
    """

    def __init__(self, model: keras.Model, inner_learning_rate: float = 0.01, **kwargs):
        if kwargs.get("per_step_learning_rates"):
            raise ValueError(
                "`per_step_learning_rates` does not apply to MetaSGD, whose learned rates are "
                "per parameter and shared by every step; use MAML(per_step_learning_rates=True) "
                "for MAML++'s per-step rates."
            )
        if kwargs.get("inner_rule") is not None:
            raise ValueError(
                "`inner_rule` does not apply to MetaSGD, whose inner rule is its learned "
                "per-parameter rates; use MAML(inner_rule=...)."
            )
        super().__init__(model, inner_learning_rate=inner_learning_rate, **kwargs)
        self.inner_learning_rates = []

    def build(self, input_shape):
        """Builds the wrapped model and one learning-rate variable per trainable weight."""
        super().build(input_shape)
        self.inner_learning_rates = [
            self.add_weight(
                shape=weight.shape,
                dtype=weight.dtype,
                initializer=keras.initializers.Constant(self.inner_learning_rate),
                name=f"inner_learning_rate_{index}",
            )
            for index, weight in enumerate(self.model.trainable_variables)
        ]

    def update_rule(self):
        """Per-parameter gradient descent with the learned rates."""
        return rules.PerWeightGradientDescent(self.inner_learning_rates)
