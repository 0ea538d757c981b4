import keras
import numpy as np
import pytest

import tf_meta


def test_confidence_interval_matches_hand_computation():
    scores = np.array([0.9, 1.0, 0.8, 0.95, 0.85])
    mean, half_width = tf_meta.evaluation.confidence_interval(scores)
    assert mean == pytest.approx(0.9)
    assert half_width == pytest.approx(1.959964 * np.std(scores, ddof=1) / np.sqrt(5), rel=1e-6)
    _, wider = tf_meta.evaluation.confidence_interval(scores, confidence=0.99)
    assert wider == pytest.approx(2.575829 * np.std(scores, ddof=1) / np.sqrt(5), rel=1e-6)


@pytest.mark.parametrize(
    "arguments", [{"scores": [1.0]}, {"scores": [1.0, 2.0], "confidence": 1.0}]
)
def test_confidence_interval_rejects_bad_input(arguments):
    with pytest.raises(ValueError, match="scores|confidence"):
        tf_meta.evaluation.confidence_interval(**arguments)


def test_task_scores_are_per_task_query_losses_after_adaptation():
    learner = tf_meta.MAML(tf_meta.models.mlp(), inner_learning_rate=0.01, eval_inner_steps=3)
    learner.compile(optimizer="adam", loss="mse")
    pool = tf_meta.data.sinusoid(meta_batch_size=4, seed=5, num_tasks=10)
    scores = tf_meta.evaluation.task_scores(learner, pool)
    assert scores.shape == (10,)
    expected = []
    for x, y in pool:
        predictions = learner.predict(x, verbose=0)
        expected.extend(np.mean((y.numpy() - predictions) ** 2, axis=(1, 2)))
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    # The mean over equally sized tasks is what Keras's evaluate reports.
    np.testing.assert_allclose(scores.mean(), learner.evaluate(pool, verbose=0), rtol=1e-5)
    no_adaptation = tf_meta.evaluation.task_scores(learner, pool, inner_steps=0)
    assert np.abs(no_adaptation - scores).max() > 0


def test_task_scores_accepts_metric_functions():
    learner = tf_meta.MAML(tf_meta.models.mlp(), inner_learning_rate=0.01)
    learner.compile(optimizer="adam", loss="mse")
    pool = tf_meta.data.sinusoid(meta_batch_size=5, seed=5, num_tasks=5)
    mae = tf_meta.evaluation.task_scores(learner, pool, metric=keras.losses.mean_absolute_error)
    x, y = next(iter(pool))
    np.testing.assert_allclose(
        mae, np.mean(np.abs(y.numpy() - learner.predict(x, verbose=0)), axis=(1, 2)), rtol=1e-5
    )


def test_confidence_interval_on_a_pool_with_a_known_answer():
    # A network whose logits are all zero predicts class 0 for every query (argmax of a tie),
    # so its accuracy on every 5-way task with 3 queries per class is exactly 1/5.
    images = np.random.default_rng(0).random((60, 2, 2, 1)).astype("float32")
    labels = np.arange(60) // 6
    pool = tf_meta.data.episodes((images, labels), 5, 1, 3, 16, seed=0, num_tasks=40)
    network = keras.Sequential(
        [
            keras.Input((2, 2, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(5, kernel_initializer="zeros"),
        ]
    )
    learner = tf_meta.MAML(network, inner_loss="mse")
    scores = tf_meta.evaluation.task_scores(
        learner, pool, metric=keras.metrics.sparse_categorical_accuracy, inner_steps=0
    )
    assert scores.shape == (40,)
    mean, half_width = tf_meta.evaluation.confidence_interval(scores)
    assert mean == pytest.approx(0.2) and half_width == pytest.approx(0.0)
