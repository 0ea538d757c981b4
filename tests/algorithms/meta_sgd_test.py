import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta


def float64_mlp():
    return keras.Sequential(
        [
            keras.Input((1,), dtype="float64"),
            keras.layers.Dense(6, activation="tanh", dtype="float64"),
            keras.layers.Dense(1, dtype="float64"),
        ]
    )


def sinusoid_batch():
    x, y = next(iter(tf_meta.data.sinusoid(shots=5, queries=5, meta_batch_size=2, seed=3)))
    return {k: v.numpy().astype("float64") for k, v in x.items()}, y.numpy().astype("float64")


def query_loss(learner, x, y):
    return tf.reduce_mean(tf.square(y - learner(x, training=True)))


def test_rates_are_variables_shaped_like_the_weights_and_initialized():
    learner = tf_meta.MetaSGD(tf_meta.models.mlp(), inner_learning_rate=0.05, inner_loss="mse")
    x, _ = sinusoid_batch()
    learner({k: v.astype("float32") for k, v in x.items()})
    weights = learner.model.trainable_variables
    assert [r.shape for r in learner.inner_learning_rates] == [w.shape for w in weights]
    for rate in learner.inner_learning_rates:
        np.testing.assert_allclose(rate.numpy(), 0.05)
    assert all(
        any(r is v for v in learner.trainable_variables) for r in learner.inner_learning_rates
    )


def test_inner_step_uses_each_parameters_own_rate():
    learner = tf_meta.MetaSGD(float64_mlp(), inner_learning_rate=0.1, inner_loss="mse")
    x, _ = sinusoid_batch()
    learner(x)
    rng = np.random.default_rng(0)
    for rate in learner.inner_learning_rates:
        rate.assign(rng.uniform(0.01, 0.2, size=rate.shape))
    support_x, support_y = x["support_x"][0], x["support_y"][0]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(support_y - learner.model(support_x)))
    gradients = tape.gradient(loss, learner.model.trainable_variables)
    adapted = learner.adapt(support_x, support_y, steps=1)
    for weight, rate, gradient, new in zip(
        learner.model.trainable_variables,
        learner.inner_learning_rates,
        gradients,
        adapted,
        strict=True,
    ):
        np.testing.assert_allclose(
            new, weight.numpy() - rate.numpy() * gradient.numpy(), rtol=1e-12
        )


@pytest.mark.parametrize("first_order", [False, True])
def test_gradients_for_weights_and_rates_match_finite_differences(first_order, finite_differences):
    x, y = sinusoid_batch()
    learner = tf_meta.MetaSGD(
        float64_mlp(), inner_learning_rate=0.1, first_order=first_order, inner_loss="mse"
    )
    learner(x)
    with tf.GradientTape() as tape:
        loss = query_loss(learner, x, y)
    computed = tape.gradient(loss, learner.trainable_variables)
    # Compiled once: eager adaptation at each of the many evaluations would be slow.
    compiled_loss = tf.function(lambda: query_loss(learner, x, y))
    expected = finite_differences(compiled_loss, learner.trainable_variables)
    rates = {id(rate) for rate in learner.inner_learning_rates}
    for variable, gradient, difference in zip(
        learner.trainable_variables, computed, expected, strict=True
    ):
        if first_order and id(variable) not in rates:
            continue  # first order drops the Hessian term for the weights only
        # The rates' gradient needs no second derivative: exact in both modes.
        np.testing.assert_allclose(gradient.numpy(), difference, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("rate", [0.0, -0.1])
def test_non_positive_initial_rate_raises(rate):
    with pytest.raises(ValueError, match="inner_learning_rate"):
        tf_meta.MetaSGD(tf_meta.models.mlp(), inner_learning_rate=rate)


def test_short_fit_on_sinusoids_lowers_post_adaptation_mse():
    learner = tf_meta.MetaSGD(tf_meta.models.mlp(), inner_learning_rate=0.01)
    learner.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    pool = tf_meta.data.sinusoid(meta_batch_size=50, seed=1, num_tasks=100)
    before = learner.evaluate(pool, verbose=0)
    learner.fit(tf_meta.data.sinusoid(seed=0), steps_per_epoch=1500, verbose=0, shuffle=False)
    after = learner.evaluate(pool, verbose=0)
    assert after < 0.5 * before, (before, after)
    assert any(np.abs(r.numpy() - 0.01).max() > 1e-3 for r in learner.inner_learning_rates)
