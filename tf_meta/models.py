"""Standard backbones of the meta-learning literature."""

from collections.abc import Sequence

import keras


def mlp(
    input_shape: Sequence[int] = (1,),
    hidden_units: Sequence[int] = (40, 40),
    outputs: int = 1,
    activation: str = "relu",
    name: str = "mlp",
) -> keras.Sequential:
    """The fully connected network of MAML's sinusoid regression (1-40-40-1, ReLU).

    Args:
        input_shape: Shape of one example's features.
        hidden_units: Width of each hidden layer.
        outputs: Width of the linear output layer.
        activation: Activation of the hidden layers.
        name: The model's name.

    Returns:
        A built `keras.Sequential`.

    Raises:
        ValueError: If a width is not a positive integer.

    References:
        Finn, Abbeel and Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep
        Networks. ICML 2017, section 5.1.
    """
    for argument, widths in (("hidden_units", hidden_units), ("outputs", [outputs])):
        if any(not isinstance(width, int) or width <= 0 for width in widths):
            raise ValueError(f"`{argument}` must be positive integers; received {widths!r}.")
    layers = [keras.Input(shape=tuple(input_shape))]
    layers += [keras.layers.Dense(units, activation=activation) for units in hidden_units]
    layers.append(keras.layers.Dense(outputs))
    return keras.Sequential(layers, name=name)
