"""Gradient descent with a learned rate per weight tensor and per inner step (MAML++)."""

from collections.abc import Sequence

from tf_meta.rules.update_rule import UpdateRule, as_dtype, read


class PerStepGradientDescent(UpdateRule):
    """`w_i <- w_i - rates_i[step] * g_i`: MAML++'s per-layer per-step learning rates (LSLR).

    Steps beyond the length of the rate vectors (evaluation with more inner steps than
    training) reuse the last rate.

    Args:
        learning_rates: One rate vector `[steps]` per fast weight, usually the learner's
            variables, read when a task's adaptation starts.

    References:
        Antoniou, Edwards and Storkey. How to train your MAML. ICLR 2019.
        https://arxiv.org/abs/1810.09502
    """

    def __init__(self, learning_rates: Sequence):
        self.learning_rates = list(learning_rates)

    def init(self, weights):
        """The rate vectors, read once per task."""
        del weights
        return [read(rates) for rates in self.learning_rates]

    def update(self, gradients, state, weights, step):
        """One step with the rates of column `step` (or the last column)."""
        new_weights = []
        for weight, gradient, rates in zip(weights, gradients, state, strict=True):
            rate = rates[min(step, rates.shape[0] - 1)]
            new_weights.append(weight - as_dtype(rate, weight.dtype) * gradient)
        return new_weights, state
