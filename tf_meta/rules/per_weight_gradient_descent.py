"""Gradient descent with a learned rate for every parameter (Meta-SGD)."""

from collections.abc import Sequence

from tf_meta.rules.update_rule import UpdateRule, as_dtype, read


class PerWeightGradientDescent(UpdateRule):
    """`w <- w - alpha * g` with `alpha` a tensor shaped like `w` (elementwise): Meta-SGD.

    Args:
        learning_rates: One rate tensor per fast weight, broadcastable against it, usually
            the learner's variables, read when a task's adaptation starts.

    References:
        Li, Zhou, Chen and Li. Meta-SGD: Learning to Learn Quickly for Few-Shot Learning.
        arXiv:1707.09835, 2017.
    """

    def __init__(self, learning_rates: Sequence):
        self.learning_rates = list(learning_rates)

    def init(self, weights):
        """The rates, read once per task: their meta-gradient flows through the state."""
        del weights
        return [read(rates) for rates in self.learning_rates]

    def update(self, gradients, state, weights, step):
        """One step with each weight's rate for `step`."""
        return [
            weight - as_dtype(self._rate(rates, step), weight.dtype) * gradient
            for weight, gradient, rates in zip(weights, gradients, state, strict=True)
        ], state

    def _rate(self, rates, step):
        """The rate of one weight at `step`: the same at every step."""
        del step
        return rates
