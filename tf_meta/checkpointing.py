"""Gradient checkpointing that keeps the nested tapes of second-order meta-learning."""

from collections.abc import Callable

import tensorflow as tf


def recompute(function: Callable) -> Callable:
    """Wraps `function` so that its gradient recomputes it instead of storing its activations.

    The forward pass runs `function` and keeps only its inputs; the backward pass runs it
    again under a tape and differentiates that run (Chen et al. 2016). Unlike
    `tf.recompute_grad`, which runs the forward pass with every tape stopped, tapes that
    `function` opens itself keep recording, so an inner loop that takes gradients (MAML's)
    still adapts in the forward pass and stays differentiable in the backward pass.
    Variables that `function` reads (learned inner learning rates) get their gradients too.

    Args:
        function: A function of tensors returning a tensor or a nest of tensors.

    Returns:
        A function with the same arguments and results.

    References:
        Chen, Xu, Zhang and Guestrin. Training Deep Nets with Sublinear Memory Cost.
        arXiv:1604.06174, 2016.
    """

    @tf.autograph.experimental.do_not_convert
    @tf.custom_gradient
    def recomputed(*arguments):
        def gradient(*upstream, variables=None):
            floating = [argument for argument in arguments if argument.dtype.is_floating]
            variables = list(variables or [])
            with tf.GradientTape() as tape:
                tape.watch(floating)
                again = function(*arguments)
            gradients = tape.gradient(
                tf.nest.flatten(again),
                floating + variables,
                output_gradients=list(upstream),
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            of_floating = iter(gradients[: len(floating)])
            return [
                next(of_floating) if argument.dtype.is_floating else None for argument in arguments
            ], gradients[len(floating) :]

        return function(*arguments), gradient

    return recomputed
