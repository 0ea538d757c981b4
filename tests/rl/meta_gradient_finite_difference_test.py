"""Checks MAMLPolicyGradient's meta-gradient against float64 finite differences.

The task is linear-quadratic: a scalar state `x` starts at 0, moves to `x + a` under the
action `a`, and each step pays `-(x + a - goal)^2 - 0.1 a^2`. The policy is linear and
Gaussian, `a ~ N(w x + b, exp(s)^2)`.

MAML's policy-gradient meta-objective, as the learner estimates it, is a deterministic
function of the initial weights once the rollouts are fixed data (the paper's estimator
does not differentiate the sampling of the rollouts):

    F(theta) = L_query(theta - alpha * grad L_support(theta)),
    L(theta) = -mean(log pi_theta(a | o) * A),

with the rollouts' observations, actions and advantages as data. This file writes `F` in
float64 NumPy from the Gaussian's closed-form score, independently of TensorFlow, and
differentiates it by central differences.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta


class LinearQuadratic(tf_meta.rl.TaskEnvironment):
    """A scalar linear system with a quadratic cost to a per-task goal."""

    observation_size = action_size = task_size = 1
    horizon = 3

    def sample_tasks(self, count, seed):
        return tf.random.stateless_uniform([count, 1], seed, -1.0, 1.0)

    def initial_state(self, tasks):
        return tf.zeros_like(tasks)

    def observe(self, states, tasks):
        return states

    def transition(self, states, actions, tasks):
        states = states + actions
        rewards = -tf.square(states - tasks)[:, 0] - 0.1 * tf.square(actions)[:, 0]
        return states, rewards


INNER_LEARNING_RATE = 0.5


def log_probability(theta, observations, actions):
    """`log pi_theta(a | o)` of the linear Gaussian policy, in float64."""
    w, b, s = theta
    residual = actions - (w * observations + b)
    return -0.5 * residual**2 / np.exp(2 * s) - s - 0.5 * np.log(2 * np.pi)


def loss_and_gradient(theta, observations, actions, advantage):
    """REINFORCE's loss and its gradient for the linear Gaussian policy, in float64.

    Args:
        theta: `[w, b, s]`, float64.
        observations, actions, advantage: Flat `[count]` arrays.
    """
    w, b, s = theta
    residual = actions - (w * observations + b)
    variance = np.exp(2 * s)
    loss = -np.mean(log_probability(theta, observations, actions) * advantage)
    score_mean = residual / variance  # d log pi / d mean
    score_log_std = residual**2 / variance - 1  # d log pi / d s
    gradient = -np.array(
        [
            np.mean(advantage * score_mean * observations),
            np.mean(advantage * score_mean),
            np.mean(advantage * score_log_std),
        ]
    )
    return loss, gradient


def meta_objective(theta, support, query):
    """`F(theta)` of the module docstring, in float64."""
    _, inner_gradient = loss_and_gradient(theta, *support)
    loss, _ = loss_and_gradient(theta - INNER_LEARNING_RATE * inner_gradient, *query)
    return loss


def flat_batch(learner, batch):
    """A batch of rollouts as float64 `(observations, actions, advantages)` arrays."""
    observations, actions, rewards = batch
    advantage = learner.advantages(observations, rewards)
    return tuple(
        np.asarray(value, np.float64).ravel() for value in (observations, actions, advantage)
    )


def finite_difference(function, theta, step=1e-6):
    """The central-difference gradient of a scalar `function` at `theta`."""
    return np.array(
        [
            (function(theta + step * direction) - function(theta - step * direction)) / (2 * step)
            for direction in np.eye(len(theta))
        ]
    )


def learner_and_rollouts(**options):
    """A learner on the linear-quadratic task, and training step 0's rollouts of its task 0.

    Returns:
        `(learner, goal, theta, support, query)`: float64 weights `[w, b, s]` and the
        flat support and query batches (support from seed (0, 0), query from (0, 8)).
    """
    keras.utils.set_random_seed(0)
    policy = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    learner = tf_meta.rl.MAMLPolicyGradient(
        policy,
        LinearQuadratic(),
        inner_learning_rate=INNER_LEARNING_RATE,
        episodes=8,
        initial_log_std=-0.5,
        **options,
    )
    goal = tf.constant([[0.6]])
    initial = learner.initial_weights()
    theta = weights_of(learner)
    support_batch = learner.sample(initial, goal[0], tf.constant([0, 0], tf.int64))
    support = flat_batch(learner, support_batch)
    _, inner_gradient = loss_and_gradient(theta, *support)
    adapted = theta - INNER_LEARNING_RATE * inner_gradient
    fast = [
        tf.reshape(tf.constant(value, tf.float32), weight.shape)
        for value, weight in zip(adapted, initial, strict=True)
    ]
    query = flat_batch(learner, learner.sample(fast, goal[0], tf.constant([0, 8], tf.int64)))
    return learner, goal, theta, support, query


def weights_of(learner):
    """The learner's `[w, b, s]` as float64."""
    return np.array([float(np.ravel(value)[0]) for value in learner.initial_weights()])


@pytest.mark.parametrize("first_order", [False, True])
def test_the_meta_gradient_equals_float64_finite_differences(first_order):
    learner, goal, theta, support, query = learner_and_rollouts(first_order=first_order)
    learner.compile(optimizer=keras.optimizers.SGD(1.0))
    gradient = finite_difference(lambda point: meta_objective(point, support, query), theta)
    _, inner_gradient = loss_and_gradient(theta, *support)
    adapted = theta - INNER_LEARNING_RATE * inner_gradient
    # First order: the query loss's gradient at the adapted weights, the inner step frozen.
    _, frozen = loss_and_gradient(adapted, *query)
    expected = frozen if first_order else gradient

    learner.train_on_batch(goal)  # SGD with rate 1: the weights move by minus the gradient
    np.testing.assert_allclose(theta - weights_of(learner), expected, rtol=1e-4, atol=1e-6)
    # The second-order term is large here, so the check tells the two orders apart.
    assert np.abs(gradient - frozen).max() > 0.05 * np.abs(gradient).max()


def test_the_ppo_step_descends_the_clipped_objective_by_finite_differences():
    """Two PPO updates on one batch: the second one's gradient is the clipped objective's."""
    learner, goal, theta, support, query = learner_and_rollouts(outer_step="ppo", outer_epochs=2)
    learner.compile(optimizer=keras.optimizers.SGD(1.0))
    observations, actions, advantage = query
    _, inner_gradient = loss_and_gradient(theta, *support)
    collected = log_probability(theta - INNER_LEARNING_RATE * inner_gradient, *query[:2])

    def ratio(point):
        _, inner_gradient = loss_and_gradient(point, *support)
        adapted = point - INNER_LEARNING_RATE * inner_gradient
        return np.exp(log_probability(adapted, observations, actions) - collected)

    def clipped_objective(point):
        clipped = np.clip(ratio(point), 0.8, 1.2)
        return -np.mean(np.minimum(ratio(point) * advantage, clipped * advantage))

    def unclipped_objective(point):
        return -np.mean(ratio(point) * advantage)

    first = theta - finite_difference(clipped_objective, theta)
    second = first - finite_difference(clipped_objective, first)
    learner.train_on_batch(goal)
    np.testing.assert_allclose(weights_of(learner), second, rtol=1e-4, atol=1e-5)
    assert int(learner.optimizer.iterations) == 2
    # After the first update some ratios left the range, so clipping changed the second.
    assert np.any(np.abs(ratio(first) - 1) > 0.2)
    unclipped = first - finite_difference(unclipped_objective, first)
    assert np.abs(unclipped - second).max() > 1e-2
