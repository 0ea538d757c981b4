"""Checks the in-graph environments and the rollout, return, baseline and GAE functions."""

import numpy as np
import pytest
import tensorflow as tf

import tf_meta
from tf_meta.rl import rollouts


def test_a_navigation_step_moves_by_the_clipped_velocity_and_rewards_minus_the_distance():
    environment = tf_meta.rl.PointNavigation()
    goals = tf.constant([[0.3, -0.2], [-0.5, 0.5]])
    states = environment.initial_state(goals)
    actions = tf.constant([[0.3, -0.05], [-0.02, 2.0]])
    states, rewards = environment.step(states, actions, goals)
    np.testing.assert_allclose(states, [[0.1, -0.05], [-0.02, 0.1]], rtol=1e-6)
    expected = [-np.hypot(0.1 - 0.3, -0.05 + 0.2), -np.hypot(-0.02 + 0.5, 0.1 - 0.5)]
    np.testing.assert_allclose(rewards, expected, rtol=1e-6)


def test_goals_lie_in_the_square_and_follow_the_seed():
    environment = tf_meta.rl.PointNavigation(goal_range=0.5)
    goals = environment.sample_tasks(1000, [3, 4])
    assert np.all(np.abs(goals) <= 0.5) and np.std(goals) > 0.25
    np.testing.assert_array_equal(goals, environment.sample_tasks(1000, [3, 4]))
    assert not np.array_equal(goals, environment.sample_tasks(1000, [3, 5]))


def test_fixed_seeds_give_identical_rollouts_and_another_seed_others():
    environment = tf_meta.rl.PointNavigation(horizon=7)

    def act(observations, noise):
        return 0.5 * observations + noise

    goal = tf.constant([0.2, 0.1])
    first = rollouts.rollout(environment, act, goal, 3, [1, 2])
    again = rollouts.rollout(environment, act, goal, 3, [1, 2])
    other = rollouts.rollout(environment, act, goal, 3, [1, 3])
    assert [value.shape for value in first] == [(3, 7, 2), (3, 7, 2), (3, 7)]
    for one, two in zip(first, again, strict=True):
        np.testing.assert_array_equal(one, two)
    assert not np.array_equal(first[1], other[1])
    # Each recorded observation is the previous one moved by the clipped action.
    observations, actions, rewards = (value.numpy() for value in first)
    moved = observations[:, :-1] + np.clip(actions[:, :-1], -0.1, 0.1)
    np.testing.assert_allclose(observations[:, 1:], moved, rtol=1e-5, atol=1e-7)
    last = observations[:, -1] + np.clip(actions[:, -1], -0.1, 0.1)
    np.testing.assert_allclose(rewards[:, -1], -np.linalg.norm(last - goal, axis=-1), rtol=1e-5)


def test_no_goal_blind_path_beats_the_geometric_median_bound():
    environment = tf_meta.rl.PointNavigation(horizon=100)
    # On a line the geometric median is the middle goal (0), not the mean (0.1).
    goals = np.array([[-0.1, 0.0], [0.0, 0.0], [0.4, 0.0]])
    bound = environment.goal_blind_bound(goals)
    np.testing.assert_allclose(bound, -100 * 0.5 / 3, rtol=1e-6)

    def mean_return(act):
        returns = [
            rollouts.rollout(environment, act, tf.constant(goal, tf.float32), 4, [0, 1])[2]
            for goal in goals
        ]
        return float(np.mean([np.sum(rewards, axis=-1).mean() for rewards in returns]))

    # Staying at the origin (the median) attains it; heading for the mean or a noisy
    # stay does worse.
    np.testing.assert_allclose(mean_return(lambda o, n: 0 * o), bound, rtol=1e-5)
    assert mean_return(lambda o, n: tf.constant([0.1, 0.0]) - o) < bound - 1
    assert mean_return(lambda o, n: 0.05 * n) < bound
    # Four goals symmetric about the origin: the median is the origin.
    square = np.array([[0.3, 0.3], [-0.3, 0.3], [0.3, -0.3], [-0.3, -0.3]])
    np.testing.assert_allclose(
        environment.goal_blind_bound(square), -100 * 0.3 * np.sqrt(2), rtol=1e-6
    )
    with pytest.raises(ValueError, match="`goals` must be \\[count, 2\\]"):
        environment.goal_blind_bound(np.zeros(2))
    with pytest.raises(ValueError, match="`goals` must be finite"):
        environment.goal_blind_bound(np.full((2, 2), np.nan))


def test_bad_input_is_named():
    environment = tf_meta.rl.PointNavigation()
    goals = tf.zeros([2, 2])
    with pytest.raises(ValueError, match="`action` must be \\[batch, 2\\]"):
        environment.step(goals, tf.zeros([2, 3]), goals)
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf reward"):
        environment.step(goals, tf.zeros([2, 2]), tf.fill([2, 2], np.nan))
    with pytest.raises(ValueError, match="`horizon`"):
        tf_meta.rl.PointNavigation(horizon=0)
    with pytest.raises(ValueError, match="`episodes`"):
        rollouts.rollout(environment, lambda o, n: n, goals[0], 0, [0, 0])


def test_returns_and_gae_match_their_sums():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(3, 6)).astype("float32")
    values = rng.normal(size=(3, 6)).astype("float32")
    discount, gae_lambda = 0.9, 0.8
    expected_returns = np.zeros_like(rewards)
    expected_gae = np.zeros_like(rewards)
    for t in range(6):
        expected_returns[:, t] = sum(discount**k * rewards[:, t + k] for k in range(6 - t))
        following = np.concatenate([values[:, 1:], np.zeros((3, 1))], axis=1)
        deltas = rewards + discount * following - values
        expected_gae[:, t] = sum(
            (discount * gae_lambda) ** k * deltas[:, t + k] for k in range(6 - t)
        )
    expected_gae = (expected_gae - expected_gae.mean()) / expected_gae.std()
    returns = rollouts.discounted_returns(tf.constant(rewards), discount)
    np.testing.assert_allclose(returns, expected_returns, rtol=1e-5, atol=1e-6)
    estimates = rollouts.advantages(rewards, values, discount, gae_lambda)
    np.testing.assert_allclose(estimates, expected_gae, rtol=1e-4, atol=1e-5)


def test_the_linear_baseline_is_the_ridge_regression_on_its_features():
    rng = np.random.default_rng(1)
    observations = rng.normal(size=(4, 5, 2)).astype("float32")
    returns = rng.normal(size=(4, 5)).astype("float32")
    time = np.tile(np.arange(5)[None, :, None] / 10.0, [4, 1, 1])
    features = np.concatenate(
        [observations, observations**2, time, time**2, time**3, np.ones_like(time)], axis=-1
    ).reshape(20, -1)
    coefficients = np.linalg.solve(
        features.T @ features + 1e-5 * np.eye(features.shape[1]), features.T @ returns.ravel()
    )
    values = rollouts.linear_baseline(observations, returns, horizon=10)
    np.testing.assert_allclose(values, (features @ coefficients).reshape(4, 5), atol=1e-4)


def test_an_arm_step_follows_the_manipulator_equation():
    arm = tf_meta.rl.TwoLinkArm(damping=0.1, dt=0.05, control_cost=0.01)
    states = tf.constant([[0.3, -0.7, 0.5, -0.2]])
    torques = tf.constant([[0.8, -1.7]])  # the second is clipped to -1
    target = tf.constant([[0.2, 0.4]])
    # The equation written out with numpy: M(q) ddq = torque - c - damping * dq.
    m, length, center = 1.0, 0.5, 0.25
    inertia = m * length**2 / 12
    q1, q2, dq1, dq2 = states.numpy()[0]
    mass_matrix = np.array(
        [
            [
                2 * inertia + m * (2 * center**2 + length**2 + 2 * length * center * np.cos(q2)),
                inertia + m * (center**2 + length * center * np.cos(q2)),
            ],
            [inertia + m * (center**2 + length * center * np.cos(q2)), inertia + m * center**2],
        ]
    )
    coriolis = m * length * center * np.sin(q2) * np.array([-(2 * dq1 * dq2 + dq2**2), dq1**2])
    torque = np.array([0.8, -1.0])
    accelerations = np.linalg.solve(mass_matrix, torque - coriolis - 0.1 * np.array([dq1, dq2]))
    velocities = np.array([dq1, dq2]) + 0.05 * accelerations
    angles = np.array([q1, q2]) + 0.05 * velocities
    tip = length * np.array(
        [
            np.cos(angles[0]) + np.cos(angles.sum()),
            np.sin(angles[0]) + np.sin(angles.sum()),
        ]
    )
    reward = -np.linalg.norm(tip - [0.2, 0.4]) - 0.01 * (torque**2).sum()
    new_states, rewards = arm.step(states, torques, target)
    np.testing.assert_allclose(new_states[0], [*angles, *velocities], rtol=1e-5)
    np.testing.assert_allclose(rewards, [reward], rtol=1e-5)
    observation = arm.observe(new_states, target)[0]
    np.testing.assert_allclose(observation[6:], tip - [0.2, 0.4], rtol=1e-5, atol=1e-6)


def test_arm_targets_lie_in_the_reachable_annulus():
    arm = tf_meta.rl.TwoLinkArm(length=0.5)
    radii = np.linalg.norm(arm.sample_tasks(2000, [1, 1]), axis=-1)
    assert radii.min() >= 0.3 - 1e-6 and radii.max() <= 0.9 + 1e-6
    assert np.ptp(radii) > 0.55
