"""Adam on fast weights (Reptile's inner optimizer)."""

import tensorflow as tf

from tf_meta.rules.update_rule import UpdateRule, as_dtype, check_positive


class Adam(UpdateRule):
    """Adam on fast weights: the update of `keras.optimizers.Adam`, as a pure rule.

    `m = beta_1 m + (1 - beta_1) g`, `v = beta_2 v + (1 - beta_2) g^2` and
    `w - learning_rate * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)` with
    `t = step + 1`. `beta_1 = 0` (the default) is Reptile's inner optimizer (Nichol et al.
    2018).

    Args:
        learning_rate: The step size, a finite positive number.
        beta_1: Decay of the first moment, in [0, 1).
        beta_2: Decay of the second moment, in [0, 1).
        epsilon: Added to the root of the second moment, positive.

    Raises:
        ValueError: Naming the argument, if one is out of its range.

    References:
        Kingma and Ba. Adam: A Method for Stochastic Optimization. ICLR 2015.
        Nichol, Achiam and Schulman. On First-Order Meta-Learning Algorithms.
        arXiv:1803.02999, 2018.
    """

    def __init__(
        self,
        learning_rate: float,
        beta_1: float = 0.0,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
    ):
        self.learning_rate = check_positive("learning_rate", learning_rate)
        self.epsilon = check_positive("epsilon", epsilon)
        for name, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"`{name}` must be a number in [0, 1); received {value!r}.")
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)

    def init(self, weights):
        """Zero first and second moments."""
        return [tf.zeros_like(w) for w in weights], [tf.zeros_like(w) for w in weights]

    def update(self, gradients, state, weights, step):
        """One Adam step, step `step + 1` of the bias correction."""
        first, second = state
        t = step + 1
        scale = self.learning_rate * (1.0 - self.beta_2**t) ** 0.5 / (1.0 - self.beta_1**t)
        new_first, new_second, new_weights = [], [], []
        for weight, gradient, m, v in zip(weights, gradients, first, second, strict=True):
            gradient = as_dtype(gradient, weight.dtype)
            m = self.beta_1 * m + (1.0 - self.beta_1) * gradient
            v = self.beta_2 * v + (1.0 - self.beta_2) * tf.square(gradient)
            new_first.append(m)
            new_second.append(v)
            new_weights.append(
                weight - as_dtype(scale, weight.dtype) * m / (tf.sqrt(v) + self.epsilon)
            )
        return new_weights, (new_first, new_second)
