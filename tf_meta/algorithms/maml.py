"""Model-Agnostic Meta-Learning."""

import keras
import tensorflow as tf

from tf_meta import adaptation
from tf_meta.algorithms.meta_learner import MetaLearner


@keras.saving.register_keras_serializable(package="tf_meta")
class MAML(MetaLearner):
    """Model-Agnostic Meta-Learning: learns an initialization that adapts in a few steps.

    For each task, the inner loop takes `inner_steps` steps of gradient descent on the
    support loss, starting from the wrapped model's weights; the outer loss is the query
    loss of the adapted weights, and the compiled optimizer updates the initial weights
    with its gradient. By default that gradient is exact (second order): the inner
    gradients are computed on a `tf.GradientTape` nested inside the outer one, so the
    outer gradient flows through them. `first_order=True` stops the inner gradients
    (FOMAML), which drops the Hessian-vector terms.

    Evaluation (`evaluate`, `predict`, `adapt`) adapts with `eval_inner_steps` steps, which
    may exceed the training steps (the paper trains sinusoid regression with 1 step and
    tests with up to 10). Batch normalization is transductive: see `MetaLearner`.

    Args:
        model: The network whose initialization is meta-learned (any Keras model).
        inner_learning_rate: Step size of the inner gradient descent (alpha in the paper).
        inner_steps: Inner steps per task during meta-training; 0 trains the network on
            the queries without adaptation (the paper's "pretrained" baseline).
        first_order: If True, treat the inner gradients as constants (first-order MAML).
        eval_inner_steps: Inner steps during evaluation and prediction; None means
            `inner_steps`.
        inner_loss: The support loss; None uses the compiled loss.
        **kwargs: Passed to `keras.Model` (`name`, ...).

    Raises:
        ValueError: If `inner_learning_rate` is not positive, a step count is negative or
            not an integer, or `model` has no trainable weights.

    Example:
        ```python
        network = tf_meta.models.mlp(input_shape=(1,), hidden_units=(40, 40), outputs=1)
        learner = tf_meta.MAML(network, inner_learning_rate=0.01, eval_inner_steps=10)
        learner.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        learner.fit(tf_meta.data.sinusoid(shots=10, meta_batch_size=25), steps_per_epoch=1000)
        ```

    References:
        Finn, Abbeel and Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep
        Networks. ICML 2017. https://arxiv.org/abs/1703.03400
    """

    def __init__(
        self,
        model: keras.Model,
        inner_learning_rate: float = 0.01,
        inner_steps: int = 1,
        first_order: bool = False,
        eval_inner_steps: int | None = None,
        inner_loss=None,
        **kwargs,
    ):
        if not inner_learning_rate > 0:
            raise ValueError(
                f"`inner_learning_rate` must be positive; received {inner_learning_rate!r}."
            )
        check_steps("inner_steps", inner_steps)
        if eval_inner_steps is not None:
            check_steps("eval_inner_steps", eval_inner_steps)
        super().__init__(model, inner_loss=inner_loss, **kwargs)
        self.inner_learning_rate = float(inner_learning_rate)
        self.inner_steps = int(inner_steps)
        self.first_order = bool(first_order)
        self.eval_inner_steps = None if eval_inner_steps is None else int(eval_inner_steps)

    def adapt_weights(
        self,
        trainable_values,
        non_trainable_values,
        support_x,
        support_y,
        steps=None,
        training=False,
    ):
        """Gradient descent on the support loss, differentiable unless first order.

        See `MetaLearner.adapt_weights` for the arguments.
        """
        if steps is None:
            steps = (
                self.inner_steps
                if training or self.eval_inner_steps is None
                else (self.eval_inner_steps)
            )
        check_steps("steps", steps)
        stop_inner_gradients = self.first_order or not training
        indices = self.adapted_indices()
        weights = list(trainable_values)
        for step in range(steps):
            _, gradients = adaptation.loss_and_gradients(
                self.model,
                self.support_loss,
                weights,
                non_trainable_values,
                support_x,
                support_y,
                indices,
            )
            if stop_inner_gradients:
                gradients = [tf.stop_gradient(gradient) for gradient in gradients]
            updated = adaptation.gradient_descent_step(
                [weights[index] for index in indices], gradients, self.step_learning_rates(step)
            )
            for index, weight in zip(indices, updated, strict=True):
                weights[index] = weight
        return weights

    def adapted_indices(self) -> list[int]:
        """Positions in `.model.trainable_variables` of the weights the inner loop adapts.

        MAML adapts all of them; subclasses may adapt fewer (ANIL adapts the head).
        """
        return list(range(len(self.model.trainable_variables)))

    def step_learning_rates(self, step: int):
        """The inner learning rate(s) of inner step `step` for the adapted weights.

        Args:
            step: The inner step, from 0.

        Returns:
            A scalar for all adapted weights, or one tensor per adapted weight.
        """
        del step
        return self.inner_learning_rate

    def get_config(self):
        """The learner's configuration, including its hyperparameters."""
        return {
            **super().get_config(),
            "inner_learning_rate": self.inner_learning_rate,
            "inner_steps": self.inner_steps,
            "first_order": self.first_order,
            "eval_inner_steps": self.eval_inner_steps,
        }


def resolve_steps(steps, training: bool, inner_steps: int, eval_inner_steps: int | None) -> int:
    """The number of inner steps: `steps` if given, else the training or evaluation default.

    Raises:
        ValueError: If the result is not a non-negative integer.
    """
    if steps is None:
        steps = inner_steps if training or eval_inner_steps is None else eval_inner_steps
    check_steps("steps", steps)
    return steps


def check_steps(name: str, value) -> None:
    """Raises a ValueError naming `name` unless `value` is a non-negative integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer; received {value!r}.")
