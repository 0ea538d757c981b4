"""Model-Agnostic Meta-Learning."""

import keras
import tensorflow as tf

from tf_meta import adaptation, rules
from tf_meta.algorithms.meta_learner import MetaLearner
from tf_meta.optimizers.learned_rule import LearnedRule, checked_rule
from tf_meta.rules.update_rule import check_positive


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

    The inner loop is `tf_meta.adaptation.inner_loop` with the rule `update_rule()`
    returns: `tf_meta.rules.GradientDescent`, or `tf_meta.rules.PerStepGradientDescent`
    with `per_step_learning_rates`; a subclass changes the rule by overriding it
    (`MetaSGD`).

    Three stabilizers of MAML++ (Antoniou et al. 2019) are options, each off by default:
    `per_step_learning_rates` learns one inner learning rate per adapted weight tensor
    and per inner step (LSLR; variables `step_learning_rates`, evaluation steps beyond
    `inner_steps` reuse the last rate); `multi_step_loss_steps` makes the outer loss the
    weighted sum of the query losses after every inner step, with weights that start
    uniform and are annealed over that many meta-steps toward the last step alone (MSL);
    `first_order_steps` trains first order for that many meta-steps and second order after
    (derivative-order annealing). MAML++ counts the annealing in epochs; here it is counted
    in meta-steps (the optimizer's iterations), which is the same for a fixed
    `steps_per_epoch` and needs no callback.

    `zeroing_trick=True` (Kao et al. 2022) starts every task's adaptation, in training,
    evaluation and serving, from a zero classifier head (the wrapped model's last layer):
    `adapt_task` replaces the head's initial values by zeros, so the head's variables get
    no meta-gradient and keep values that are never used. Without it, first-order
    MAML's head grows confident and wrong before adaptation, and the inner steps spend
    themselves undoing it (measured in benchmarks/RESULTS.md).

    Args:
        model: The network whose initialization is meta-learned (any Keras model).
        inner_learning_rate: Step size of the inner gradient descent (alpha in the paper).
        inner_steps: Inner steps per task during meta-training; 0 trains the network on
            the queries without adaptation (the paper's "pretrained" baseline).
        first_order: If True, treat the inner gradients as constants (first-order MAML).
        eval_inner_steps: Inner steps during evaluation and prediction; None means
            `inner_steps`.
        inner_loss: The support loss; None uses the compiled loss.
        per_step_learning_rates: Learn a rate per adapted weight tensor and inner step.
        multi_step_loss_steps: Meta-steps over which the multi-step loss is annealed to
            the last step; 0 turns it off.
        first_order_steps: Meta-steps trained first order before switching to second
            order; 0 turns it off.
        zeroing_trick: Adapt from a zero last layer, which must be a `keras.layers.Dense`.
        inner_rule: A learned update rule (`tf_meta.optimizers.LearnedRule`) to adapt with
            instead of gradient descent. Its weights become the learner's: the outer
            optimizer meta-trains the inner optimizer together with the initialization
            (`inner_learning_rate` is then unused; the rule has its own base step).
        **kwargs: Passed to `keras.Model` (`name`, ...).

    Raises:
        ValueError: If `inner_learning_rate` is not a finite positive number, a step count is
            negative or
            not an integer, `model` has no trainable weights, or `zeroing_trick` is set and
            the last layer of `model` is not a Dense layer (checked once `model` is built).

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
        Antoniou, Edwards and Storkey. How to train your MAML. ICLR 2019.
        https://arxiv.org/abs/1810.09502
        Kao, Chiu and Chen. MAML is a Noisy Contrastive Learner in Classification. ICLR
        2022. https://arxiv.org/abs/2106.15367
    """

    def __init__(
        self,
        model: keras.Model,
        inner_learning_rate: float = 0.01,
        inner_steps: int = 1,
        first_order: bool = False,
        eval_inner_steps: int | None = None,
        inner_loss=None,
        per_step_learning_rates: bool = False,
        multi_step_loss_steps: int = 0,
        first_order_steps: int = 0,
        zeroing_trick: bool = False,
        inner_rule: LearnedRule | None = None,
        **kwargs,
    ):
        inner_learning_rate = check_positive("inner_learning_rate", inner_learning_rate)
        if inner_rule is not None:
            inner_rule = checked_rule("inner_rule", inner_rule)
        if inner_rule is not None and per_step_learning_rates:
            raise ValueError("`inner_rule` and `per_step_learning_rates` exclude each other.")
        check_steps("inner_steps", inner_steps)
        if eval_inner_steps is not None:
            check_steps("eval_inner_steps", eval_inner_steps)
        check_steps("multi_step_loss_steps", multi_step_loss_steps)
        check_steps("first_order_steps", first_order_steps)
        if first_order_steps and kwargs.get("vectorize_tasks") is True:
            # Its switch of order is a `tf.cond` in each task, which `tf.vectorized_map`
            # fails to convert ("Required handle data not set").
            raise ValueError("`first_order_steps` needs the task loop (`vectorize_tasks=False`).")
        super().__init__(model, inner_loss=inner_loss, **kwargs)
        self.inner_learning_rate = inner_learning_rate
        self.inner_steps = int(inner_steps)
        self.first_order = bool(first_order)
        self.eval_inner_steps = None if eval_inner_steps is None else int(eval_inner_steps)
        self.per_step_learning_rates = bool(per_step_learning_rates)
        self.multi_step_loss_steps = int(multi_step_loss_steps)
        self.first_order_steps = int(first_order_steps)
        self.zeroing_trick = bool(zeroing_trick)
        self.inner_rule = inner_rule
        self.step_learning_rates_variables = []
        if model.built:
            self._head_variables()

    def build(self, input_shape):
        """Builds the wrapped model and, with `per_step_learning_rates`, the rates."""
        super().build(input_shape)
        if self.per_step_learning_rates:
            weights = self.model.trainable_variables
            self.step_learning_rates_variables = [
                self.add_weight(
                    shape=(max(self.inner_steps, 1),),
                    dtype=weights[index].dtype,
                    initializer=keras.initializers.Constant(self.inner_learning_rate),
                    name=f"step_learning_rates_{index}",
                )
                for index in self.adapted_indices()
            ]

    def update_rule(self) -> rules.UpdateRule:
        """The inner update rule, for the weights at `adapted_indices()`."""
        if self.inner_rule is not None:
            return self.inner_rule
        if self.per_step_learning_rates:
            return rules.PerStepGradientDescent(self.step_learning_rates_variables)
        return rules.GradientDescent(self.inner_learning_rate)

    def adapted_indices(self) -> list[int]:
        """Positions in `.model.trainable_variables` of the weights the inner loop adapts.

        MAML adapts all of them; ANIL adapts the head.
        """
        return list(range(len(self.model.trainable_variables)))

    def _vectorization_obstacle(self):
        """`first_order_steps`, whose switch of order `tf.vectorized_map` cannot convert."""
        if self.first_order_steps:
            return "first_order_steps (a tf.cond in each task)"
        return super()._vectorization_obstacle()

    def adapt_task(self, task, steps=None, training=False):
        """Gradient descent on the support loss, differentiable unless first order.

        The inner gradients are stopped when evaluating, with `first_order`, and, with
        `first_order_steps`, while the optimizer has taken fewer steps than that.

        Returns:
            The adapted fast weights; in training under the multi-step loss, a dict with
            the fast weights after each step (`"path"`) and the queries' network inputs.
        """
        steps = resolve_steps(steps, training, self.inner_steps, self.eval_inner_steps)
        weights = self._zero_head(task.weights, self.model.trainable_variables)
        network, start, non_trainable_start, body = self._inner_network()
        inputs = _network_inputs(body, weights[:start], task, task.support_x)
        indices = self.adapted_indices()

        def gradients(current, step):
            del step
            return adaptation.loss_and_gradients(
                network,
                self.support_loss,
                current[start:],
                task.non_trainable_weights[non_trainable_start:],
                inputs,
                task.support_y,
                [index - start for index in indices],
            )[1]

        def descend(first_order):
            return adaptation.inner_loop(
                self.update_rule(),
                weights,
                gradients,
                steps,
                indices=indices,
                first_order=first_order,
                checkpointed=self.gradient_checkpointing,
            )

        if self.first_order or not training:
            path = descend(True)
        elif not (self.first_order_steps and steps and self.optimizer is not None):
            path = descend(False)
        else:
            path = tf.cond(
                self.optimizer.iterations < self.first_order_steps,
                lambda: descend(True),
                lambda: descend(False),
            )
        if training and self._multi_step_loss():
            return {
                "path": path,
                "queries": _network_inputs(body, weights[:start], task, task.query_x),
            }
        return path[-1] if path else weights

    def predict_queries(self, task, adapted, training=False):
        """The queries' predictions with the adapted weights (after the last inner step)."""
        if not isinstance(adapted, dict):
            return super().predict_queries(task, adapted, training)
        return self._step_predictions(task, adapted, adapted["path"][-1])

    def task_loss(self, task, adapted, predictions, query_y, sample_weight=None):
        """The query loss; under the multi-step loss, its annealed sum over inner steps."""
        if not isinstance(adapted, dict):
            return super().task_loss(task, adapted, predictions, query_y, sample_weight)
        losses = [
            super(MAML, self).task_loss(
                task,
                adapted,
                self._step_predictions(task, adapted, weights),
                query_y,
                sample_weight,
            )
            for weights in adapted["path"][:-1]
        ]
        losses.append(super().task_loss(task, adapted, predictions, query_y, sample_weight))
        return tf.reduce_sum(self.multi_step_loss_weights() * tf.stack(losses))

    def _step_predictions(self, task, adapted, weights):
        """The predictions of the queries' network inputs under the multi-step loss."""
        network, start, non_trainable_start, _ = self._inner_network()
        return adaptation.at_least_float32(
            adaptation.predictions(
                network,
                weights[start:],
                task.non_trainable_weights[non_trainable_start:],
                adapted["queries"],
            )
        )

    def _inner_network(self):
        """What runs between the fast weights and the predictions in the inner loop.

        Returns:
            `(network, start, non_trainable_start, body)`: `network` reads the fast weights
            from position `start` on and the non-trainable values from position
            `non_trainable_start` on, and maps the body's outputs (or, if `body` is None,
            the inputs) to predictions. MAML returns the whole model and no body; ANIL
            returns its head and body, so that the body runs once per task.
        """
        return self.model, 0, 0, None

    def multi_step_loss_weights(self) -> tf.Tensor:
        """Weights of the query losses after each inner step (MAML++'s annealing).

        They start at `1 / inner_steps` each; over `multi_step_loss_steps` meta-steps the
        non-final weights fall linearly to `0.03 / inner_steps` and the final one rises to
        take the rest.

        Returns:
            A float32 vector of `inner_steps` weights summing to 1.
        """
        steps = self.inner_steps
        progress = tf.minimum(
            tf.cast(self.optimizer.iterations, tf.float32) / self.multi_step_loss_steps, 1.0
        )
        floor = 0.03 / steps
        earlier = tf.fill([steps - 1], tf.maximum(1.0 / steps - progress / steps, floor))
        return tf.concat([earlier, [1.0 - tf.reduce_sum(earlier)]], axis=0)

    def _multi_step_loss(self) -> bool:
        """Whether the outer loss is MAML++'s multi-step loss (more than one inner step)."""
        return bool(self.multi_step_loss_steps and self.inner_steps > 1)

    def _head_variables(self) -> list:
        """The variables `zeroing_trick` replaces by zeros: the last layer's, or none.

        Raises:
            ValueError: If `zeroing_trick` is set and the last layer is not Dense.
        """
        if not self.zeroing_trick:
            return []
        head = self.model.layers[-1] if self.model.layers else None
        if not isinstance(head, keras.layers.Dense):
            raise ValueError(
                "`zeroing_trick` needs a model whose last layer is a keras.layers.Dense (the "
                f"classifier head); the last layer of {self.model.name} is {head!r}."
            )
        return list(head.trainable_variables)

    def _zero_head(self, tensors, variables) -> list:
        """`tensors`, one per entry of `variables`, with zeros for `_head_variables()`'s."""
        head = self._head_variables()
        return [
            tf.zeros(variable.shape, variable.dtype)
            if any(variable is weight for weight in head)
            else tensor
            for tensor, variable in zip(tensors, variables, strict=True)
        ]

    def get_config(self):
        """The learner's configuration, including its hyperparameters."""
        return {
            **super().get_config(),
            "inner_learning_rate": self.inner_learning_rate,
            "inner_steps": self.inner_steps,
            "first_order": self.first_order,
            "eval_inner_steps": self.eval_inner_steps,
            "per_step_learning_rates": self.per_step_learning_rates,
            "multi_step_loss_steps": self.multi_step_loss_steps,
            "first_order_steps": self.first_order_steps,
            "zeroing_trick": self.zeroing_trick,
            "inner_rule": None
            if self.inner_rule is None
            else keras.saving.serialize_keras_object(self.inner_rule),
        }


def _network_inputs(body, body_weights, task, inputs):
    """`inputs`, or the body's outputs for them when the inner network has a body."""
    if body is None:
        return inputs
    return adaptation.predictions(
        body, body_weights, task.non_trainable_weights[: len(body.non_trainable_variables)], inputs
    )


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
