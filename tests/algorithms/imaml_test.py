import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta


def quadratic_task(rng, shots=6, queries=5, features=3):
    x = {
        "support_x": rng.normal(size=(1, shots, features)),
        "support_y": rng.normal(size=(1, shots, 1)),
        "query_x": rng.normal(size=(1, queries, features)),
    }
    return x, rng.normal(size=(1, queries, 1))


def linear_model(features=3):
    return keras.Sequential(
        [keras.Input((features,)), keras.layers.Dense(1, use_bias=False, dtype="float64")]
    )


def test_meta_gradient_equals_the_closed_form_of_the_proximal_problem():
    """Linear regression: the proximal solution and its Jacobian have closed forms.

    With `L(phi) = mean((X phi - y)^2)`, `H = 2 X'X / n` and `phi* = (H + lambda I)^-1
    (2 X'y / n + lambda theta)`, so the exact meta-gradient is `lambda (H + lambda I)^-1
    grad L_query(phi*)`.
    """
    rng = np.random.default_rng(0)
    x, y = quadratic_task(rng)
    regularization = 1.5
    learner = tf_meta.IMAML(
        linear_model(),
        inner_learning_rate=0.1,
        inner_steps=150,  # converged to float64 round-off: the contraction is at most 0.85
        regularization=regularization,
        conjugate_gradient_steps=3,  # exact in exact arithmetic for 3 parameters
        inner_loss="mse",
    )
    learner.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    learner(x)
    theta = learner.model.get_weights()[0]
    support_x, support_y = x["support_x"][0], x["support_y"][0]
    hessian = 2 * support_x.T @ support_x / len(support_x)
    system = hessian + regularization * np.eye(3)
    phi = np.linalg.solve(
        system, 2 * support_x.T @ support_y / len(support_x) + regularization * theta
    )
    np.testing.assert_allclose(learner.adapt(support_x, support_y)[0], phi, rtol=1e-6)
    query_x, query_y = x["query_x"][0], y[0]
    query_gradient = 2 * query_x.T @ (query_x @ phi - query_y) / len(query_x)
    expected = regularization * np.linalg.solve(system, query_gradient)
    # A plain second-order gradient through the unrolled loop would differ: check it does.
    assert np.abs(expected - query_gradient).max() > 1e-2
    learner.train_on_batch(x, y)
    np.testing.assert_allclose(theta - learner.model.get_weights()[0], expected, rtol=1e-5)


def test_fewer_conjugate_gradient_steps_approximate_the_same_gradient():
    rng = np.random.default_rng(1)
    x, y = quadratic_task(rng)
    updates = []
    for steps in (1, 3):
        keras.utils.set_random_seed(0)
        learner = tf_meta.IMAML(
            linear_model(), inner_steps=100, conjugate_gradient_steps=steps, inner_loss="mse"
        )
        learner.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
        learner(x)
        before = learner.model.get_weights()[0]
        learner.train_on_batch(x, y)
        updates.append(before - learner.model.get_weights()[0])
    assert np.abs(updates[0] - updates[1]).max() > 1e-6
    np.testing.assert_allclose(updates[0], updates[1], rtol=0.5)


def test_short_fit_on_sinusoids_lowers_post_adaptation_mse():
    learner = tf_meta.IMAML(
        tf_meta.models.mlp(), inner_learning_rate=0.01, inner_steps=5, regularization=10.0
    )
    learner.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    pool = tf_meta.data.sinusoid(meta_batch_size=50, seed=1, num_tasks=100)
    before = learner.evaluate(pool, verbose=0)
    learner.fit(tf_meta.data.sinusoid(meta_batch_size=10, seed=0), steps_per_epoch=800, verbose=0)
    after = learner.evaluate(pool, verbose=0)
    assert after < 0.6 * before, (before, after)  # measured: 3.99 -> 1.95 after 600 steps


@pytest.mark.parametrize(
    "arguments, name",
    [
        ({"regularization": 0.0}, "regularization"),
        ({"regularization": float("inf")}, "regularization"),
        ({"inner_learning_rate": "0.1"}, "inner_learning_rate"),
        ({"conjugate_gradient_steps": 0}, "conjugate_gradient_steps"),
        ({"inner_steps": -1}, "inner_steps"),
        ({"gradient_checkpointing": True}, "gradient_checkpointing"),
    ],
)
def test_bad_arguments_name_the_argument(arguments, name):
    with pytest.raises(ValueError, match=name):
        tf_meta.IMAML(linear_model(), **arguments)


def test_saving_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    x, y = quadratic_task(rng)
    learner = tf_meta.IMAML(linear_model(), inner_steps=3, regularization=0.7)
    learner.compile(optimizer="sgd", loss="mse")
    learner.fit(x, y, verbose=0)
    learner.save(tmp_path / "imaml.keras")
    restored = keras.saving.load_model(tmp_path / "imaml.keras")
    assert restored.regularization == 0.7 and restored.inner_steps == 3
    np.testing.assert_array_equal(restored.predict(x, verbose=0), learner.predict(x, verbose=0))
    assert tf.is_tensor(restored.adapt(x["support_x"][0], x["support_y"][0])[0])
