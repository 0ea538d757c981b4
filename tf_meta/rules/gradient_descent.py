"""Plain gradient descent on fast weights (MAML's inner rule)."""

from tf_meta.rules.update_rule import UpdateRule, as_dtype, check_positive


class GradientDescent(UpdateRule):
    """`w <- w - learning_rate * g`, the inner step of MAML (Finn et al. 2017).

    Args:
        learning_rate: The step size, a finite positive number.

    Raises:
        ValueError: If `learning_rate` is not a finite positive number.

    References:
        Finn, Abbeel and Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep
        Networks. ICML 2017. https://arxiv.org/abs/1703.03400
    """

    def __init__(self, learning_rate: float):
        self.learning_rate = check_positive("learning_rate", learning_rate)

    def init(self, weights):
        """No state."""
        del weights
        return ()

    def update(self, gradients, state, weights, step):
        """One step of gradient descent."""
        del step
        return [
            weight - as_dtype(self.learning_rate, weight.dtype) * as_dtype(gradient, weight.dtype)
            for weight, gradient in zip(weights, gradients, strict=True)
        ], state
