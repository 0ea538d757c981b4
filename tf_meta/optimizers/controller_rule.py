"""A controller that sets the learning rate and momentum of SGD from the training state."""

import keras
import numpy as np
import tensorflow as tf

from tf_meta.optimizers.learned_rule import LearnedRule
from tf_meta.rules.update_rule import check_positive_integer

FAST_DECAY = 0.9
SLOW_DECAY = 0.99
# The controller's inputs for each weight tensor, in order.
FEATURES = ("gradient_trend_fast", "gradient_trend_slow", "fraction", "previous_log_multiplier")
MAXIMUM_LOG_MULTIPLIER = 5.0


@keras.saving.register_keras_serializable(package="tf_meta")
class ControllerRule(LearnedRule):
    """SGD with momentum whose learning rate and momentum a small network sets every step.

    The model-based meta-learner in its plainest form. For each weight tensor, the network
    reads features of the training state: how the log root-mean-square gradient compares
    with its fast (0.9) and slow (0.99) moving averages (is the gradient growing or
    shrinking), the fraction of training done and its own previous output. It outputs a
    log multiplier `a` of the base learning rate (bounded to +-5 by a tanh) and a momentum
    `mu = sigmoid(b)`; the step is `velocity = mu * velocity + g`, `w -= learning_rate *
    exp(a) * velocity`. The outputs are interpretable: `hyperparameters(state)` reads them,
    and plotted over a run they are the learned schedule. An untrained controller is SGD
    with momentum 0.9 at the base learning rate (its output layer starts at zero).

    It trains by gradient through the unroll (`OptimizerMetaLearner`'s
    `truncated_backprop`), or by reinforcement learning (`estimator="reinforce"`): the
    state started by `seeded_init` with an exploration scale samples each step's action
    `(a, b)` from a Gaussian around the network's output and accumulates its log-probability,
    and the meta-learner weights the log-probabilities by the loss decrease (REINFORCE with
    a mean baseline, Williams 1992; the training-as-MDP view of Xu et al. 2019). A state
    from `init` (a Keras optimizer's) never explores.

    Args:
        learning_rate: The base learning rate.
        training_steps: The length of the runs the rule is used for.
        hidden_units: The width of the network's hidden layer.
        seed: Seed of the initial weights.
        **kwargs: Passed to `LearnedRule`.

    References:
        Almeida, Winter, Tang and Zaremba. A Generalizable Approach to Learning Optimizers.
        arXiv:2106.00958, 2021.
        Xu, Dai, Kemp and Metz. Learning an Adaptive Learning Rate Schedule.
        arXiv:1909.09712, 2019.
        Williams. Simple statistical gradient-following algorithms for connectionist
        reinforcement learning. Machine Learning 1992.
    """

    def __init__(
        self,
        learning_rate: float = 0.01,
        training_steps: int = 1000,
        hidden_units: int = 16,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, training_steps=training_steps, **kwargs)
        self.hidden_units = check_positive_integer("hidden_units", hidden_units)
        self.seed = seed
        self.hidden = keras.layers.Dense(
            hidden_units,
            activation="tanh",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            dtype=self.dtype_policy,
        )
        self.output_layer = keras.layers.Dense(
            2, kernel_initializer="zeros", dtype=self.dtype_policy
        )
        self.hidden.build((None, len(FEATURES)))
        self.output_layer.build((None, hidden_units))
        self.output_layer.bias.assign(np.array([0.0, np.log(0.9 / 0.1)]))
        self.built = True

    def initial_state(self, weight):
        """Zero velocity and trends; no exploration."""
        return self._state(weight, tf.zeros([2], tf.int32), 0.0)

    def seeded_init(self, weights, seed, exploration: float):
        """`init`, exploring: actions drawn around the outputs with std `exploration`.

        Args:
            weights: The weight tensors.
            seed: A `[2]` integer seed; tensor `i` draws from `fold_in(seed, i)`.
            exploration: The standard deviation of the actions around the outputs.

        Returns:
            The rule's state, one per tensor.
        """
        seed = tf.cast(seed, tf.int32)
        return [
            self._state(weight, tf.random.experimental.stateless_fold_in(seed, index), exploration)
            for index, weight in enumerate(weights)
        ]

    def _state(self, weight, seed, exploration):
        dtype = self.compute_dtype
        scalar = tf.zeros((), dtype)
        # velocity, fast and slow trends, previous log multiplier and momentum, the
        # exploration scale, its seed and the accumulated log-probability of the actions.
        return (
            tf.zeros_like(tf.cast(weight, dtype)),
            scalar,
            scalar,
            scalar,
            scalar + 0.9,
            scalar + exploration,
            seed,
            scalar,
        )

    def hyperparameters(self, state) -> tuple[tf.Tensor, tf.Tensor]:
        """`(learning rate, momentum)` of the last step of one tensor's `state`."""
        return self.learning_rate * tf.exp(state[3]), state[4]

    def log_probability(self, state) -> tf.Tensor:
        """The log-probability of the actions taken so far, summed over the tensors."""
        return tf.add_n([tensor_state[7] for tensor_state in state])

    def direction(self, gradient, state, weight, step):
        """`exp(a) * velocity`, with `a` and the momentum from the network."""
        velocity, fast, slow, previous, _, exploration, seed, log_probability = state
        dtype = self.compute_dtype
        gradient = tf.cast(gradient, dtype)
        log_rms = 0.5 * tf.math.log(tf.reduce_mean(tf.square(gradient)) + 1e-30)
        first = tf.equal(step, 0)
        fast = tf.where(first, log_rms, FAST_DECAY * fast + (1 - FAST_DECAY) * log_rms)
        slow = tf.where(first, log_rms, SLOW_DECAY * slow + (1 - SLOW_DECAY) * log_rms)
        features = tf.stack([log_rms - fast, log_rms - slow, self.fraction(step), previous])
        outputs = self.output_layer(self.hidden(features[None]))[0]
        noise = tf.random.stateless_normal([2], seed, dtype=dtype)
        # Sampled actions are constants; their log-probability depends on the outputs.
        sampled = tf.stop_gradient(outputs + exploration * noise)
        log_probability += tf.where(
            exploration > 0,
            -tf.reduce_sum(tf.square(sampled - outputs)) / (2 * tf.square(exploration) + 1e-30),
            tf.zeros((), dtype),
        )
        actions = tf.where(exploration > 0, sampled, outputs)
        log_multiplier = MAXIMUM_LOG_MULTIPLIER * tf.tanh(actions[0] / MAXIMUM_LOG_MULTIPLIER)
        momentum = tf.sigmoid(actions[1])
        velocity = momentum * velocity + gradient
        seed = seed + tf.constant([0, 1], tf.int32)
        state = (velocity, fast, slow, log_multiplier, momentum, exploration, seed, log_probability)
        return tf.cast(tf.exp(log_multiplier) * velocity, weight.dtype), state

    def get_config(self):
        """The rule's hyperparameters (its weights are saved as the layer's variables)."""
        config = super().get_config()
        config.update(hidden_units=self.hidden_units, seed=self.seed)
        return config
