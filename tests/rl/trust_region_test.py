"""Checks the TRPO pieces and MAMLPolicyGradient's trust-region step against numpy."""

import keras
import numpy as np
import tensorflow as tf

import tf_meta
from tf_meta.rl import trust_region


def test_conjugate_gradient_solves_a_symmetric_positive_definite_system():
    rng = np.random.default_rng(0)
    factor = rng.normal(size=(5, 5))
    matrix = factor @ factor.T + 0.5 * np.eye(5)
    vector = rng.normal(size=5)

    def product(parts):
        flat = tf.concat([tf.reshape(part, [-1]) for part in parts], 0)
        result = tf.linalg.matvec(tf.constant(matrix), flat)
        return [tf.reshape(result[:3], [3, 1]), result[3:]]

    solution = trust_region.conjugate_gradient(
        product, [tf.constant(vector[:3, None]), tf.constant(vector[3:])], iterations=5
    )
    flat = np.concatenate([solution[0].numpy().ravel(), solution[1].numpy()])
    np.testing.assert_allclose(flat, np.linalg.solve(matrix, vector), rtol=1e-6)


def test_gaussian_kl_matches_a_monte_carlo_estimate():
    means, log_std = np.array([[0.3, -0.2]]), np.array([[-0.5, 0.1]])
    other_means, other_log_std = np.array([[0.1, 0.4]]), np.array([[-0.2, -0.3]])
    kl = trust_region.gaussian_kl(means, log_std, other_means, other_log_std).numpy()
    samples = means + np.exp(log_std) * np.random.default_rng(1).normal(size=(400_000, 2))

    def log_density(x, m, s):
        return np.sum(-0.5 * ((x - m) / np.exp(s)) ** 2 - s, axis=-1)

    estimate = np.mean(
        log_density(samples, means, log_std) - log_density(samples, other_means, other_log_std)
    )
    np.testing.assert_allclose(kl, [estimate], rtol=0.01)
    assert trust_region.gaussian_kl(means, log_std, means, log_std).numpy() == 0


def test_without_adaptation_the_trpo_step_is_the_natural_gradient_step_by_hand():
    keras.utils.set_random_seed(0)
    policy = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    learner = tf_meta.rl.MAMLPolicyGradient(
        policy,
        tf_meta.rl.PointNavigation(horizon=5),
        inner_steps=0,
        episodes=6,
        initial_log_std=-1.0,
        outer_step="trpo",
        max_kl=1e-3,
    )
    learner.compile(optimizer="sgd")
    goal = tf.constant([[0.3, -0.2]])
    kernel, bias, log_std = (value.numpy() for value in learner.initial_weights())
    # Task 0 of step 0 draws its query rollouts from (seed, 8), as documented.
    observations, actions, rewards = learner.sample(learner.initial_weights(), goal[0], [0, 8])
    weights = learner.initial_weights()
    with tf.GradientTape() as tape:
        tape.watch(weights)
        loss = learner.surrogate_loss(weights, observations, actions, rewards)
    gradient = np.concatenate([g.numpy().ravel() for g in tape.gradient(loss, weights)])
    # The Fisher matrix of a Gaussian with state-independent log-std, in the order of the
    # flattened kernel [2, 2], bias [2] and log-std [2].
    inputs = observations.numpy().reshape(-1, 2)
    fisher = np.zeros((8, 8))
    for x in inputs:
        for output in range(2):
            jacobian = np.zeros(8)
            jacobian[[output, 2 + output]] = x  # kernel[i, output] multiplies x[i]
            jacobian[4 + output] = 1.0
            fisher += np.outer(jacobian, jacobian) / np.exp(2 * log_std[output])
    fisher /= len(inputs)
    fisher[6:, 6:] += 2 * np.eye(2)
    fisher += 1e-5 * np.eye(8)
    direction = -np.linalg.solve(fisher, gradient)
    step = direction * np.sqrt(1e-3 / (0.5 * direction @ fisher @ direction))
    learner.train_on_batch(goal)
    updated = np.concatenate([v.numpy().ravel() for v in learner.initial_weights()])
    before = np.concatenate([kernel.ravel(), bias, log_std])
    np.testing.assert_allclose(updated - before, step, rtol=2e-3, atol=1e-6)
    assert int(learner.optimizer.iterations) == 1


def test_a_trpo_fit_with_first_order_adaptation_runs_and_saves(tmp_path):
    keras.utils.set_random_seed(0)
    environment = tf_meta.rl.PointNavigation(horizon=20)
    policy = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    learner = tf_meta.rl.MAMLPolicyGradient(
        policy, environment, episodes=4, outer_step="trpo", max_kl=0.02, first_order=True
    )
    learner.compile(optimizer="sgd")
    before = [value.numpy() for value in learner.initial_weights()]
    history = learner.fit(environment.task_stream(3), steps_per_epoch=2, verbose=0)
    assert np.isfinite(history.history["return_after"]).all()
    changed = zip(learner.initial_weights(), before, strict=True)
    assert any(np.abs(a.numpy() - b).max() > 0 for a, b in changed)
    learner.save(tmp_path / "trpo.keras")
    loaded = keras.saving.load_model(tmp_path / "trpo.keras")
    assert (loaded.outer_step, loaded.max_kl) == ("trpo", 0.02)
