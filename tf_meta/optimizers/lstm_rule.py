"""The coordinate-wise LSTM update rule of Andrychowicz et al. (2016)."""

import keras
import numpy as np
import tensorflow as tf

from tf_meta.optimizers.learned_rule import LearnedRule
from tf_meta.rules.update_rule import check_positive_integer


@keras.saving.register_keras_serializable(package="tf_meta")
class LSTMRule(LearnedRule):
    """A two-layer LSTM, shared by every coordinate, that reads gradients and emits steps.

    Each coordinate has its own LSTM state (the rule's state: `h` and `c` of both layers,
    `4 * hidden_units` numbers per coordinate). The gradient is preprocessed as in the
    paper: `(log|g| / p, sign(g))` when `|g| >= exp(-p)`, else `(-1, exp(p) g)`, which keeps
    the inputs in a small range whatever the gradients' scale. A linear layer maps the top
    LSTM output to the step direction; the weight moves by `-learning_rate * direction`
    (the paper's output scale is 0.1, the default learning rate here).

    Args:
        learning_rate: The output scale.
        training_steps: The length of the runs the rule is used for (the LSTM does not read
            it; kept for the common interface).
        hidden_units: The width of both LSTM layers.
        preprocessing: The paper's `p`.
        output_scale: The initial scale of the output layer's weights.
        seed: Seed of the initial weights.
        **kwargs: Passed to `LearnedRule`.

    References:
        Andrychowicz, Denil, Gomez, Hoffman, Pfau, Schaul, Shillingford and de Freitas.
        Learning to learn by gradient descent by gradient descent. NeurIPS 2016.
    """

    def __init__(
        self,
        learning_rate: float = 0.1,
        training_steps: int = 1000,
        hidden_units: int = 20,
        preprocessing: float = 10.0,
        output_scale: float = 0.1,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, training_steps=training_steps, **kwargs)
        self.hidden_units = check_positive_integer("hidden_units", hidden_units)
        self.preprocessing = float(preprocessing)
        self.output_scale = float(output_scale)
        self.seed = seed
        initializer = keras.initializers.GlorotUniform(seed=seed)
        self.cells = [
            keras.layers.LSTMCell(
                hidden_units,
                kernel_initializer=initializer,
                recurrent_initializer=keras.initializers.Orthogonal(seed=seed + 1),
                dtype=self.dtype_policy,
            )
            for _ in range(2)
        ]
        self.output_layer = keras.layers.Dense(1, dtype=self.dtype_policy)
        self.cells[0].build((None, 2))
        self.cells[1].build((None, hidden_units))
        self.output_layer.build((None, hidden_units))
        generator = np.random.default_rng(seed)
        self.output_layer.kernel.assign(
            output_scale * generator.uniform(-1.0, 1.0, (hidden_units, 1)) / np.sqrt(hidden_units)
        )
        self.built = True

    def initial_state(self, weight):
        """Zero `h` and `c` of both layers, `[coordinates, hidden_units]` each."""
        zeros = tf.zeros([tf.size(weight), self.hidden_units], self.compute_dtype)
        return (zeros, zeros, zeros, zeros)

    def preprocess(self, gradient):
        """The paper's gradient preprocessing, `[coordinates, 2]`."""
        gradient = tf.reshape(tf.cast(gradient, self.compute_dtype), [-1])
        magnitude = tf.abs(gradient)
        large = magnitude >= np.exp(-self.preprocessing)
        logarithm = tf.math.log(tf.maximum(magnitude, np.exp(-self.preprocessing)))
        first = tf.where(large, logarithm / self.preprocessing, -tf.ones_like(gradient))
        second = tf.where(large, tf.sign(gradient), np.exp(self.preprocessing) * gradient)
        return tf.stack([first, second], axis=-1)

    def direction(self, gradient, state, weight, step):
        """One LSTM step per coordinate; the output layer's value is the direction."""
        del step
        first_h, first_c, second_h, second_c = state
        output, (first_h, first_c) = self.cells[0](self.preprocess(gradient), [first_h, first_c])
        output, (second_h, second_c) = self.cells[1](output, [second_h, second_c])
        direction = tf.reshape(self.output_layer(output), tf.shape(weight))
        return tf.cast(direction, weight.dtype), (first_h, first_c, second_h, second_c)

    def get_config(self):
        """The rule's hyperparameters (its weights are saved as the layer's variables)."""
        config = super().get_config()
        config.update(
            hidden_units=self.hidden_units,
            preprocessing=self.preprocessing,
            output_scale=self.output_scale,
            seed=self.seed,
        )
        return config
