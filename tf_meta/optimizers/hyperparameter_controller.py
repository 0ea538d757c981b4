"""The learning-rate and momentum controller as a Keras optimizer."""

import keras
import tensorflow as tf

from tf_meta.optimizers.controller_rule import ControllerRule
from tf_meta.optimizers.learned_optimizer import LearnedOptimizer


@keras.saving.register_keras_serializable(package="tf_meta")
class HyperparameterController(LearnedOptimizer):
    """`LearnedOptimizer` whose default rule is the `ControllerRule`: a learned schedule.

    Each variable's learning rate and momentum are set every step by the controller from
    that variable's training state; `hyperparameters()` reads them, so a callback can
    record and plot the schedule the controller chose.

    Args:
        rule: A `ControllerRule` (usually meta-trained), its config, or None.
        **kwargs: Passed to `LearnedOptimizer`.

    References:
        Almeida et al. A Generalizable Approach to Learning Optimizers. arXiv:2106.00958.
        Xu et al. Learning an Adaptive Learning Rate Schedule. arXiv:1909.09712.
    """

    def __init__(self, rule=None, **kwargs):
        super().__init__(rule=rule, **kwargs)

    def _default_rule(self):
        """An untrained `ControllerRule` (SGD with momentum 0.9)."""
        return ControllerRule()

    def hyperparameters(self) -> dict[str, tuple[float, float]]:
        """Each variable's `(learning rate, momentum)` at the last step, by variable path."""
        scale = float(keras.ops.convert_to_numpy(self.learning_rate)) / self.rule.learning_rate
        values = {}
        for variable, slots, structure in zip(
            self._trainable_variables, self._states, self._structures, strict=True
        ):
            state = tf.nest.pack_sequence_as(structure, [slot.value for slot in slots])
            rate, momentum = self.rule.hyperparameters(state)
            values[variable.path] = (scale * float(rate), float(momentum))
        return values
