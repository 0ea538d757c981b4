"""The pieces of a TRPO step: conjugate gradient and the Gaussian policies' KL divergence."""

from collections.abc import Callable

import tensorflow as tf


def dot(first: list, second: list) -> tf.Tensor:
    """The inner product of two lists of tensors, as if each list were one flat vector."""
    return tf.add_n([tf.reduce_sum(a * b) for a, b in zip(first, second, strict=True)])


def conjugate_gradient(
    product: Callable[[list], list], vector: list, iterations: int = 10, tolerance: float = 1e-10
) -> list:
    """Solves `A x = vector` for a symmetric positive-definite `A` given by `product(x) = A x`.

    The iterations run in a `tf.while_loop`, each calling `product` once; they stop early
    when the squared residual falls below `tolerance` (Shewchuk 1994; Schulman et al. 2015
    use 10 iterations).

    Args:
        product: The matrix-vector product on lists of tensors.
        vector: The right-hand side, a list of tensors.
        iterations: The most iterations.
        tolerance: The squared residual norm at which to stop.

    Returns:
        The approximate solution, shaped like `vector`.
    """
    solution = [tf.zeros_like(v) for v in vector]
    residual = list(vector)
    direction = list(vector)
    squared = dot(residual, residual)

    def condition(step, solution, residual, direction, squared):
        return tf.logical_and(step < iterations, squared > tolerance)

    def body(step, solution, residual, direction, squared):
        product_direction = product(direction)
        alpha = squared / dot(direction, product_direction)
        solution = [x + alpha * d for x, d in zip(solution, direction, strict=True)]
        residual = [r - alpha * p for r, p in zip(residual, product_direction, strict=True)]
        new_squared = dot(residual, residual)
        beta = new_squared / squared
        direction = [r + beta * d for r, d in zip(residual, direction, strict=True)]
        return step + 1, solution, residual, direction, new_squared

    _, solution, _, _, _ = tf.while_loop(
        condition, body, (tf.constant(0), solution, residual, direction, squared)
    )
    return solution


def gaussian_kl(means, log_std, other_means, other_log_std) -> tf.Tensor:
    """KL(N(means, std) || N(other_means, other_std)) per row, summed over action axes."""
    variance, other_variance = tf.exp(2 * log_std), tf.exp(2 * other_log_std)
    terms = (
        other_log_std
        - log_std
        + (variance + tf.square(means - other_means)) / (2 * other_variance)
        - 0.5
    )
    return tf.reduce_sum(terms, axis=-1)
