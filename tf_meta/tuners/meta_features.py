"""Cheap meta-features of a task's data: what a warm-started search compares tasks by."""

import numpy as np

FEATURES = (
    "log_examples",
    "log_input_dimension",
    "classification",
    "log_classes",
    "class_entropy",
    "log_feature_scale",
    "log_target_scale",
    "linear_probe_residual",
    "neighbour_probe_residual",
)
"""The names of `meta_features`' values, in order."""


def task_arrays(x, y) -> tuple[np.ndarray, np.ndarray, bool]:
    """A task's data as 2-D float arrays, and whether it is classification.

    Integer targets of shape `[n]` or `[n, 1]` are class labels and become one-hot columns;
    float targets are regression targets. Inputs are flattened to `[n, features]`.

    Args:
        x: The task's inputs, `[n, ...]`.
        y: The task's targets, `[n]` or `[n, ...]`.

    Returns:
        `(inputs, targets, classification)` with `inputs` `[n, d]` and `targets` `[n, c]`.

    Raises:
        ValueError: If `x` and `y` differ in length, hold fewer than 4 examples, are not
            finite, or class labels are negative.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 1 or y.ndim < 1 or len(x) != len(y):
        raise ValueError(
            f"`x` and `y` must hold the same number of examples; received shapes {x.shape} "
            f"and {y.shape}."
        )
    if len(x) < 4:
        raise ValueError(f"A task needs at least 4 examples; `x` has {len(x)}.")
    inputs = x.reshape(len(x), -1).astype(np.float64)
    if not np.all(np.isfinite(inputs)):
        raise ValueError("`x` holds a NaN or an infinity.")
    classification = np.issubdtype(y.dtype, np.integer) and (y.ndim == 1 or y.shape[1:] == (1,))
    if classification:
        labels = y.reshape(-1)
        if labels.min() < 0:
            raise ValueError(f"Class labels in `y` must be non-negative; found {labels.min()}.")
        targets = np.eye(int(labels.max()) + 1)[labels]
    else:
        targets = y.reshape(len(y), -1).astype(np.float64)
        if not np.all(np.isfinite(targets)):
            raise ValueError("`y` holds a NaN or an infinity.")
    return inputs, targets, bool(classification)


def _residual(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Mean squared error over the targets' variance: 1 predicts the mean, 0 is exact."""
    variance = np.mean((targets - targets.mean(axis=0)) ** 2)
    return float(np.mean((predictions - targets) ** 2) / max(variance, 1e-12))


def meta_features(x, y) -> dict[str, float]:
    """The meta-features of a task, as in auto-sklearn's warm start (Feurer et al. 2015).

    Simple features describe the data's sizes and scales: the number of examples and input
    dimensions (logarithms), whether it is classification, the number of classes and the
    entropy of their frequencies (normalized to [0, 1]; 0 for regression), the root mean
    square of the inputs and of the targets (logarithms; the targets' is 0 for
    classification). Two landmarkers describe its difficulty, each a probe fitted on one
    half of the examples and scored on the other as the residual (mean squared error over
    the variance of the targets; 1 is no better than the mean): a least-squares linear
    probe on the standardized inputs (the converged loss of a linear probe network), and
    the nearest neighbour. Both are deterministic: the halves alternate examples.

    Args:
        x: The task's inputs, `[n, ...]`, at least 4 examples (a sample of the task's
            training data is enough).
        y: Its targets: integer labels `[n]` for classification, floats for regression.

    Returns:
        A dict from each name in `FEATURES` to a float.

    Raises:
        ValueError: As `task_arrays`.

    References:
        Feurer, Springenberg and Hutter. Initializing Bayesian Hyperparameter Optimization
        via Meta-Learning. AAAI 2015.
        Pfahringer, Bensusan and Giraud-Carrier. Meta-Learning by Landmarking Various
        Learning Algorithms. ICML 2000.
    """
    inputs, targets, classification = task_arrays(x, y)
    examples, dimension = inputs.shape
    frequencies = targets.mean(axis=0) if classification else np.ones(1)
    classes = targets.shape[1] if classification else 1
    entropy = -np.sum(frequencies * np.log(np.maximum(frequencies, 1e-12)))
    fit, score = inputs[0::2], inputs[1::2]
    fit_targets, score_targets = targets[0::2], targets[1::2]
    mean, scale = fit.mean(axis=0), fit.std(axis=0) + 1e-8
    design = np.concatenate([(fit - mean) / scale, np.ones((len(fit), 1))], axis=1)
    coefficients = np.linalg.lstsq(design, fit_targets, rcond=None)[0]
    scored = np.concatenate([(score - mean) / scale, np.ones((len(score), 1))], axis=1)
    distances = (
        np.sum(score**2, axis=1)[:, None] - 2 * score @ fit.T + np.sum(fit**2, axis=1)[None, :]
    )
    return {
        "log_examples": float(np.log(examples)),
        "log_input_dimension": float(np.log(dimension)),
        "classification": float(classification),
        "log_classes": float(np.log(classes)),
        "class_entropy": float(entropy / np.log(classes)) if classes > 1 else 0.0,
        "log_feature_scale": float(np.log(np.sqrt(np.mean(inputs**2)) + 1e-12)),
        "log_target_scale": 0.0
        if classification
        else float(np.log(np.sqrt(np.mean(targets**2)) + 1e-12)),
        "linear_probe_residual": min(_residual(scored @ coefficients, score_targets), 2.0),
        "neighbour_probe_residual": min(
            _residual(fit_targets[np.argmin(distances, axis=1)], score_targets), 2.0
        ),
    }


def describe(x, y, encoder=None) -> np.ndarray:
    """A task as a vector: its `meta_features` in `FEATURES` order, or its embedding.

    Args:
        x: The task's inputs.
        y: Its targets.
        encoder: An optional trained `TaskEncoder`; without one, the meta-features.

    Returns:
        A float64 vector.
    """
    if encoder is not None:
        return np.asarray(encoder.embed(x, y), np.float64)
    values = meta_features(x, y)
    return np.array([values[name] for name in FEATURES])
