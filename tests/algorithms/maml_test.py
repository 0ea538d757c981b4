import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta


def linear_model(features, dtype="float64"):
    return keras.Sequential(
        [keras.Input((features,), dtype=dtype), keras.layers.Dense(1, use_bias=False, dtype=dtype)]
    )


def meta_gradient(learner, x, y):
    """The gradient of the mean query MSE after adaptation, for one meta-batch."""
    with tf.GradientTape() as tape:
        predictions = learner(x, training=True)
        loss = tf.reduce_mean(tf.square(tf.cast(y, predictions.dtype) - predictions))
    return [g.numpy() for g in tape.gradient(loss, learner.trainable_variables)]


def closed_form_linear_meta_gradient(w, x, y, alpha, steps, first_order):
    """MAML on f(x) = x w with squared loss, written by hand.

    One inner step is w' = (I - alpha A) w + alpha b with A = 2/S X_s^T X_s and
    b = 2/S X_s^T y_s, so d w_k / d w = (I - alpha A)^k, and the meta-gradient of the
    query loss is (I - alpha A)^k g with g = 2/Q X_q^T (X_q w_k - y_q), averaged over tasks.
    """
    gradients = []
    for support_x, support_y, query_x, query_y in zip(
        x["support_x"], x["support_y"], x["query_x"], y, strict=True
    ):
        shots, features = support_x.shape
        a = 2.0 / shots * support_x.T @ support_x
        b = 2.0 / shots * support_x.T @ support_y
        adapted = w
        for _ in range(steps):
            adapted = adapted - alpha * (a @ adapted - b)
        g = 2.0 / len(query_x) * query_x.T @ (query_x @ adapted - query_y)
        jacobian = np.linalg.matrix_power(np.eye(features) - alpha * a, steps)
        gradients.append(g if first_order else jacobian @ g)
    return np.mean(gradients, axis=0)


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("first_order", [False, True])
def test_linear_regression_meta_gradient_matches_closed_form(
    steps, first_order, regression_episode
):
    rng = np.random.default_rng(steps)
    x, y = regression_episode(rng)
    model = linear_model(3)
    learner = tf_meta.MAML(
        model,
        inner_learning_rate=0.05,
        inner_steps=steps,
        first_order=first_order,
        inner_loss="mse",
    )
    expected = closed_form_linear_meta_gradient(
        model.get_weights()[0], x, y, 0.05, steps, first_order
    )
    (computed,) = meta_gradient(learner, x, y)
    np.testing.assert_allclose(computed, expected, rtol=1e-10, atol=1e-12)


def float64_mlp():
    return keras.Sequential(
        [
            keras.Input((1,), dtype="float64"),
            keras.layers.Dense(8, activation="tanh", dtype="float64"),
            keras.layers.Dense(8, activation="tanh", dtype="float64"),
            keras.layers.Dense(1, dtype="float64"),
        ]
    )


def query_mse(learner, x, y):
    # Compiled once: finite differences call it twice per weight, and eager adaptation
    # would cost most of the test's time.
    predict = tf.function(lambda: learner(x, training=True))
    return lambda: np.mean((y - predict().numpy()) ** 2)


def sinusoid_batch(tasks=2, shots=5, seed=3):
    x, y = next(
        iter(tf_meta.data.sinusoid(shots=shots, queries=5, meta_batch_size=tasks, seed=seed))
    )
    return {k: v.numpy().astype("float64") for k, v in x.items()}, y.numpy().astype("float64")


@pytest.mark.parametrize("steps", [1, 2])
def test_mlp_second_order_meta_gradient_matches_finite_differences(steps, finite_differences):
    x, y = sinusoid_batch()
    learner = tf_meta.MAML(
        float64_mlp(), inner_learning_rate=0.1, inner_steps=steps, inner_loss="mse"
    )
    # Finite differences must see the training path (which adapts with inner_steps).
    expected = finite_differences(query_mse(learner, x, y), learner.trainable_variables)
    computed = meta_gradient(learner, x, y)
    for c, e in zip(computed, expected, strict=True):
        np.testing.assert_allclose(c, e, rtol=1e-5, atol=1e-8)


def test_mlp_first_order_meta_gradient_is_the_query_gradient_at_adapted_weights(
    finite_differences,
):
    x, y = sinusoid_batch()
    learner = tf_meta.MAML(
        float64_mlp(), inner_learning_rate=0.1, first_order=True, inner_loss="mse"
    )
    computed = meta_gradient(learner, x, y)
    # Independent computation: adapt each task, then take finite differences of the
    # query loss with respect to the adapted weights.
    expected = [np.zeros_like(v.numpy()) for v in learner.trainable_variables]
    tasks = len(y)
    for task in range(tasks):
        adapted = learner.adapted_model(x["support_x"][task], x["support_y"][task], steps=1)
        probe = tf_meta.MAML(adapted, inner_learning_rate=0.1, inner_steps=0, inner_loss="mse")
        episode = {k: v[task : task + 1] for k, v in x.items()}
        for total, part in zip(
            expected,
            finite_differences(
                query_mse(probe, episode, y[task : task + 1]), probe.trainable_variables
            ),
            strict=True,
        ):
            total += part / tasks
    for c, e in zip(computed, expected, strict=True):
        np.testing.assert_allclose(c, e, rtol=1e-5, atol=1e-8)
    second_order = tf_meta.MAML(learner.model, inner_learning_rate=0.1, inner_loss="mse")
    difference = max(
        np.abs(a - b).max()
        for a, b in zip(meta_gradient(second_order, x, y), computed, strict=True)
    )
    assert difference > 1e-3


def test_first_and_second_order_agree_without_curvature_and_differ_with_it(regression_episode):
    rng = np.random.default_rng(0)
    x, y = regression_episode(rng)
    gradients = {}
    for loss in ("mae", "mse"):  # a linear model: the MAE support loss has a zero Hessian
        for first_order in (False, True):
            keras.utils.set_random_seed(1)
            learner = tf_meta.MAML(
                linear_model(3), inner_learning_rate=0.05, first_order=first_order, inner_loss=loss
            )
            (gradients[loss, first_order],) = meta_gradient(learner, x, y)
    np.testing.assert_allclose(gradients["mae", False], gradients["mae", True], rtol=1e-12)
    assert np.abs(gradients["mse", False] - gradients["mse", True]).max() > 1e-3


def test_eval_inner_steps_adapts_longer_than_training():
    x, y = sinusoid_batch()
    learner = tf_meta.MAML(
        float64_mlp(), inner_learning_rate=0.1, eval_inner_steps=3, inner_loss="mse"
    )
    task = {k: v[:1] for k, v in x.items()}
    three_steps = learner.adapt(x["support_x"][0], x["support_y"][0])
    one_step = learner.adapt(x["support_x"][0], x["support_y"][0], steps=1)
    explicit = learner.adapt(x["support_x"][0], x["support_y"][0], steps=3)
    for a, b in zip(three_steps, explicit, strict=True):
        np.testing.assert_array_equal(a, b)
    assert max(np.abs(a - b).max() for a, b in zip(three_steps, one_step, strict=True)) > 1e-3
    # predict() uses eval_inner_steps, training uses inner_steps.
    predicted = learner.predict(task, verbose=0)
    manual = learner.model.stateless_call(three_steps, [], task["query_x"][0], training=True)[0]
    np.testing.assert_allclose(predicted[0], manual.numpy(), rtol=1e-12)
    trained = learner(task, training=True).numpy()
    manual_one = learner.model.stateless_call(one_step, [], task["query_x"][0], training=True)[0]
    np.testing.assert_allclose(trained[0], manual_one.numpy(), rtol=1e-12)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"inner_learning_rate": 0.0}, "inner_learning_rate"),
        ({"inner_learning_rate": -1.0}, "inner_learning_rate"),
        ({"inner_steps": -1}, "inner_steps"),
        ({"inner_steps": 1.5}, "inner_steps"),
        ({"eval_inner_steps": -2}, "eval_inner_steps"),
    ],
)
def test_bad_hyperparameters_raise_at_construction(arguments, message):
    with pytest.raises(ValueError, match=message):
        tf_meta.MAML(tf_meta.models.mlp(), **arguments)


def test_model_without_trainable_weights_raises_at_construction():
    frozen = tf_meta.models.mlp()
    frozen.trainable = False
    with pytest.raises(ValueError, match="no trainable weights"):
        tf_meta.MAML(frozen)
    with pytest.raises(ValueError, match="`model` must be a keras.Model"):
        tf_meta.MAML(lambda x: x)


def test_config_round_trip():
    learner = tf_meta.MAML(
        tf_meta.models.mlp(),
        inner_learning_rate=0.3,
        inner_steps=2,
        first_order=True,
        eval_inner_steps=7,
        inner_loss="mae",
    )
    restored = tf_meta.MAML.from_config(learner.get_config())
    for key in ("inner_learning_rate", "inner_steps", "first_order", "eval_inner_steps"):
        assert getattr(restored, key) == getattr(learner, key)
    assert restored.inner_loss == "mae"
    assert restored.get_config() == learner.get_config()


@pytest.mark.parametrize(
    "inner_loss", [keras.losses.MeanAbsoluteError(), keras.losses.mean_squared_error]
)
def test_config_round_trip_of_loss_objects(inner_loss):
    learner = tf_meta.MAML(tf_meta.models.mlp(), inner_loss=inner_loss)
    restored = tf_meta.MAML.from_config(learner.get_config())
    y_true, y_pred = np.array([[0.0], [2.0]]), np.array([[1.0], [0.0]])
    np.testing.assert_allclose(
        restored.support_loss(y_true, y_pred), learner.support_loss(y_true, y_pred)
    )
