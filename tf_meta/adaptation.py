"""Pure functions on fast weights: stateless predictions, support losses, the inner loop.

Fast weights are plain tensors, one per trainable variable of a Keras model and in the
order of `model.trainable_variables`. Nothing here writes a variable: the network is run
on the fast weights in a `keras.StatelessScope` (as `stateless_call` does), so a
`tf.GradientTape` around these functions sees every operation and can differentiate
through adaptation (second-order MAML, Finn et al. 2017).
"""

from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from tf_meta.checkpointing import recompute


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


def inner_loop(
    rule,
    weights: Sequence[tf.Tensor],
    gradients_function: Callable[[list[tf.Tensor], int], list[tf.Tensor]],
    steps: int,
    indices: Sequence[int] | None = None,
    first_order: bool = False,
    checkpointed: bool = False,
) -> list[list[tf.Tensor]]:
    """The one inner loop: `steps` steps of an update rule on fast weights.

    Every gradient-based learner adapts through this function. It is differentiable: under
    an outer `tf.GradientTape` the meta-gradient flows through every step, including the
    inner gradients unless `first_order` stops them (first-order MAML, Reptile).
    `checkpointed` recomputes each step in the backward pass instead of storing its
    activations (`tf_meta.checkpointing.recompute`): the step receives the weights and the
    rule's state as arguments, so learned hyperparameters in the state keep their gradients.

    Args:
        rule: An update rule (`tf_meta.rules.UpdateRule`).
        weights: The initial fast weights.
        gradients_function: `gradients_function(weights, step)` returns the support loss's
            gradient with respect to the weights at `indices`, given all fast weights.
        steps: The number of inner steps (a Python integer).
        indices: Positions in `weights` of the weights the rule updates; None means all.
        first_order: Whether to stop the inner gradients.
        checkpointed: Whether to recompute each step for the meta-gradient.

    Returns:
        The fast weights after each step: `steps` lists (empty for 0 steps).
    """
    weights = list(weights)
    indices = list(range(len(weights))) if indices is None else list(indices)
    state = rule.init([weights[i] for i in indices])
    path, _ = unroll(
        rule, weights, state, gradients_function, steps, indices, first_order, checkpointed
    )
    return path


def unroll(
    rule,
    weights: Sequence[tf.Tensor],
    state,
    gradients_function: Callable,
    steps: int,
    indices: Sequence[int] | None = None,
    first_order: bool = False,
    checkpointed: bool = False,
    first_step=0,
):
    """`inner_loop` from a given rule state, returning the final state too.

    A truncated unroll of a long optimization (learned optimizers, `OptimizerMetaLearner`)
    continues from the weights and state where the previous truncation stopped: `state` is
    that state and `first_step` the step it stopped at (a Python integer or a scalar
    tensor), so that the rule sees `first_step + k` at the loop's step `k`.

    Args:
        rule: An update rule (`tf_meta.rules.UpdateRule`).
        weights: The fast weights to start from.
        state: The rule's state for the weights at `indices`.
        gradients_function: As for `inner_loop`, called with `first_step + k`.
        steps: The number of steps (a Python integer).
        indices: As for `inner_loop`.
        first_order: Whether to stop the inner gradients.
        checkpointed: Whether to recompute each step for the meta-gradient.
        first_step: The step number of the first step.

    Returns:
        `(path, state)`: the fast weights after each step, and the rule's final state.
    """
    weights = list(weights)
    count = len(weights)
    indices = list(range(count)) if indices is None else list(indices)

    def step_function(step, weights, state):
        gradients = gradients_function(weights, step)
        if first_order:
            gradients = [tf.stop_gradient(gradient) for gradient in gradients]
        updated, state = rule.update(gradients, state, [weights[i] for i in indices], step)
        weights = list(weights)
        for index, weight in zip(indices, updated, strict=True):
            weights[index] = weight
        return weights, state

    path = []
    for offset in range(steps):
        step = first_step + offset
        if checkpointed:
            structure = state

            def flat_step(*arguments, step=step, structure=structure):
                packed = tf.nest.pack_sequence_as(structure, list(arguments[count:]))
                new_weights, new_state = step_function(step, list(arguments[:count]), packed)
                return new_weights + tf.nest.flatten(new_state)

            results = list(recompute(flat_step)(*weights, *tf.nest.flatten(state)))
            weights = results[:count]
            state = tf.nest.pack_sequence_as(structure, results[count:])
        else:
            weights, state = step_function(step, weights, state)
        path.append(weights)
    return path, state


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
