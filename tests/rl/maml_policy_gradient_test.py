"""Checks MAMLPolicyGradient: its gradients, its training, saving and bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta
from tf_meta.rl import rollouts


def linear_learner(**options):
    keras.utils.set_random_seed(0)
    policy = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    environment = tf_meta.rl.PointNavigation(horizon=5)
    defaults = {"inner_learning_rate": 0.5, "episodes": 4, "initial_log_std": -1.0}
    return tf_meta.rl.MAMLPolicyGradient(policy, environment, **{**defaults, **options})


def test_the_inner_gradient_is_reinforce_by_hand():
    learner = linear_learner()
    weights = learner.initial_weights()
    observations, actions, rewards = learner.sample(weights, tf.constant([0.3, 0.2]), [5, 6])
    with tf.GradientTape() as tape:
        tape.watch(weights)
        loss = learner.surrogate_loss(weights, observations, actions, rewards)
    kernel, bias, log_std = tape.gradient(loss, weights)

    returns = rollouts.discounted_returns(rewards, 0.99)
    values = rollouts.linear_baseline(observations, returns, 5)
    advantage = rollouts.advantages(rewards, values, 0.99, 1.0).numpy().ravel()[:, None]
    o, a = observations.numpy().reshape(-1, 2), actions.numpy().reshape(-1, 2)
    w, b, s = (value.numpy() for value in weights)
    residual = (a - (o @ w + b)) / np.exp(2 * s)  # d log pi / d mean
    count = len(o)
    np.testing.assert_allclose(kernel, -o.T @ (advantage * residual) / count, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bias, -(advantage * residual).sum(0) / count, rtol=1e-4, atol=1e-6)
    score = (a - (o @ w + b)) ** 2 / np.exp(2 * s) - 1  # d log pi / d log_std
    np.testing.assert_allclose(log_std, -(advantage * score).sum(0) / count, rtol=1e-4, atol=1e-6)


def _expected_update(learner, tasks, first_order):
    """The mean meta-gradient, by nested tapes task by task on the documented seeds."""
    initial = learner.initial_weights()
    total = [tf.zeros_like(value) for value in initial]
    for index, task in enumerate(tasks):
        seed = tf.constant([0, index * 16], tf.int64)
        with tf.GradientTape() as outer:
            outer.watch(initial)
            support = learner.sample(initial, task, seed)
            with tf.GradientTape() as inner:
                inner.watch(initial)
                inner_loss = learner.surrogate_loss(initial, *support)
            gradients = inner.gradient(inner_loss, initial)
            if first_order:
                gradients = [tf.stop_gradient(gradient) for gradient in gradients]
            fast = [w - 0.5 * g for w, g in zip(initial, gradients, strict=True)]
            query = learner.sample(fast, task, seed + [0, 8])
            loss = learner.surrogate_loss(fast, *query)
        total = [t + g for t, g in zip(total, outer.gradient(loss, initial), strict=True)]
    return [value - gradient / len(tasks) for value, gradient in zip(initial, total, strict=True)]


@pytest.mark.parametrize("first_order", [False, True])
def test_one_training_step_applies_the_mean_meta_gradient(first_order):
    learner = linear_learner(first_order=first_order)
    learner.compile(optimizer=keras.optimizers.SGD(1.0))
    tasks = tf.constant([[0.3, 0.2], [-0.4, 0.1]])
    expected = _expected_update(learner, tasks, first_order)
    other = _expected_update(learner, tasks, not first_order)
    learner.train_on_batch(tasks)
    updated = learner.initial_weights()
    for value, wanted in zip(updated, expected, strict=True):
        np.testing.assert_allclose(value, wanted, rtol=1e-4, atol=1e-5)
    # The second-order term is not negligible here, so the check tells the orders apart.
    assert max(np.abs(w - d).max() for w, d in zip(expected, other, strict=True)) > 1e-3


def test_a_short_fit_on_navigation_improves_the_adapted_return():
    keras.utils.set_random_seed(0)
    environment = tf_meta.rl.PointNavigation()
    policy = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(32, "relu"), keras.layers.Dense(2)]
    )
    learner = tf_meta.rl.MAMLPolicyGradient(policy, environment, episodes=10)
    learner.compile(optimizer=keras.optimizers.Adam(1e-2))
    tasks = environment.sample_tasks(20, [7, 7])
    before = learner.adaptation_returns(tasks, 1).numpy().mean(0)
    history = learner.fit(environment.task_stream(10), steps_per_epoch=20, verbose=0)
    after = learner.adaptation_returns(tasks, 1).numpy().mean(0)
    # Measured: -114 -> -41 after one adaptation step (a return of 0 is at the goal).
    assert after[1] > before[1] + 30, (before, after)
    assert set(history.history) == {"loss", "return_before", "return_after"}


def test_saving_round_trip_gives_the_same_returns(tmp_path):
    learner = linear_learner(inner_steps=2, first_order=True, seed=3)
    learner.compile(optimizer="adam")
    learner.fit(learner.environment.task_stream(2), steps_per_epoch=2, verbose=0)
    path = tmp_path / "learner.keras"
    learner.save(path)
    loaded = keras.saving.load_model(path)
    # The policy's layers are renamed on loading; everything else is the same.
    config, loaded_config = learner.get_config(), loaded.get_config()
    del config["policy"], loaded_config["policy"]
    assert loaded_config == config
    tasks = tf.constant([[0.1, 0.4]])
    np.testing.assert_array_equal(
        loaded.adaptation_returns(tasks, 2), learner.adaptation_returns(tasks, 2)
    )


class _KillAfterEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


@pytest.mark.ci_params("outer_step", "trpo")  # the others: `pytest -m slow`
@pytest.mark.parametrize("outer_step", ["optimizer", "trpo", "ppo"])
def test_a_killed_fit_resumes_where_it_stopped(tmp_path, outer_step):
    """BackupAndRestore resumes with the weights and the step count of the killed run (the
    rollouts' seeds are numbered by the optimizer's iterations). TRPO never applies the
    optimizer: unbuilt when the backup was written, it was built before restoring, which
    then skipped its variables, and the resumed run drew the first steps' rollouts again."""

    def learner():
        learner = linear_learner(outer_step=outer_step, outer_epochs=2)
        learner.compile(optimizer=keras.optimizers.Adam(1e-2))
        return learner

    def fit(learner, callbacks=(), initial_epoch=0):
        stream = learner.environment.task_stream(2)  # a fresh stream, as a rerun makes
        learner.fit(
            stream,
            steps_per_epoch=2,
            epochs=3,
            initial_epoch=initial_epoch,
            verbose=0,
            callbacks=list(callbacks),
        )

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(KeyboardInterrupt):
        fit(learner(), [backup, _KillAfterEpoch()])
    resumed = learner()
    fit(resumed, [backup])
    # The same run by hand: two epochs, then the third from a fresh stream.
    expected = learner()
    with pytest.raises(KeyboardInterrupt):
        fit(expected, [_KillAfterEpoch()])
    fit(expected, initial_epoch=2)
    assert int(resumed.optimizer.iterations) == int(expected.optimizer.iterations) > 0
    for actual, wanted in zip(resumed.weights, expected.weights, strict=True):
        np.testing.assert_allclose(actual.numpy(), wanted.numpy(), rtol=1e-5, atol=1e-6)


def test_bad_input_is_named_and_changes_nothing():
    learner = linear_learner()
    learner.compile(optimizer="adam")
    weights = [value.numpy() for value in learner.initial_weights()]
    with pytest.raises(ValueError, match="`tasks` must be \\[tasks, 2\\]"):
        learner.train_on_batch(tf.zeros([3, 3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="`tasks` contains NaN"):
        learner.train_on_batch(tf.constant([[0.1, np.nan]]))
    for before, after in zip(weights, learner.initial_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    assert int(learner.optimizer.iterations) == 0
    environment = tf_meta.rl.PointNavigation()
    policy = keras.Sequential([keras.layers.Dense(2)])
    for name, value in (
        ("episodes", 0),
        ("inner_learning_rate", -1.0),
        ("discount", 1.5),
        ("clip_ratio", 0.0),
        ("outer_epochs", 0),
        ("outer_step", "sgd"),
    ):
        with pytest.raises(ValueError, match=f"`{name}`"):
            tf_meta.rl.MAMLPolicyGradient(policy, environment, **{name: value})
    with pytest.raises(ValueError, match="`environment`"):
        tf_meta.rl.MAMLPolicyGradient(policy, "navigation")


class _NaNAwayFromStart(tf_meta.rl.PointNavigation):
    """Navigation whose reward turns NaN once the point leaves the start's neighbourhood."""

    def transition(self, states, actions, tasks):
        states, rewards = super().transition(states, actions, tasks)
        away = tf.reduce_any(tf.abs(states) > 0.05, axis=-1)
        return states, rewards + tf.where(away, np.nan, 0.0)


def test_a_nan_reward_stops_the_step_and_changes_nothing():
    keras.utils.set_random_seed(0)
    policy = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    learner = tf_meta.rl.MAMLPolicyGradient(
        policy, _NaNAwayFromStart(horizon=5), inner_learning_rate=0.5, episodes=4
    )
    learner.compile(optimizer="adam")
    weights = [value.numpy() for value in learner.initial_weights()]
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf reward"):
        learner.train_on_batch(tf.constant([[0.3, 0.2]]))
    for before, after in zip(weights, learner.initial_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    assert int(learner.optimizer.iterations) == 0


@pytest.mark.ci_params("outer_step", "ppo")  # the optimizer step: `pytest -m slow`
@pytest.mark.parametrize("outer_step", ["optimizer", "ppo"])
def test_a_step_under_mirrored_strategy_equals_the_single_device_step(
    mirrored_strategy, outer_step
):
    tasks = tf.constant([[0.3, 0.2], [-0.4, 0.1], [0.1, -0.3], [0.0, 0.45]])

    def step(strategy):
        with strategy.scope():
            learner = linear_learner(outer_step=outer_step, outer_epochs=2)
            learner.compile(optimizer=keras.optimizers.SGD(1.0))
        dataset = tf.data.Dataset.from_tensors(tasks)
        history = learner.fit(dataset, epochs=1, verbose=0)
        return [value.numpy() for value in learner.initial_weights()], history.history

    single, single_logs = step(tf.distribute.get_strategy())
    mirrored, mirrored_logs = step(mirrored_strategy)
    for one, two in zip(single, mirrored, strict=True):
        np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)
    for name in ("return_before", "return_after"):
        np.testing.assert_allclose(mirrored_logs[name], single_logs[name], rtol=1e-5)


def test_the_exported_policy_adapts_to_a_clients_rollouts_as_in_memory(tmp_path):
    learner = linear_learner(inner_steps=2)
    goal = tf.constant([0.3, -0.2])
    rollout = learner.sample(learner.initial_weights(), goal, [4, 4])
    queries = tf.constant([[0.0, 0.0], [0.2, -0.1]])
    adapted = learner.adapt_to_rollouts(*rollout)
    expected = learner.mean_actions(adapted, queries).numpy()
    unadapted = learner.mean_actions(learner.initial_weights(), queries).numpy()
    assert np.abs(expected - unadapted).max() > 1e-3  # adaptation changes the actions
    path = tmp_path / "policy"
    tf_meta.rl.export_policy(learner, path)
    with pytest.raises(ValueError, match="exists"):
        tf_meta.rl.export_policy(learner, path)
    loaded = tf.saved_model.load(str(path))
    served = loaded.signatures["serving_default"](
        observations=rollout[0], actions=rollout[1], rewards=rollout[2], query_observations=queries
    )
    np.testing.assert_allclose(served["actions"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served["log_std"], adapted[-1], rtol=1e-6)
    acted = loaded.signatures["act"](observations=queries)["actions"]
    np.testing.assert_allclose(acted, unadapted, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="`rewards` must be \\[episodes, steps\\]"):
        learner.adapt_to_rollouts(rollout[0], rollout[1], rollout[2][0])


def test_the_clipped_surrogate_stops_the_gradient_outside_the_range():
    ratio = tf.constant([0.5, 1.0, 1.5, 0.5, 1.5])
    advantage = tf.constant([1.0, -1.0, 1.0, -1.0, -1.0])
    with tf.GradientTape() as tape:
        tape.watch(ratio)
        surrogate = rollouts.clipped_surrogate(ratio, advantage, 0.2)
    np.testing.assert_allclose(surrogate, [0.5, -1.0, 1.2, -0.8, -1.5])
    # Clipped where the ratio left the range in the direction its advantage rewards.
    np.testing.assert_allclose(tape.gradient(surrogate, ratio), [1.0, -1.0, 0.0, 0.0, -1.0])
