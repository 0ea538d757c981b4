"""The episode contract: the one format every learner, data pipeline and endpoint shares.

An episode batch is Keras's `(x, y)` pair with `x = {SUPPORT_X: [tasks, shots, *features],
SUPPORT_Y: [tasks, shots, *targets], QUERY_X: [tasks, queries, *features]}` and `y =
query_y: [tasks, queries, *targets]`. `validate_episode` checks what is known when a step is
traced and raises a `ValueError` naming the key and the shapes; `episode_tensors` and
`checked_labelled_episode` add the run-time checks (NaN, Inf, dimensions unknown at trace
time) that fail the step with TensorFlow's `InvalidArgumentError` naming the key, before
anything that depends on the batch changes. Data pipelines, learners, evaluation, serving
and callbacks all import the keys from here.
"""

from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

SUPPORT_X = "support_x"
SUPPORT_Y = "support_y"
QUERY_X = "query_x"
QUERY_Y = "query_y"
KEYS = (SUPPORT_X, SUPPORT_Y, QUERY_X)
FORMAT = (
    "An episode batch is the pair (x, y) with x = {'support_x': [tasks, shots, *features], "
    "'support_y': [tasks, shots, *targets], 'query_x': [tasks, queries, *features]} and "
    "y = query_y: [tasks, queries, *targets]."
)


def _shape(value) -> tf.TensorShape:
    return tf.TensorShape(getattr(value, "shape", np.shape(value)))


def _dtype(value) -> tf.DType | None:
    """The TensorFlow dtype of a tensor or array, or None for one TensorFlow has no number for."""
    try:
        return tf.as_dtype(getattr(value, "dtype", None) or np.asarray(value).dtype)
    except TypeError:
        return None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"{message} {FORMAT}")


def validate_episode(inputs, targets=None) -> None:
    """Checks that `(inputs, targets)` is an episode batch with consistent shapes.

    Dimensions unknown at trace time (the task axis under a distribution strategy) are
    skipped; every known dimension must match exactly, so nothing is broadcast silently.

    Args:
        inputs: The `x` of an episode batch: a dict with the keys of `KEYS`.
        targets: The `y` of an episode batch (`query_y`), or None when there is none.

    Raises:
        ValueError: Naming the key and the shapes received and expected, if `inputs` is not
            a dict, a key is missing or unknown, a rank is too low, or two shapes that must
            agree do not.
    """
    _require(
        isinstance(inputs, Mapping),
        f"Expected an episode batch, received x of type {type(inputs).__name__} with shape "
        f"{_shape(inputs)}.",
    )
    missing = [key for key in KEYS if key not in inputs]
    unexpected = sorted(key for key in inputs if key not in KEYS)
    hint = " Pass query_y as the target y, not inside x." if QUERY_Y in unexpected else ""
    _require(
        not missing and not unexpected,
        f"Episode keys missing: {missing}, unexpected: {unexpected}; received keys "
        f"{sorted(inputs)}, expected {list(KEYS)}.{hint}",
    )
    shapes = {key: _shape(inputs[key]) for key in KEYS}
    if targets is not None:
        shapes[QUERY_Y] = _shape(targets)
    minimum_ranks = {SUPPORT_X: 3, SUPPORT_Y: 2, QUERY_X: 3, QUERY_Y: 2}
    for key, shape in shapes.items():
        _require(
            shape.rank is not None and shape.rank >= minimum_ranks[key],
            f"'{key}' must have rank >= {minimum_ranks[key]} ([tasks, examples, ...]); "
            f"received shape {shape}.",
        )

    def agree(key, dims, other, other_dims, what):
        received = shapes[key][dims[0] : dims[1]]
        expected = shapes[other][other_dims[0] : other_dims[1]]
        _require(
            received.rank == expected.rank and received.is_compatible_with(expected),
            f"'{key}' has {what} {received} but '{other}' has {expected} "
            f"('{key}' shape {shapes[key]}, '{other}' shape {shapes[other]}).",
        )

    values = {**{key: inputs[key] for key in KEYS}, QUERY_Y: targets}
    for key in shapes:
        dtype = _dtype(values[key])
        if dtype is None or not (dtype.is_floating or dtype.is_integer):
            name = dtype.name if dtype is not None else np.asarray(values[key]).dtype
            _require(
                False,
                f"'{key}' must hold numbers (floating point or integers); received dtype {name}.",
            )
    for key, shape in shapes.items():
        # No task is fine (a replica's share of a last, partial batch); no example is not.
        _require(
            0 not in shape.as_list()[1:],
            f"'{key}' has an empty axis: shape {shape}. Every task needs at least one "
            "support and one query example, and features and targets need a size.",
        )
    for key in shapes:
        if key != SUPPORT_X:
            agree(key, (0, 1), SUPPORT_X, (0, 1), "task axis")
    agree(SUPPORT_Y, (1, 2), SUPPORT_X, (1, 2), "examples")
    agree(QUERY_X, (2, None), SUPPORT_X, (2, None), "feature shape")
    if targets is not None:
        agree(QUERY_Y, (1, 2), QUERY_X, (1, 2), "examples")
        agree(QUERY_Y, (2, None), SUPPORT_Y, (2, None), "target shape")


def _finite(key: str, value: tf.Tensor) -> tf.Tensor:
    """`value`, checked at run time for NaN and Inf if it is floating point."""
    if not value.dtype.is_floating:
        return value
    return tf.debugging.check_numerics(value, f"Episode key '{key}' contains NaN or Inf")


def _checked(tensors: dict[str, tf.Tensor], finite_keys) -> dict[str, tf.Tensor]:
    """`tensors` with run-time checks of what `validate_episode` could not see at trace time.

    Dimensions unknown when the step is traced (Keras relaxes shapes when it retraces; an
    exported signature has a dynamic example axis) are asserted at run time: no empty axis,
    and the same agreements as `validate_episode`. The floating-point values of
    `finite_keys` are checked for NaN and Inf. Every check names the key.
    """
    tensors = {key: tf.convert_to_tensor(value) for key, value in tensors.items()}
    if not all(value.shape.is_fully_defined() for value in tensors.values()):
        shapes = {key: tf.shape(value) for key, value in tensors.items()}
        pairs = [(key, SUPPORT_X, 0, 1, "task axis") for key in tensors if key != SUPPORT_X]
        pairs += [
            (SUPPORT_Y, SUPPORT_X, 1, 2, "examples"),
            (QUERY_X, SUPPORT_X, 2, None, "feature shape"),
        ]
        if QUERY_Y in tensors:
            pairs += [
                (QUERY_Y, QUERY_X, 1, 2, "examples"),
                (QUERY_Y, SUPPORT_Y, 2, None, "target shape"),
            ]
        assertions = [
            tf.debugging.assert_positive(shape[1:], message=f"'{key}' has an empty axis")
            for key, shape in shapes.items()
        ] + [
            tf.debugging.assert_equal(
                shapes[key][start:end],
                shapes[other][start:end],
                message=f"'{key}' and '{other}' disagree on the {what}",
            )
            for key, other, start, end, what in pairs
        ]
        with tf.control_dependencies(assertions):
            tensors = {key: tf.identity(value) for key, value in tensors.items()}
    return {
        key: _finite(key, value) if key in finite_keys else value for key, value in tensors.items()
    }


def episode_tensors(inputs) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Validates an episode batch `x` and returns its support inputs, targets and queries.

    Args:
        inputs: An episode batch `x` (see `FORMAT`).

    Returns:
        `(support_x, support_y, query_x)` as tensors. They fail at run time with an
        `InvalidArgumentError` naming the key if they contain NaN or Inf, or if a dimension
        unknown at trace time is empty or disagrees, before anything that depends on them
        (an update of weights) runs.

    Raises:
        ValueError: If `inputs` is not a valid episode batch (see `validate_episode`).
    """
    validate_episode(inputs)
    tensors = _checked({key: inputs[key] for key in KEYS}, KEYS)
    return tuple(tensors[key] for key in KEYS)


def checked_labelled_episode(data):
    """Validates an episode batch `(x, query_y)` with targets (see `validate_episode`).

    Args:
        data: The batch a training or evaluation step receives.

    Returns:
        `data` with `query_y` checked at run time as `episode_tensors` checks `x`, and
        against `x`'s shapes. `x` itself is checked once, where the learner reads it
        (`episode_tensors`), and everything that changes state depends on it.

    Raises:
        ValueError: If `data` has no targets or is not a valid episode batch.
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    _require(y is not None, "The episode batch has no targets: pass query_y as y.")
    validate_episode(x, y)
    targets = _checked({**{key: x[key] for key in KEYS}, QUERY_Y: y}, [QUERY_Y])
    return keras.utils.pack_x_y_sample_weight(x, targets[QUERY_Y], sample_weight)


def one_hot_labels(labels: tf.Tensor) -> tf.Tensor:
    """One-hot class labels `[tasks, shots, ways]` of support labels `[tasks, shots]`.

    The ways are `max(labels) + 1` over the batch, counted outside any task loop (where
    XLA can take them as a compile-time constant). Checked at run time, naming
    `support_y`: labels are whole numbers, none is negative, and every class of every task
    has a support example. Floating labels holding whole numbers are accepted because
    Keras's symbolic build under a distribution strategy averages the first batch across
    replicas, turning integer labels into floats.

    Raises:
        ValueError: If `labels` is not `[tasks, shots]` of numbers.
    """
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank != 2 or not (labels.dtype.is_integer or labels.dtype.is_floating):
        raise ValueError(
            f"'{SUPPORT_Y}' must be [tasks, shots] of integers (class labels); received "
            f"{labels.dtype.name} with shape {labels.shape} (regression targets are not "
            "supported)."
        )
    labels = checked_class_labels(SUPPORT_Y, labels)
    checks = [tf.debugging.assert_non_negative(labels, message=f"{SUPPORT_Y} has negative labels")]
    with tf.control_dependencies(checks):
        labels = tf.cast(labels, tf.int32)
        # At least 1: no label at all (an empty axis) then fails the check of the counts,
        # which names support_y, not TensorFlow's check of a negative depth.
        ways = tf.maximum(tf.reduce_max(labels) + 1, 1)
    one_hot = tf.one_hot(labels, ways)
    has_example = tf.debugging.assert_positive(
        tf.reduce_sum(one_hot, axis=1),
        message=f"a class in [0, max({SUPPORT_Y})] has no support example",
    )
    with tf.control_dependencies([has_example]):
        return tf.identity(one_hot)


def checked_class_labels(key: str, labels: tf.Tensor, classes: int | None = None) -> tf.Tensor:
    """`labels` of `key`, checked at run time to be whole class numbers below `classes`.

    Keras's sparse categorical losses cast floating labels to integers, so a label of 0.6
    would train as class 0; and a label beyond the network's outputs fails deep in the
    graph. Both fail here instead, with an `InvalidArgumentError` naming the key.

    Args:
        key: The episode key of `labels`, for the messages.
        labels: Class labels.
        classes: The number of classes the network can output, or None if not known.

    Returns:
        `labels`, with the checks as control dependencies.
    """
    labels = tf.convert_to_tensor(labels)
    checks = []
    if labels.dtype.is_floating:
        checks.append(
            tf.debugging.assert_equal(
                labels,
                tf.round(labels),
                message=f"Episode key {key} must hold integer class labels; one is fractional",
            )
        )
    if classes is not None:
        checks.append(
            tf.debugging.assert_less(
                tf.cast(labels, tf.int64),
                tf.constant(classes, tf.int64),
                message=(
                    f"Episode key {key} has a class label >= {classes}, but the network has "
                    f"{classes} outputs: it classifies at most {classes} ways"
                ),
            )
        )
    if not checks:
        return labels
    with tf.control_dependencies(checks):
        return tf.identity(labels)
