"""Reptile: first-order meta-learning by moving toward adapted weights."""

import keras
import tensorflow as tf

from tf_meta import adaptation, rules
from tf_meta.algorithms.maml import check_steps, resolve_steps
from tf_meta.algorithms.meta_learner import MetaLearner
from tf_meta.rules.update_rule import check_positive

INNER_OPTIMIZERS = ("sgd", "adam")


@keras.saving.register_keras_serializable(package="tf_meta")
class Reptile(MetaLearner):
    """Reptile: moves the initialization toward the weights each task adapts to.

    With one episode, `train_step` adapts every task of the meta-batch by `inner_steps`
    steps of an inner optimizer (`"sgd"`, or `"adam"` with `beta_1 = 0` as in the paper)
    on minibatches of `inner_batch_size` support examples (None: the whole support set),
    averages the adapted weights over tasks, and hands the compiled optimizer the
    direction `theta - mean(theta')` as the gradient. With `SGD(learning_rate=epsilon)`
    that is exactly the paper's `theta <- theta + epsilon * (mean(theta') - theta)`; a
    `LearningRateSchedule` anneals epsilon, and any other optimizer gives "Reptile with
    Adam". The inner loop is `tf_meta.adaptation.inner_loop`, first order, with the rule
    `tf_meta.rules.Adam` or `tf_meta.rules.GradientDescent`; the meta-gradient hook
    returns each task's `theta - theta'`. The reported loss and metrics are those of the
    queries after adaptation.
    Evaluation adapts with `eval_inner_steps` and predicts the queries transductively
    (all at once, so batch normalization sees the query batch) or, with
    `transductive=False`, one at a time beside the support set, as in the paper.
    Minibatches are drawn with TensorFlow's global seed (`keras.utils.set_random_seed`).

    Args:
        model: The network (any Keras model).
        inner_learning_rate: Step size of the inner optimizer.
        inner_steps: Inner steps per task during meta-training.
        inner_optimizer: `"sgd"` or `"adam"` (Adam with `beta_1 = 0`, `beta_2 = 0.999`).
        inner_batch_size: Support examples per inner step; None uses the whole support set.
        eval_inner_steps: Inner steps during evaluation; None means `inner_steps`.
        transductive: Whether evaluation predicts all queries of a task as one batch.
        inner_loss: The support loss; None uses the compiled loss.
        **kwargs: Passed to `keras.Model` (`name`, ...).

    Raises:
        ValueError: If `inner_learning_rate` is not a finite positive number, a step count
            is negative, `inner_optimizer` is unknown, `inner_batch_size` is not positive or
            `gradient_checkpointing` is set (Reptile never differentiates through
            adaptation, so there is nothing to recompute); when a step is traced, if
            `inner_batch_size` exceeds the support set.

    References:
        Nichol, Achiam and Schulman. On First-Order Meta-Learning Algorithms.
        arXiv:1803.02999, 2018.
    """

    def __init__(
        self,
        model: keras.Model,
        inner_learning_rate: float = 0.001,
        inner_steps: int = 5,
        inner_optimizer: str = "adam",
        inner_batch_size: int | None = None,
        eval_inner_steps: int | None = None,
        transductive: bool = True,
        inner_loss=None,
        **kwargs,
    ):
        inner_learning_rate = check_positive("inner_learning_rate", inner_learning_rate)
        check_steps("inner_steps", inner_steps)
        if eval_inner_steps is not None:
            check_steps("eval_inner_steps", eval_inner_steps)
        if inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(
                f"`inner_optimizer` must be one of {INNER_OPTIMIZERS}; received "
                f"{inner_optimizer!r}."
            )
        if inner_batch_size is not None and (
            isinstance(inner_batch_size, bool)
            or not isinstance(inner_batch_size, int)
            or inner_batch_size <= 0
        ):
            raise ValueError(
                f"`inner_batch_size` must be a positive integer or None; received "
                f"{inner_batch_size!r}."
            )
        if kwargs.get("gradient_checkpointing"):
            raise ValueError(
                "`gradient_checkpointing` recomputes inner steps for a meta-gradient through "
                "adaptation; Reptile's update never differentiates through adaptation."
            )
        super().__init__(model, inner_loss=inner_loss, **kwargs)
        self.inner_learning_rate = float(inner_learning_rate)
        self.inner_steps = int(inner_steps)
        self.inner_optimizer = inner_optimizer
        self.inner_batch_size = inner_batch_size
        self.eval_inner_steps = None if eval_inner_steps is None else int(eval_inner_steps)
        self.transductive = bool(transductive)

    def adapt_task(self, task, steps=None, training=False):
        """The inner optimizer on support minibatches; gradients are never differentiated.

        Returns:
            The adapted fast weights.
        """
        steps = resolve_steps(steps, training, self.inner_steps, self.eval_inner_steps)
        examples = task.support_x.shape[0]
        batch_size = self.inner_batch_size
        if batch_size is not None and examples is not None and batch_size > examples:
            raise ValueError(
                f"`inner_batch_size`={batch_size} is larger than the support set, which has "
                f"{examples} examples."
            )
        if batch_size is not None:
            order = tf.argsort(tf.random.uniform([tf.shape(task.support_x)[0]]))

        def gradients(weights, step):
            inputs, targets = task.support_x, task.support_y
            if batch_size is not None:
                positions = (step * batch_size + tf.range(batch_size)) % tf.shape(order)[0]
                chosen = tf.gather(order, positions)
                inputs, targets = tf.gather(inputs, chosen), tf.gather(targets, chosen)
            return adaptation.loss_and_gradients(
                self.model, self.support_loss, weights, task.non_trainable_weights, inputs, targets
            )[1]

        if self.inner_optimizer == "adam":
            rule = rules.Adam(self.inner_learning_rate)
        else:
            rule = rules.GradientDescent(self.inner_learning_rate)
        path = adaptation.inner_loop(rule, task.weights, gradients, steps, first_order=True)
        return path[-1] if path else list(task.weights)

    def predict_queries(self, task, adapted, training=False):
        """Predicts queries all at once, or each beside the support set if not transductive."""
        if self.transductive:
            return super().predict_queries(task, adapted, training)

        def one_query(query):
            batch = tf.concat([task.support_x, query[None]], axis=0)
            return adaptation.predictions(self.model, adapted, task.non_trainable_weights, batch)[
                -1
            ]

        spec = self._query_output_spec(task.query_x[None])  # one task's queries
        return tf.map_fn(
            one_query, task.query_x, fn_output_signature=tf.TensorSpec(spec.shape[1:], spec.dtype)
        )

    def meta_gradient(self, task, adapted, loss, tape):
        """The direction `theta - theta'` from the task's adapted weights to the initial ones."""
        del loss, tape
        return [initial - weight for initial, weight in zip(task.weights, adapted, strict=True)] + [
            None
        ] * len(task.learned)

    def get_config(self):
        """The learner's configuration, including its hyperparameters."""
        return {
            **super().get_config(),
            "inner_learning_rate": self.inner_learning_rate,
            "inner_steps": self.inner_steps,
            "inner_optimizer": self.inner_optimizer,
            "inner_batch_size": self.inner_batch_size,
            "eval_inner_steps": self.eval_inner_steps,
            "transductive": self.transductive,
        }
