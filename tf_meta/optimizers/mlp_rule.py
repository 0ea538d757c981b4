"""A per-coordinate MLP update rule (Metz et al. 2019, 2022)."""

import keras
import numpy as np
import tensorflow as tf

from tf_meta.optimizers.learned_rule import LearnedRule

MOMENTUM_DECAYS = (0.5, 0.9, 0.99, 0.999)
SECOND_MOMENT_DECAY = 0.999
EPSILON = 1e-8
# The step multiplier exp(magnitude) is kept within exp(+-5) by a tanh (smooth, unlike a clip).
MAXIMUM_MAGNITUDE = 5.0
# The inputs of the network for every coordinate, in order (see `MLPRule`).
FEATURES = (
    ("gradient",)
    + tuple(f"momentum_{decay}" for decay in MOMENTUM_DECAYS)
    + ("gradient_over_rms",)
    + tuple(f"momentum_{decay}_over_rms" for decay in MOMENTUM_DECAYS)
    + ("weight", "fraction")
)
# The outputs, in order: `direction = exp(magnitude) * (scale * scaled + free)`.
OUTPUTS = ("scaled", "free", "magnitude")


@keras.saving.register_keras_serializable(package="tf_meta")
class MLPRule(LearnedRule):
    """A small MLP, shared by every coordinate, that maps optimizer features to a step.

    For each coordinate of a weight tensor the rule keeps momenta `m_b` at the decays
    `MOMENTUM_DECAYS` and a second moment `v` (decay 0.999, bias-corrected as `v_hat`), and
    feeds the network the features `FEATURES`: the gradient and the momenta divided by
    `scale`, the root mean square of `v_hat` over the tensor (so that the rule sees the same
    inputs whatever the gradients' scale, as learned_optimization's MLP rule normalizes its
    inputs); the gradient and momenta divided by `sqrt(v_hat)` (Adam's normalized
    directions); the weight divided by its root mean square over the tensor; and the
    fraction of training done. The network outputs `scaled`, `free` and `magnitude`, and
    the step direction is `exp(magnitude) * (scale * scaled + free)`: the `scaled` output
    is in the gradient's units, so the rule can be plain SGD or SGD with momentum exactly,
    and the `free` output is scale-free like Adam's step. `magnitude` passes through
    `5 tanh(magnitude / 5)`, so that a rule early in meta-training cannot take a step more
    than 150 times its base step.

    An untrained rule is Adam (beta_1 0.9, beta_2 0.999, no bias correction of the first
    moment) plus a small residual: the first units of both hidden layers pass the feature
    `momentum_0.9_over_rms` through to `free` (ReLU(x) - ReLU(-x) = x), the other units start
    random, and the output weights of the others start at `output_scale` times a
    Glorot-uniform draw, so that meta-training starts from a sane optimizer (the role of the
    small output scales of Metz et al.).

    Args:
        learning_rate: The base step size.
        training_steps: The length of the runs the rule is used for.
        hidden_units: The widths of the hidden layers (at least one layer of at least 2).
        output_scale: The initial scale of the learned part of the outputs.
        seed: Seed of the initial weights.
        **kwargs: Passed to `LearnedRule`.

    Raises:
        ValueError: If `hidden_units` is empty or a width is below 2.

    References:
        Metz, Maheswaranathan, Nixon, Freeman and Sohl-Dickstein. Understanding and
        correcting pathologies in the training of learned optimizers. ICML 2019.
        Metz, Freeman, Harrison, Maheswaranathan and Sohl-Dickstein. Practical tradeoffs
        between memory, compute, and performance in learned optimizers. CoLLAs 2022.
    """

    def __init__(
        self,
        learning_rate: float = 1e-3,
        training_steps: int = 1000,
        hidden_units: tuple[int, ...] = (32, 32),
        output_scale: float = 1e-3,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(learning_rate=learning_rate, training_steps=training_steps, **kwargs)
        hidden_units = tuple(hidden_units)
        if not hidden_units or any(
            isinstance(units, bool) or not isinstance(units, int) or units < 2
            for units in hidden_units
        ):
            raise ValueError(
                "`hidden_units` must be a non-empty sequence of integers of at least 2; "
                f"received {hidden_units!r}."
            )
        self.hidden_units = hidden_units
        self.output_scale = float(output_scale)
        self.seed = seed
        self.hidden = [
            keras.layers.Dense(units, activation="relu", dtype=self.dtype_policy)
            for units in hidden_units
        ]
        self.output_layer = keras.layers.Dense(len(OUTPUTS), dtype=self.dtype_policy)
        width = len(FEATURES)
        for layer in [*self.hidden, self.output_layer]:
            layer.build((None, width))
            width = layer.units
        self._initialize()
        self.built = True

    def _initialize(self) -> None:
        """Adam's pass-through plus a small random residual (see the class docstring)."""
        generator = np.random.default_rng(self.seed)
        source = FEATURES.index("momentum_0.9_over_rms")
        for index, layer in enumerate([*self.hidden, self.output_layer]):
            inputs, units = layer.kernel.shape
            limit = np.sqrt(6.0 / (inputs + units))
            kernel = generator.uniform(-limit, limit, (inputs, units))
            if layer is self.output_layer:
                kernel *= self.output_scale
                kernel[:2] = 0.0
                kernel[0, OUTPUTS.index("free")] = 1.0
                kernel[1, OUTPUTS.index("free")] = -1.0
            else:
                kernel[:, :2] = 0.0
                if index == 0:  # units 0 and 1: ReLU(x) and ReLU(-x)
                    kernel[source, 0], kernel[source, 1] = 1.0, -1.0
                else:  # carried through unchanged (both are non-negative)
                    kernel[0, 0], kernel[1, 1] = 1.0, 1.0
            layer.kernel.assign(kernel)
            layer.bias.assign(np.zeros(units))

    def initial_state(self, weight):
        """Zero momenta (one per decay, stacked last) and a zero second moment."""
        dtype = self.compute_dtype
        shape = tf.shape(weight)
        return (
            tf.zeros(tf.concat([shape, [len(MOMENTUM_DECAYS)]], 0), dtype),
            tf.zeros(shape, dtype),
        )

    def features(self, gradient, state, weight, step):
        """The network's inputs for every coordinate, and the rule's next state.

        Args:
            gradient: The gradient of one weight tensor.
            state: Its `(momenta, second_moment)`.
            weight: The weight tensor.
            step: The step, from 0.

        Returns:
            `(features, scale, new_state)`: features `[coordinates, len(FEATURES)]`, the
            tensor's gradient scale (a scalar) and the updated accumulators.
        """
        dtype = self.compute_dtype
        gradient = tf.cast(gradient, dtype)
        weight = tf.cast(weight, dtype)
        momenta, second_moment = state
        decays = tf.constant(MOMENTUM_DECAYS, dtype)
        momenta = decays * momenta + (1.0 - decays) * gradient[..., None]
        second_moment = SECOND_MOMENT_DECAY * second_moment + (
            1.0 - SECOND_MOMENT_DECAY
        ) * tf.square(gradient)
        correction = 1.0 - tf.pow(tf.constant(SECOND_MOMENT_DECAY, dtype), tf.cast(step, dtype) + 1)
        second_moment_hat = second_moment / correction
        # Epsilons inside the roots: a root's derivative at 0 is infinite, and zero
        # gradients (dead units, constant inputs) and zero weights (biases) are common.
        scale = tf.sqrt(tf.reduce_mean(second_moment_hat) + EPSILON**2)
        inverse_rms = tf.math.rsqrt(second_moment_hat + EPSILON**2)
        weight_rms = tf.sqrt(tf.reduce_mean(tf.square(weight)) + EPSILON**2)
        fraction = tf.ones_like(gradient) * self.fraction(step)
        features = tf.concat(
            [
                gradient[..., None] / scale,
                momenta / scale,
                (gradient * inverse_rms)[..., None],
                momenta * inverse_rms[..., None],
                (weight / weight_rms)[..., None],
                fraction[..., None],
            ],
            axis=-1,
        )
        return tf.reshape(features, [-1, len(FEATURES)]), scale, (momenta, second_moment)

    def direction(self, gradient, state, weight, step):
        """`exp(magnitude) * (scale * scaled + free)`, from the network's outputs."""
        features, scale, state = self.features(gradient, state, weight, step)
        hidden = features
        for layer in self.hidden:
            hidden = layer(hidden)
        scaled, free, magnitude = tf.unstack(self.output_layer(hidden), axis=-1)
        magnitude = MAXIMUM_MAGNITUDE * tf.tanh(magnitude / MAXIMUM_MAGNITUDE)
        direction = tf.exp(magnitude) * (scale * scaled + free)
        return tf.cast(tf.reshape(direction, tf.shape(weight)), weight.dtype), state

    def get_config(self):
        """The rule's hyperparameters (its weights are saved as the layer's variables)."""
        config = super().get_config()
        config.update(
            hidden_units=list(self.hidden_units), output_scale=self.output_scale, seed=self.seed
        )
        return config
