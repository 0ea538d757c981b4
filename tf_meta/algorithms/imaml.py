"""iMAML: MAML with implicit gradients."""

import keras
import tensorflow as tf

from tf_meta import adaptation, rules
from tf_meta.algorithms.maml import check_steps, resolve_steps
from tf_meta.algorithms.meta_learner import MetaLearner
from tf_meta.rules.update_rule import check_positive


@keras.saving.register_keras_serializable(package="tf_meta")
class IMAML(MetaLearner):
    """Implicit MAML: the meta-gradient of a proximal inner problem, by conjugate gradient.

    Each task's adaptation approximately solves the proximal problem
    `phi* = argmin_phi L_support(phi) + regularization / 2 * ||phi - theta||^2` by
    `inner_steps` steps of gradient descent from `theta` (the initial weights). At the
    solution, `d phi* / d theta = (I + H / regularization)^-1` with `H` the Hessian of the
    support loss at `phi*`, so the meta-gradient is `(I + H / regularization)^-1 g`, `g`
    being the gradient of the query loss at `phi*` (`meta_gradient`). It is found by
    `conjugate_gradient_steps` steps of conjugate gradient on Hessian-vector products
    (double backpropagation through the support loss at `phi*`). Nothing is differentiated
    through the inner loop, so the memory of a meta-step does not grow with
    `inner_steps`, unlike second-order MAML's.

    The learner is written against `MetaLearner`'s contract only: `adapt_task` runs
    `tf_meta.adaptation.inner_loop` with `tf_meta.rules.GradientDescent` on the proximal
    loss, and `meta_gradient` solves the linear system; prediction and loss are the
    defaults.

    Args:
        model: The network whose initialization is meta-learned (any Keras model).
        inner_learning_rate: Step size of the inner gradient descent.
        inner_steps: Inner steps per task during meta-training.
        regularization: The proximal strength (lambda in the paper), a finite positive
            number: larger keeps `phi*` closer to `theta`.
        conjugate_gradient_steps: Conjugate-gradient iterations per task (the paper uses 5).
        eval_inner_steps: Inner steps during evaluation and prediction; None means
            `inner_steps`.
        inner_loss: The support loss; None uses the compiled loss.
        **kwargs: Passed to `keras.Model` (`name`, ...).

    Raises:
        ValueError: Naming the argument, if `inner_learning_rate` or `regularization` is not
            a finite positive number or a step count is not a non-negative integer
            (`conjugate_gradient_steps` must be positive), or if `gradient_checkpointing`
            is set (nothing is differentiated through adaptation).

    References:
        Rajeswaran, Finn, Kakade and Levine. Meta-Learning with Implicit Gradients.
        NeurIPS 2019. https://arxiv.org/abs/1909.04630
    """

    def __init__(
        self,
        model: keras.Model,
        inner_learning_rate: float = 0.1,
        inner_steps: int = 10,
        regularization: float = 2.0,
        conjugate_gradient_steps: int = 5,
        eval_inner_steps: int | None = None,
        inner_loss=None,
        **kwargs,
    ):
        inner_learning_rate = check_positive("inner_learning_rate", inner_learning_rate)
        regularization = check_positive("regularization", regularization)
        check_steps("inner_steps", inner_steps)
        check_steps("conjugate_gradient_steps", conjugate_gradient_steps)
        if conjugate_gradient_steps == 0:
            raise ValueError("`conjugate_gradient_steps` must be positive; received 0.")
        if eval_inner_steps is not None:
            check_steps("eval_inner_steps", eval_inner_steps)
        if kwargs.get("gradient_checkpointing"):
            raise ValueError(
                "`gradient_checkpointing` recomputes inner steps for a meta-gradient through "
                "adaptation; iMAML's implicit gradient never differentiates through it."
            )
        super().__init__(model, inner_loss=inner_loss, **kwargs)
        self.inner_learning_rate = inner_learning_rate
        self.inner_steps = int(inner_steps)
        self.regularization = regularization
        self.conjugate_gradient_steps = int(conjugate_gradient_steps)
        self.eval_inner_steps = None if eval_inner_steps is None else int(eval_inner_steps)

    def adapt_task(self, task, steps=None, training=False):
        """Gradient descent on the proximal support loss, outside every tape.

        Returns:
            `phi*`, equal in value to the inner loop's result and connected to the initial
            weights only by an identity, so that the query loss's gradient at `phi*` can be
            taken without recording the inner loop.
        """
        steps = resolve_steps(steps, training, self.inner_steps, self.eval_inner_steps)
        anchor = [tf.stop_gradient(weight) for weight in task.weights]

        def gradients(weights, step):
            del step
            support = adaptation.loss_and_gradients(
                self.model,
                self.support_loss,
                weights,
                task.non_trainable_weights,
                task.support_x,
                task.support_y,
            )[1]
            return [
                gradient + self.regularization * (weight - start)
                for gradient, weight, start in zip(support, weights, anchor, strict=True)
            ]

        rule = rules.GradientDescent(self.inner_learning_rate)
        path = adaptation.inner_loop(rule, anchor, gradients, steps, first_order=True)
        solution = path[-1] if path else anchor
        return [
            weight + tf.stop_gradient(value - weight)
            for weight, value in zip(task.weights, solution, strict=True)
        ]

    def meta_gradient(self, task, adapted, loss, tape):
        """`(I + H / regularization)^-1 g` by conjugate gradient (see the class docstring)."""
        query_gradients = tape.gradient(
            loss, adapted, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        solution = [tf.stop_gradient(weight) for weight in adapted]

        def hessian_vector_product(vectors):
            with tf.GradientTape() as outer:
                outer.watch(solution)
                _, gradients = adaptation.loss_and_gradients(
                    self.model,
                    self.support_loss,
                    solution,
                    task.non_trainable_weights,
                    task.support_x,
                    task.support_y,
                )
                product = tf.add_n(
                    [
                        tf.reduce_sum(gradient * tf.cast(vector, gradient.dtype))
                        for gradient, vector in zip(gradients, vectors, strict=True)
                    ]
                )
            return outer.gradient(
                product, solution, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )

        def system(vectors):  # (I + H / regularization) applied to `vectors`
            products = hessian_vector_product(vectors)
            return [
                vector + tf.cast(product, vector.dtype) / self.regularization
                for vector, product in zip(vectors, products, strict=True)
            ]

        def dot(first, second):
            return tf.add_n(
                [
                    tf.reduce_sum(tf.cast(a * b, tf.float64))
                    for a, b in zip(first, second, strict=True)
                ]
            )

        def plus(first, scale, second):  # first + scale * second
            return [a + tf.cast(scale, a.dtype) * b for a, b in zip(first, second, strict=True)]

        estimate = [tf.zeros_like(gradient) for gradient in query_gradients]
        residual = list(query_gradients)
        direction = list(residual)
        residual_norm = dot(residual, residual)
        for _ in range(self.conjugate_gradient_steps):
            applied = system(direction)
            step = tf.math.divide_no_nan(residual_norm, dot(direction, applied))
            estimate = plus(estimate, step, direction)
            residual = plus(residual, -step, applied)
            new_norm = dot(residual, residual)
            direction = plus(residual, tf.math.divide_no_nan(new_norm, residual_norm), direction)
            residual_norm = new_norm
        return estimate + [None] * len(task.learned)

    def get_config(self):
        """The learner's configuration, including its hyperparameters."""
        return {
            **super().get_config(),
            "inner_learning_rate": self.inner_learning_rate,
            "inner_steps": self.inner_steps,
            "regularization": self.regularization,
            "conjugate_gradient_steps": self.conjugate_gradient_steps,
            "eval_inner_steps": self.eval_inner_steps,
        }
