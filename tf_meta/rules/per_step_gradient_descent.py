"""Gradient descent with a learned rate per weight tensor and per inner step (MAML++)."""

from tf_meta.rules.per_weight_gradient_descent import PerWeightGradientDescent


class PerStepGradientDescent(PerWeightGradientDescent):
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

    def _rate(self, rates, step):
        """Column `step` of the weight's rate vector, or its last."""
        return rates[min(step, rates.shape[0] - 1)]
