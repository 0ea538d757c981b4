import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta
from tf_meta import rules


def weights_and_gradients(seed=0):
    rng = np.random.default_rng(seed)
    weights = [tf.constant(rng.normal(size=(3, 2))), tf.constant(rng.normal(size=(2,)))]
    gradients = [tf.constant(rng.normal(size=(3, 2))), tf.constant(rng.normal(size=(2,)))]
    return weights, gradients


def run(rule, weights, gradients, steps):
    state = rule.init(weights)
    for step in range(steps):
        weights, state = rule.update(gradients, state, weights, step)
    return weights


def test_gradient_descent_takes_the_exact_step():
    weights, gradients = weights_and_gradients()
    result = run(rules.GradientDescent(0.3), weights, gradients, steps=2)
    for w, g, r in zip(weights, gradients, result, strict=True):
        np.testing.assert_allclose(r, w.numpy() - 0.6 * g.numpy(), rtol=1e-12)


def test_adam_matches_keras_adam_step_by_step():
    weights, gradients = weights_and_gradients()
    variables = [keras.Variable(w) for w in weights]
    optimizer = keras.optimizers.Adam(0.01, beta_1=0.0, beta_2=0.999, epsilon=1e-7)
    rule = rules.Adam(0.01)
    state, initial = rule.init(weights), [w.numpy() for w in weights]
    for step in range(3):
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
        weights, state = rule.update(gradients, state, weights, step)
        for variable, weight, start in zip(variables, weights, initial, strict=True):
            # The change so far. Keras keeps its hyperparameters in float32: its bias
            # correction sqrt(1 - 0.999^t) is off by 5e-6 relative at t = 1.
            np.testing.assert_allclose(weight - start, variable.numpy() - start, rtol=1e-5)


def test_per_step_rates_reuse_the_last_rate_beyond_their_length():
    weights, gradients = weights_and_gradients()
    rates = [tf.constant([0.1, 0.2], tf.float64), tf.constant([0.3, 0.4], tf.float64)]
    result = run(rules.PerStepGradientDescent(rates), weights, gradients, steps=3)
    for w, g, r, rate in zip(weights, gradients, result, rates, strict=True):
        total = rate[0] + 2 * rate[1]  # steps 0, 1 and again 1
        np.testing.assert_allclose(r, w.numpy() - total.numpy() * g.numpy(), rtol=1e-12)


def test_per_weight_rates_are_elementwise():
    weights, gradients = weights_and_gradients()
    rates = [tf.fill((3, 2), tf.constant(0.5, tf.float64)), tf.constant([0.1, 2.0], tf.float64)]
    result = run(rules.PerWeightGradientDescent(rates), weights, gradients, steps=1)
    for w, g, r, rate in zip(weights, gradients, result, rates, strict=True):
        np.testing.assert_allclose(r, w.numpy() - rate.numpy() * g.numpy(), rtol=1e-12)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: rules.GradientDescent(float("inf")), "learning_rate"),
        (lambda: rules.GradientDescent("0.1"), "learning_rate"),
        (lambda: rules.GradientDescent(0.0), "learning_rate"),
        (lambda: rules.Adam(0.1, beta_1=1.0), "beta_1"),
        (lambda: rules.Adam(0.1, beta_2=-0.1), "beta_2"),
        (lambda: rules.Adam(0.1, epsilon=0.0), "epsilon"),
    ],
)
def test_bad_hyperparameters_name_the_argument(make, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        make()


def quadratic_gradients(target):
    def gradients(weights, step):
        del step
        with tf.GradientTape() as tape:
            tape.watch(weights)
            loss = tf.add_n(
                [tf.reduce_sum((w - t) ** 4) for w, t in zip(weights, target, strict=True)]
            )
        return tape.gradient(loss, weights)

    return gradients


@pytest.mark.parametrize("first_order", [False, True])
def test_inner_loop_checkpointed_equals_plain_including_learned_rates(first_order):
    weights, target = weights_and_gradients(1)
    rates = [tf.Variable(tf.fill(w.shape, tf.constant(0.05, tf.float64))) for w in weights]
    results = []
    for checkpointed in (False, True):
        with tf.GradientTape() as tape:
            tape.watch(weights)
            path = tf_meta.adaptation.inner_loop(
                rules.PerWeightGradientDescent(rates),
                weights,
                quadratic_gradients(target),
                steps=3,
                first_order=first_order,
                checkpointed=checkpointed,
            )
            loss = tf.add_n([tf.reduce_sum(tf.sin(w)) for w in path[-1]])
        results.append(tape.gradient(loss, weights + rates))
    for plain, recomputed in zip(*results, strict=True):
        np.testing.assert_allclose(recomputed, plain, rtol=1e-12)
    # First order: the gradient with respect to the initial weights is that of the final.
    if first_order:
        final = [tf.cos(w) for w in path[-1]]
        for gradient, expected in zip(results[0][:2], final, strict=True):
            np.testing.assert_allclose(gradient, expected, rtol=1e-12)


def test_inner_loop_second_order_matches_finite_differences():
    weights, target = weights_and_gradients(2)
    rule = rules.GradientDescent(0.05)

    def outer(initial):
        path = tf_meta.adaptation.inner_loop(rule, initial, quadratic_gradients(target), 2)
        return tf.add_n([tf.reduce_sum(tf.sin(w)) for w in path[-1]])

    with tf.GradientTape() as tape:
        tape.watch(weights)
        loss = outer(weights)
    gradient = tape.gradient(loss, weights)[1].numpy()
    epsilon, expected = 1e-6, np.zeros(2)
    for index in range(2):
        shift = np.zeros(2)
        shift[index] = epsilon
        plus = outer([weights[0], weights[1] + shift]).numpy()
        minus = outer([weights[0], weights[1] - shift]).numpy()
        expected[index] = (plus - minus) / (2 * epsilon)
    np.testing.assert_allclose(gradient, expected, rtol=1e-6)
