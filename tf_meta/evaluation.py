"""Few-shot evaluation: per-task scores over a fixed task pool and their confidence interval."""

import statistics

import numpy as np
import tensorflow as tf

from tf_meta import adaptation
from tf_meta.episode import validate_episode


def task_scores(
    learner,
    episodes: tf.data.Dataset,
    metric="mse",
    inner_steps: int | None = None,
) -> np.ndarray:
    """Adapts to every task of `episodes` and scores its query predictions.

    Args:
        learner: A meta-learner (`tf_meta.MetaLearner`).
        episodes: A finite dataset of episode batches `(x, query_y)`, such as a fixed pool
            from `tf_meta.data.sinusoid(num_tasks=600, ...)`.
        metric: A per-example function `(y_true, y_pred) -> values`, such as
            `keras.metrics.sparse_categorical_accuracy`, or a Keras loss identifier
            (`"mse"`). Values are averaged over each task's queries.
        inner_steps: Inner steps of adaptation; None uses the learner's evaluation default.

    Returns:
        A float64 array with one score per task, in the order of `episodes`.

    Raises:
        ValueError: If `metric` cannot be resolved, or a batch is not an episode batch.
    """
    function = adaptation.per_example_loss(metric)
    results = []
    for x, y in episodes:
        validate_episode(x, y)
        results.append(_scores(learner, function, inner_steps, x, y).numpy())
    return np.concatenate(results)


@tf.function(reduce_retracing=True, autograph=False)
def _scores(learner, function, inner_steps, x, y):
    """Per-task mean of `function` over the queries; traced once per learner and steps."""
    predictions = learner.adapt_and_predict(x, steps=inner_steps)
    values = tf.cast(function(y, predictions), tf.float64)
    return tf.reduce_mean(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)


def confidence_interval(scores, confidence: float = 0.95) -> tuple[float, float]:
    """The mean of per-task scores and the half-width of its normal confidence interval.

    This is the field's standard report (e.g. "98.7 +- 0.4%" over 600 tasks): the mean
    plus or minus `z * std / sqrt(n)`, with `z` = 1.96 for 95% and `std` the sample
    standard deviation.

    Args:
        scores: Per-task scores.
        confidence: Coverage of the interval, in (0, 1).

    Returns:
        `(mean, half_width)`.

    Raises:
        ValueError: If there are fewer than two scores or `confidence` is not in (0, 1).
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.size < 2:
        raise ValueError(f"`scores` needs at least two values; received {scores.size}.")
    if not 0 < confidence < 1:
        raise ValueError(f"`confidence` must be in (0, 1); received {confidence!r}.")
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    return float(scores.mean()), float(z * scores.std(ddof=1) / np.sqrt(scores.size))
