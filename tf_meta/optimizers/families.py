"""Built-in task families for meta-training optimizers."""

import keras
import numpy as np

from tf_meta import models
from tf_meta.optimizers.task_family import TaskFamily


def sinusoid_family(
    hidden_units: tuple[int, ...] = (40, 40),
    examples: int = 500,
    batch_size: int = 25,
    noise: float = 0.0,
) -> TaskFamily:
    """Regression of one sinusoid per task by an MLP (MAML's sinusoid tasks, trained long).

    A task is `y = amplitude * sin(x - phase) + noise * N(0, 1)` with the amplitude uniform
    in [0.1, 5] and the phase in [0, pi] (Finn et al. 2017), sampled at `examples` points
    uniform in [-5, 5]; the network (`tf_meta.models.mlp`) trains on minibatches of
    `batch_size` with the mean squared error.

    Args:
        hidden_units: Widths of the MLP's hidden layers.
        examples: Training examples per task.
        batch_size: Examples per inner step.
        noise: Standard deviation of the targets' noise.

    Returns:
        A `TaskFamily`.
    """

    def sample_task(generator):
        amplitude = generator.uniform(0.1, 5.0)
        phase = generator.uniform(0.0, np.pi)
        inputs = generator.uniform(-5.0, 5.0, (examples, 1))
        targets = amplitude * np.sin(inputs - phase) + noise * generator.normal(size=inputs.shape)
        return inputs, targets.astype(np.float32)

    return TaskFamily(
        lambda: models.mlp((1,), hidden_units, 1),
        sample_task,
        loss="mse",
        batch_size=batch_size,
        name=f"sinusoid MLP {'-'.join(map(str, (1, *hidden_units, 1)))}",
    )


def image_family(
    images: np.ndarray,
    labels: np.ndarray,
    ways: int = 5,
    hidden_units: tuple[int, ...] = (64,),
    batch_size: int = 25,
    network: str = "mlp",
) -> TaskFamily:
    """Few-way classification of images (Omniglot characters) by an MLP or a small conv net.

    A task draws `ways` classes of `labels` without replacement and trains the network on
    all their images (20 per Omniglot character), relabelled 0 to `ways - 1`, with the
    sparse categorical cross-entropy. Pass `tf_meta.data.load_omniglot("background")` to
    meta-train and `load_omniglot("evaluation")` to hold out characters.

    Args:
        images: Images `[examples, height, width, channels]` (uint8 or float).
        labels: One integer class per image.
        ways: Classes per task.
        hidden_units: With `network="mlp"`, the widths of the hidden layers on the pixels;
            with `"conv"`, the channels of each 3x3 convolution (ReLU, 2x2 max-pooling).
        batch_size: Examples per inner step.
        network: `"mlp"` or `"conv"`.

    Returns:
        A `TaskFamily`.

    Raises:
        ValueError: If `ways` is below 2 or above the number of classes, or `network` is
            unknown.
    """
    classes = np.unique(labels)
    if not 2 <= ways <= len(classes):
        raise ValueError(f"`ways` must be in [2, {len(classes)}]; received {ways!r}.")
    if network not in ("mlp", "conv"):
        raise ValueError(f"`network` must be 'mlp' or 'conv'; received {network!r}.")
    pixels = images.astype(np.float32)
    if images.dtype == np.uint8:
        pixels /= 255.0
    if network == "mlp":
        pixels = pixels.reshape(len(pixels), -1)
    by_class = {label: np.flatnonzero(labels == label) for label in classes}

    def sample_task(generator):
        chosen = generator.choice(classes, ways, replace=False)
        indices = [by_class[label] for label in chosen]
        inputs = np.concatenate([pixels[index] for index in indices])
        targets = np.concatenate(
            [np.full(len(index), way, np.int32) for way, index in enumerate(indices)]
        )
        return inputs, targets

    def build_model():
        if network == "mlp":
            return models.mlp(pixels.shape[1:], hidden_units, ways)
        layers = [keras.Input(pixels.shape[1:])]
        for channels in hidden_units:
            layers += [
                keras.layers.Conv2D(channels, 3, padding="same", activation="relu"),
                keras.layers.MaxPooling2D(),
            ]
        layers += [keras.layers.Flatten(), keras.layers.Dense(ways)]
        return keras.Sequential(layers, name="conv")

    widths = "-".join(map(str, hidden_units))
    return TaskFamily(
        build_model,
        sample_task,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        batch_size=batch_size,
        name=f"{ways}-way images {network} {widths}",
    )
