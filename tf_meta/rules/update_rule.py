"""The contract of an inner update rule."""

from collections.abc import Sequence

import keras
import tensorflow as tf


class UpdateRule:
    """An inner update rule: a pure function from gradients to new fast weights.

    Subclasses implement two methods, in the style of optax's `GradientTransformation`:

    - `init(weights) -> state`: the rule's state for a task's initial fast weights (moments,
      and any hyperparameter that must reach the meta-gradient), a nest of tensors.
    - `update(gradients, state, weights, step) -> (new_weights, new_state)`: one inner step;
      `step` counts from 0 and is a Python integer (the inner loop is unrolled).

    Both must be pure: no variable is assigned, so a `tf.GradientTape` around the inner
    loop differentiates through every step (second-order MAML), and
    `tf_meta.adaptation.inner_loop` can recompute a step from its arguments (gradient
    checkpointing). Learned hyperparameters are passed to the constructor as Keras variables
    owned by the learner; `init` reads them (`read`), which inside a learner's task loop
    yields the values the outer tape watches.
    """

    def init(self, weights: Sequence[tf.Tensor]):
        """The state of the rule before the first step.

        Args:
            weights: The fast weights the rule will update.

        Returns:
            A nest of tensors (an empty tuple for a stateless rule).
        """
        raise NotImplementedError

    def update(self, gradients, state, weights, step: int):
        """One inner step.

        Args:
            gradients: One gradient per fast weight.
            state: The state returned by `init` or by the previous `update`.
            weights: The fast weights before the step.
            step: The inner step, from 0.

        Returns:
            `(new_weights, new_state)`.
        """
        raise NotImplementedError


def read(value) -> tf.Tensor:
    """The current value of a Keras variable (in a stateless scope, the scope's), or a tensor."""
    if isinstance(value, keras.Variable):
        return value.value
    return tf.convert_to_tensor(value)


def as_dtype(value, dtype: tf.DType) -> tf.Tensor:
    """Converts Python numbers directly to `dtype` (no float32 rounding on the way)."""
    return tf.cast(tf.convert_to_tensor(value, dtype_hint=dtype), dtype)


def check_positive(name: str, value) -> float:
    """`value` as a float, or a ValueError naming `name` unless it is a finite positive number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"`{name}` must be a positive number; received {value!r}.")
    if not 0 < value < float("inf"):
        raise ValueError(f"`{name}` must be a finite positive number; received {value!r}.")
    return float(value)


def check_positive_integer(name: str, value, minimum: int = 1) -> int:
    """`value`, or a ValueError naming `name` unless it is an integer of at least `minimum`.

    A bool is not an integer here.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"`{name}` must be {wanted}; received {value!r}.")
    return value
