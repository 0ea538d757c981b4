"""Pure functions on fast weights: stateless predictions, support losses, update rules.

Fast weights are plain tensors, one per trainable variable of a Keras model and in the
order of `model.trainable_variables`. Nothing here writes a variable: the network is run
on the fast weights in a `keras.StatelessScope` (as `stateless_call` does), so a
`tf.GradientTape` around these functions sees every operation and can differentiate
through adaptation (second-order MAML, Finn et al. 2017).
"""

from collections.abc import Callable, Sequence

import keras
import tensorflow as tf


def predictions(
    model: keras.Model,
    trainable_values: Sequence[tf.Tensor],
    non_trainable_values: Sequence[tf.Tensor],
    inputs: tf.Tensor,
) -> tf.Tensor:
    """Runs `model` on `inputs` with the given weight values, in training mode.

    This is `model.stateless_call`, except that the model is entered through `__call__`
    so that `training=True` reaches every layer even when the model's own `call` takes no
    `training` argument (common in subclassed models). Training mode makes normalization
    layers use the statistics of the batch they see (transductive batch normalization, as
    in MAML); the moving statistics they would update stay in the discarded stateless
    scope, so the model's variables never change.

    Args:
        model: A built Keras model.
        trainable_values: One tensor per entry of `model.trainable_variables`.
        non_trainable_values: One tensor per entry of `model.non_trainable_variables`.
        inputs: The model's input batch.

    Returns:
        The model's outputs, cast to float32 when the model computes in half precision.
    """
    mapping = list(zip(model.trainable_variables, trainable_values, strict=True))
    mapping += list(zip(model.non_trainable_variables, non_trainable_values, strict=True))
    with keras.StatelessScope(state_mapping=mapping):
        outputs = model(inputs, training=True)
    return at_least_float32(outputs)


def at_least_float32(value: tf.Tensor) -> tf.Tensor:
    """Casts float16 and bfloat16 values to float32; leaves other dtypes unchanged."""
    if value.dtype in (tf.float16, tf.bfloat16):
        return tf.cast(value, tf.float32)
    return value


def mean_loss(loss: Callable, targets: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    """The mean of a per-example loss over all examples, with no distribution scaling.

    Keras scales a reduced loss by `1 / num_replicas_in_sync` so that the replicas'
    gradients add up to the global mean. An inner-loop loss belongs to one task on one
    replica and must not be scaled, so the per-example values are averaged here directly.

    Args:
        loss: A per-example loss function (see `per_example_loss`).
        targets: The targets of one task.
        outputs: The predictions for those targets.

    Returns:
        A scalar of at least float32 precision.
    """
    return tf.reduce_mean(at_least_float32(loss(targets, outputs)))


def loss_and_gradients(
    model: keras.Model,
    loss: Callable,
    trainable_values: Sequence[tf.Tensor],
    non_trainable_values: Sequence[tf.Tensor],
    inputs: tf.Tensor,
    targets: tf.Tensor,
    indices: Sequence[int] | None = None,
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """The support loss of one task and its gradient with respect to fast weights.

    The gradient is computed on a tape of its own. When an enclosing tape is recording
    (the outer loop), the gradient stays differentiable: its own gradient is the
    second-order term of MAML. Stop it to get first-order MAML.

    Args:
        model: A built Keras model.
        loss: A per-example loss function (see `per_example_loss`).
        trainable_values: Fast weights, one per trainable variable of `model`.
        non_trainable_values: One tensor per non-trainable variable of `model`.
        inputs: Support inputs of one task.
        targets: Support targets of one task.
        indices: Positions in `trainable_values` of the weights to differentiate with
            respect to (the adapted ones); None means all. Backpropagation stops at the
            earliest of them, which makes adapting only a head (ANIL) cheap.

    Returns:
        The scalar loss and one gradient per entry of `indices` (zeros for a weight the
        loss does not depend on).
    """
    trainable_values = list(trainable_values)
    indices = range(len(trainable_values)) if indices is None else indices
    with tf.GradientTape() as tape:
        sources = [trainable_values[index] for index in indices]
        tape.watch(sources)
        value = mean_loss(
            loss, targets, predictions(model, trainable_values, non_trainable_values, inputs)
        )
    gradients = tape.gradient(value, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return value, gradients


def gradient_descent_step(
    weights: Sequence[tf.Tensor],
    gradients: Sequence[tf.Tensor],
    learning_rates: float | tf.Tensor | Sequence[tf.Tensor],
) -> list[tf.Tensor]:
    """One step of gradient descent on fast weights: `w - learning_rate * g`.

    Args:
        weights: Fast weights.
        gradients: Gradients shaped like `weights`.
        learning_rates: One scalar for all weights, or one tensor per weight (broadcast
            against it, e.g. the per-parameter rates of Meta-SGD).

    Returns:
        The updated fast weights.
    """
    if isinstance(learning_rates, Sequence):
        rates = list(learning_rates)
    else:
        rates = [learning_rates] * len(weights)
    return [
        weight - _as_dtype(rate, weight.dtype) * _as_dtype(gradient, weight.dtype)
        for weight, gradient, rate in zip(weights, gradients, rates, strict=True)
    ]


def adam_step(
    weights: Sequence[tf.Tensor],
    gradients: Sequence[tf.Tensor],
    moments: tuple[Sequence[tf.Tensor], Sequence[tf.Tensor]],
    step: int,
    learning_rate: float,
    beta_1: float = 0.0,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
) -> tuple[list[tf.Tensor], tuple[list[tf.Tensor], list[tf.Tensor]]]:
    """One Adam step on fast weights, the update of `keras.optimizers.Adam`.

    `m = beta_1 m + (1 - beta_1) g`, `v = beta_2 v + (1 - beta_2) g^2` and
    `w - learning_rate * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)`.
    `beta_1 = 0` is the inner optimizer of Reptile (Nichol et al. 2018).

    Args:
        weights: Fast weights.
        gradients: Gradients shaped like `weights`.
        moments: `(first_moments, second_moments)`, each shaped like `weights` (zeros at
            the first step).
        step: The step number `t`, from 1.
        learning_rate: The step size.
        beta_1: Decay of the first moment.
        beta_2: Decay of the second moment.
        epsilon: Added to the root of the second moment.

    Returns:
        The updated weights and moments.
    """
    first, second = moments
    scale = learning_rate * (1.0 - beta_2**step) ** 0.5 / (1.0 - beta_1**step)
    new_first, new_second, new_weights = [], [], []
    for weight, gradient, m, v in zip(weights, gradients, first, second, strict=True):
        gradient = _as_dtype(gradient, weight.dtype)
        m = beta_1 * m + (1.0 - beta_1) * gradient
        v = beta_2 * v + (1.0 - beta_2) * tf.square(gradient)
        new_first.append(m)
        new_second.append(v)
        new_weights.append(weight - _as_dtype(scale, weight.dtype) * m / (tf.sqrt(v) + epsilon))
    return new_weights, (new_first, new_second)


def _as_dtype(value, dtype: tf.DType) -> tf.Tensor:
    """Converts Python numbers directly to `dtype` (no float32 rounding on the way)."""
    return tf.cast(tf.convert_to_tensor(value, dtype_hint=dtype), dtype)


def per_example_loss(identifier: str | Callable | keras.losses.Loss) -> Callable:
    """Turns a Keras loss identifier into a function giving per-example loss values.

    Args:
        identifier: A loss name (`"mse"`), a function `(y_true, y_pred) -> values`, or a
            `keras.losses.Loss` (whose unreduced `call` is used).

    Returns:
        A function `(y_true, y_pred) -> values` with no reduction over examples.

    Raises:
        ValueError: If `identifier` is not a single loss (a list or dict of losses, for
            models with several outputs, needs an explicit `inner_loss`), or is unknown.
    """
    if isinstance(identifier, (list, tuple, dict)):
        raise ValueError(
            "The inner loss must be a single loss; received a "
            f"{type(identifier).__name__} of losses: {identifier!r}. Pass `inner_loss=`."
        )
    resolved = keras.losses.get(identifier)
    if isinstance(resolved, keras.losses.Loss):
        return resolved.call
    if callable(resolved):
        return resolved
    raise ValueError(f"Could not interpret the loss {identifier!r}.")
