"""The LSTM optimizer of Andrychowicz et al. (2016) as a Keras optimizer."""

import keras

from tf_meta.optimizers.learned_optimizer import LearnedOptimizer
from tf_meta.optimizers.lstm_rule import LSTMRule


@keras.saving.register_keras_serializable(package="tf_meta")
class LSTMOptimizer(LearnedOptimizer):
    """`LearnedOptimizer` whose default rule is the coordinate-wise `LSTMRule`.

    The historical baseline of learned optimization. Its state is two LSTM layers' `h` and
    `c` per coordinate (`4 * hidden_units` numbers per weight, against 5 for the MLP rule),
    which is why later learned optimizers moved to per-coordinate MLPs.

    Args:
        rule: An `LSTMRule` (usually meta-trained), its config, or None for an untrained one.
        **kwargs: Passed to `LearnedOptimizer`.

    References:
        Andrychowicz et al. Learning to learn by gradient descent by gradient descent.
        NeurIPS 2016.
    """

    def __init__(self, rule=None, **kwargs):
        super().__init__(rule=rule, **kwargs)

    def _default_rule(self):
        """An untrained `LSTMRule`."""
        return LSTMRule()
