"""The contract of a learned update rule: a small network applied to every weight tensor."""

import keras
import tensorflow as tf

from tf_meta.rules.update_rule import (
    UpdateRule,
    as_dtype,
    check_positive,
    check_positive_integer,
)


class LearnedRule(keras.layers.Layer, UpdateRule):
    """An update rule whose behaviour is a network with ordinary Keras weights.

    A learned rule is two things at once. As a `tf_meta.rules.UpdateRule` it is a pure
    function of tensors (`init`, `update`), so `tf_meta.adaptation.inner_loop` runs it on fast
    weights, MAML can use it as its inner optimizer, and `OptimizerMetaLearner` differentiates
    through many of its steps. As a Keras layer its network's weights are tracked, saved and
    trained like any other: the meta-learner's `fit` trains them, and
    `tf_meta.optimizers.LearnedOptimizer` applies the trained rule in any `model.compile`.

    A subclass implements the rule for one weight tensor, in two methods:

    - `initial_state(weight)`: the rule's state for the tensor (accumulators), a nest of
      tensors.
    - `direction(gradient, state, weight, step)`: returns `(direction, new_state)`; the
      weight becomes `weight - learning_rate * direction`.

    `step` counts from 0 (a Python integer or a scalar tensor) and `step / training_steps` is
    the fraction of training done, an input of the rules that condition on it. The learning
    rate is a base step size: a rule's network scales it per coordinate.

    Args:
        learning_rate: The base step size, a finite positive number.
        training_steps: The number of steps of the runs the rule is used for: the fraction
            of training done is `step / training_steps`.
        **kwargs: Passed to `keras.layers.Layer` (`name`, `dtype`).

    Raises:
        ValueError: If `learning_rate` is not a finite positive number or `training_steps`
            is not a positive integer.
    """

    def __init__(self, learning_rate: float = 1e-3, training_steps: int = 1000, **kwargs):
        super().__init__(**kwargs)
        self.learning_rate = check_positive("learning_rate", learning_rate)
        self.training_steps = check_positive_integer("training_steps", training_steps)

    def initial_state(self, weight: tf.Tensor):
        """The rule's state for one weight tensor before its first step.

        Args:
            weight: The weight tensor.

        Returns:
            A nest of tensors.
        """
        raise NotImplementedError

    def direction(self, gradient: tf.Tensor, state, weight: tf.Tensor, step):
        """The update direction of one weight tensor.

        Args:
            gradient: The gradient of the loss with respect to `weight`.
            state: The tensor's state, from `initial_state` or the previous step.
            weight: The weight tensor before the step.
            step: The step, from 0.

        Returns:
            `(direction, new_state)`, with `direction` shaped like `weight`.
        """
        raise NotImplementedError

    def fraction(self, step) -> tf.Tensor:
        """The fraction of training done at `step`, in the rule's compute dtype."""
        return tf.cast(step, self.compute_dtype) / float(self.training_steps)

    def init(self, weights):
        """One `initial_state` per weight tensor."""
        return [self.initial_state(weight) for weight in weights]

    def update(self, gradients, state, weights, step):
        """`weight - learning_rate * direction` for every weight tensor."""
        new_weights, new_state = [], []
        for gradient, tensor_state, weight in zip(gradients, state, weights, strict=True):
            direction, tensor_state = self.direction(
                as_dtype(gradient, weight.dtype), tensor_state, weight, step
            )
            new_weights.append(weight - as_dtype(self.learning_rate, weight.dtype) * direction)
            new_state.append(tensor_state)
        return new_weights, new_state

    def get_config(self):
        """The rule's hyperparameters."""
        config = super().get_config()
        config.update(learning_rate=self.learning_rate, training_steps=self.training_steps)
        return config


def checked_rule(name: str, rule) -> LearnedRule:
    """`rule` (deserialized if it is a config), or a ValueError naming `name`.

    Args:
        name: The argument's name, for the error.
        rule: A `LearnedRule` or its serialized config.

    Returns:
        The rule.

    Raises:
        ValueError: If `rule` is not a `LearnedRule`.
    """
    if isinstance(rule, dict):
        rule = keras.saving.deserialize_keras_object(rule)
    if not isinstance(rule, LearnedRule):
        raise ValueError(
            f"`{name}` must be a tf_meta.optimizers.LearnedRule; received {type(rule).__name__}."
        )
    return rule
