"""Checks the Gymnasium adapter against stepping the environments directly.

They need the `rl` extra (`pip install ".[test,rl]"`, the README's test command). A clone
without it skips them with that reason; CI (`CI=true`) never skips: a missing package fails.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta
from tf_meta.rl import rollouts


def _require(module):
    if os.environ.get("CI") == "true":
        return __import__(module)
    return pytest.importorskip(module, reason='needs the rl extra: pip install ".[test,rl]"')


gymnasium = _require("gymnasium")
metaworld = _require("metaworld")


class PendulumGravity(tf_meta.rl.GymnasiumEnvironment):
    """Pendulum-v1 with gravity as the task parameter."""

    def __init__(self, episodes=3, horizon=20, seed=5):
        super().__init__("Pendulum-v1", episodes, horizon, seed)

    def sample_tasks(self, count, seed):
        return 5.0 + 10.0 * tf.random.stateless_uniform([count, 1], seed)

    def set_task(self, environment, task):
        environment.g = float(task[0])


def act(observations, noise):
    return 3.0 * observations[:, 2:] + 0.5 * noise  # reaches beyond the bound of 2


def run(observations, noise):
    return 0.3 * observations[:, :6] + noise  # for HalfCheetah's 17 observations, 6 actions


def _direct(environment_id, task_setter, reward, seeds, noise, horizon, policy=act):
    """Each episode stepped with Gymnasium alone, the same actions and reset seeds."""
    returns = []
    for episode, seed in enumerate(seeds):
        environment = gymnasium.make(environment_id)
        task_setter(environment.unwrapped)
        observation, _ = environment.reset(seed=seed)
        total = 0.0
        for step in range(horizon):
            inputs = observation[None].astype("float32")
            action = np.asarray(policy(inputs, noise[step, episode : episode + 1]))
            action = np.clip(action[0], environment.action_space.low, environment.action_space.high)
            observation, value, terminated, truncated, information = environment.step(action)
            total += reward(value, information)
            assert not (terminated or truncated)
        returns.append(total)
    return np.array(returns)


def test_pendulum_returns_equal_stepping_it_directly():
    environment = PendulumGravity()
    gravity = tf.constant([7.5])
    observations, actions, rewards = tf.function(
        lambda: rollouts.rollout(environment, act, gravity, 3, [1, 2])
    )()
    noise = tf.random.stateless_normal([20, 3, 1], [1, 2]).numpy()

    def set_gravity(unwrapped):
        unwrapped.g = 7.5

    expected = _direct("Pendulum-v1", set_gravity, lambda r, i: r, [5, 6, 7], noise, 20)
    np.testing.assert_allclose(rewards.numpy().sum(1), expected, rtol=1e-5)
    assert np.abs(actions.numpy()).max() > 2  # the recorded actions are the policy's
    # The next reset continues the seeds: a new rollout differs, a new process repeats it.
    again = rollouts.rollout(environment, act, gravity, 3, [1, 2])[2].numpy().sum(1)
    assert not np.allclose(again, expected)


def test_half_cheetah_rewards_follow_the_task():
    environment = tf_meta.rl.HalfCheetah("velocity", episodes=2, horizon=5, seed=11)
    rewards = rollouts.rollout(environment, run, tf.constant([1.5]), 2, [3, 4])[2].numpy()
    noise = tf.random.stateless_normal([5, 2, 6], [3, 4]).numpy()

    def velocity_reward(value, information):
        del value
        return -abs(information["x_velocity"] - 1.5) + 0.5 * information["reward_ctrl"]

    expected = _direct(
        "HalfCheetah-v5", lambda unwrapped: None, velocity_reward, [11, 12], noise, 5, run
    )
    np.testing.assert_allclose(rewards.sum(1), expected, rtol=1e-4)
    directions = tf_meta.rl.HalfCheetah("direction").sample_tasks(100, [0, 0]).numpy()
    assert set(np.unique(directions)) == {-1.0, 1.0}


def test_a_learner_trains_on_an_external_environment_and_refuses_xla():
    environment = PendulumGravity(episodes=2, horizon=10)
    policy = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    learner = tf_meta.rl.MAMLPolicyGradient(policy, environment, episodes=2)
    with pytest.raises(ValueError, match="`jit_compile=True` cannot compile PendulumGravity"):
        learner.compile(optimizer="adam", jit_compile=True)
    learner.compile(optimizer="adam")
    history = learner.fit(environment.task_stream(2), steps_per_epoch=2, verbose=0)
    assert np.isfinite(history.history["return_after"]).all()
    with pytest.raises(ValueError, match="runs 2 episodes at a time"):
        rollouts.rollout(environment, act, tf.constant([9.0]), 3, [0, 0])
    with pytest.raises(ValueError, match="time limit of 200"):
        PendulumGravity(horizon=201)


def test_meta_world_reach_returns_equal_stepping_it_directly_and_record_success():
    environment = tf_meta.rl.MetaWorldML1("reach-v3", episodes=2, horizon=6, seed=3)
    rewards = rollouts.rollout(environment, reach, tf.constant([4.0]), 2, [5, 6])[2].numpy()
    noise = tf.random.stateless_normal([6, 2, 4], [5, 6]).numpy()
    benchmark = metaworld.ML1("reach-v3", seed=3)
    expected = []
    for episode, seed in enumerate([3, 4]):
        direct = benchmark.train_classes["reach-v3"]()
        direct.set_task(benchmark.train_tasks[4])
        observation, _ = direct.reset(seed=seed)
        total = 0.0
        for step in range(6):
            inputs = observation[None].astype("float32")
            action = np.asarray(reach(inputs, noise[step, episode : episode + 1]))[0]
            action = np.clip(action, -1, 1)
            observation, value, _, _, _ = direct.step(action)
            total += value
        expected.append(total)
    np.testing.assert_allclose(rewards.sum(1), expected, rtol=1e-4)
    assert environment.successes.shape == (2,) and environment.successes.dtype == bool
    indices = environment.sample_tasks(500, [0, 1]).numpy()
    assert indices.min() == 0 and indices.max() == 49 and np.all(indices == np.round(indices))
    with pytest.raises(ValueError, match="`skill`"):
        tf_meta.rl.MetaWorldML1("reach-v9")


def reach(observations, noise):
    return 0.5 * observations[:, :4] + noise  # Meta-World: 39 observations, 4 actions
