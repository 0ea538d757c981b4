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


def conv4(
    input_shape: Sequence[int] = (28, 28, 1),
    ways: int | None = 5,
    filters: int = 64,
    name: str = "conv4",
) -> keras.Sequential:
    """The four-block convolutional network of the few-shot literature.

    Each block is a 3x3 convolution with `filters` channels, batch normalization, ReLU
    and 2x2 max-pooling; 28x28 inputs (Omniglot) end at 1x1, 84x84 (mini-ImageNet) at 5x5.
    The features are flattened and, unless `ways` is None (an encoder for metric-based
    learners), fed to a Dense head with `ways` logits.

    Args:
        input_shape: Shape of one image, `(height, width, channels)`.
        ways: Number of classes of the head, or None for no head.
        filters: Channels of every convolution.
        name: The model's name.

    Returns:
        A built `keras.Sequential`.

    Raises:
        ValueError: If `ways` or `filters` is not a positive integer.

    References:
        Vinyals et al. Matching Networks for One Shot Learning. NeurIPS 2016.
        Finn, Abbeel and Levine. Model-Agnostic Meta-Learning. ICML 2017, section 5.2.
    """
    for argument, value in (("ways", 1 if ways is None else ways), ("filters", filters)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"`{argument}` must be a positive integer; received {value!r}.")
    layers = [keras.Input(shape=tuple(input_shape))]
    for _ in range(4):
        layers += [
            keras.layers.Conv2D(filters, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(2),
        ]
    layers.append(keras.layers.Flatten())
    if ways is not None:
        layers.append(keras.layers.Dense(ways))
    return keras.Sequential(layers, name=name)
