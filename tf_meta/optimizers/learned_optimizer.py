"""A learned update rule as a Keras optimizer."""

import keras
import numpy as np
import tensorflow as tf

from tf_meta.optimizers.learned_rule import LearnedRule, checked_rule
from tf_meta.optimizers.mlp_rule import MLPRule


@keras.saving.register_keras_serializable(package="tf_meta")
class LearnedOptimizer(keras.optimizers.Optimizer):
    """A `keras.optimizers.Optimizer` that updates each variable with a learned rule.

    Any Keras model can `compile(optimizer=tf_meta.optimizers.LearnedOptimizer(rule))`. The
    rule's state for each variable (its momenta, or an LSTM's cells) lives in the
    optimizer's variables, so it is saved with the model and survives `BackupAndRestore`;
    the rule's own weights are constants here and are part of `get_config`, so a `.keras`
    file or a config restores the meta-trained rule. The optimizer's `learning_rate` (a
    number or a Keras schedule) is the rule's base step size, and the step counter
    `iterations` its step: `iterations / training_steps` is the fraction of training done.

    Args:
        rule: A `tf_meta.optimizers.LearnedRule` (usually meta-trained by
            `tf_meta.optimizers.OptimizerMetaLearner`), or its serialized config; None makes
            an untrained `MLPRule`, which starts as Adam.
        learning_rate: The base step size; None uses the rule's.
        training_steps: The length of the run, for the rule's fraction-of-training input;
            None uses the rule's.
        rule_weights: The rule's weights (as `rule.get_weights()` returns them), set on
            the rule; None keeps them.
        name: The optimizer's name.
        **kwargs: Passed to `keras.optimizers.Optimizer` (`clipnorm`, `weight_decay`, ...).

    Raises:
        ValueError: If `rule` is not a `LearnedRule`, or `rule_weights` do not match its
            weights' shapes.

    Example:
        ```python
        rule = meta_learner.rule  # an OptimizerMetaLearner after fit
        model.compile(optimizer=tf_meta.optimizers.LearnedOptimizer(rule), loss="mse")
        ```

    References:
        Andrychowicz et al. Learning to learn by gradient descent by gradient descent.
        NeurIPS 2016.
    """

    def __init__(
        self,
        rule=None,
        learning_rate=None,
        training_steps: int | None = None,
        rule_weights=None,
        name: str | None = None,
        **kwargs,
    ):
        rule = self._default_rule() if rule is None else checked_rule("rule", rule)
        weights = rule.get_weights() if rule_weights is None else rule_weights
        if training_steps is not None and training_steps != rule.training_steps:
            rule = type(rule).from_config({**rule.get_config(), "training_steps": training_steps})
        _set_rule_weights(rule, weights)
        super().__init__(
            learning_rate=rule.learning_rate if learning_rate is None else learning_rate,
            name=name or type(self).__name__.lower(),
            **kwargs,
        )
        self.rule = rule

    def _default_rule(self) -> LearnedRule:
        """The rule made when none is given."""
        return MLPRule()

    def build(self, variables):
        """Creates the rule's state for every variable, as optimizer variables."""
        if self.built:
            return
        super().build(variables)
        self._structures, self._states = [], []
        for variable in variables:
            state = self.rule.initial_state(tf.convert_to_tensor(variable))
            self._structures.append(state)
            slots = []
            for position, value in enumerate(tf.nest.flatten(state)):
                slot = self.add_variable(
                    shape=value.shape,
                    dtype=value.dtype,
                    name=f"{variable.path.replace('/', '_')}_state{position}",
                )
                slot.assign(value)
                slots.append(slot)
            self._states.append(slots)

    def update_step(self, gradient, variable, learning_rate):
        """One step of the rule on one variable."""
        slots = self._states[self._get_variable_index(variable)]
        structure = self._structures[self._get_variable_index(variable)]
        state = tf.nest.pack_sequence_as(structure, [tf.convert_to_tensor(slot) for slot in slots])
        direction, state = self.rule.direction(
            tf.cast(gradient, variable.dtype),
            state,
            tf.convert_to_tensor(variable),
            self.iterations,
        )
        for slot, value in zip(slots, tf.nest.flatten(state), strict=True):
            self.assign(slot, value)
        self.assign_sub(variable, tf.cast(learning_rate, variable.dtype) * direction)

    def get_config(self):
        """The optimizer's configuration, with the rule and its weights."""
        config = super().get_config()
        config.update(
            rule=keras.saving.serialize_keras_object(self.rule),
            training_steps=self.rule.training_steps,
            rule_weights=[weight.tolist() for weight in self.rule.get_weights()],
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """Rebuilds the optimizer, its rule and the rule's weights."""
        config = dict(config)
        config["rule"] = keras.saving.deserialize_keras_object(
            config["rule"], custom_objects=custom_objects
        )
        return super().from_config(config, custom_objects=custom_objects)


def _set_rule_weights(rule: LearnedRule, weights) -> None:
    """Sets `weights` on `rule`, or a ValueError naming the first mismatched shape."""
    weights = [np.asarray(weight, dtype=np.float64) for weight in weights]
    if len(weights) != len(rule.weights):
        raise ValueError(
            f"`rule_weights` has {len(weights)} arrays; the rule has {len(rule.weights)} weights."
        )
    for index, (weight, variable) in enumerate(zip(weights, rule.weights, strict=True)):
        if tuple(weight.shape) != tuple(variable.shape):
            raise ValueError(
                f"`rule_weights[{index}]` has shape {weight.shape}; the rule's weight "
                f"{variable.path} has shape {tuple(variable.shape)}."
            )
    rule.set_weights(weights)
