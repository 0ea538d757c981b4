import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta


def episode_batch(tasks=4, shots=5, queries=6, seed=0):
    x, y = next(iter(tf_meta.data.sinusoid(shots, queries, meta_batch_size=tasks, seed=seed)))
    return {k: v.numpy() for k, v in x.items()}, y.numpy()


def batchnorm_mlp():
    return keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(16),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dense(1),
        ]
    )


def functional_mlp():
    inputs = keras.Input((1,))
    hidden = keras.layers.Dense(16, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1)(hidden))


@keras.saving.register_keras_serializable(package="tf_meta_tests")
class SubclassedRegressor(keras.Model):
    def __init__(self, units=16, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = keras.layers.Dense(units, activation="tanh")
        self.out = keras.layers.Dense(1)

    def call(self, inputs):
        return self.out(self.hidden(inputs))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def variable_values(model):
    return [v.numpy().copy() for v in model.variables]


def compiled_maml(network, **kwargs):
    learner = tf_meta.MAML(network, inner_learning_rate=0.1, **kwargs)
    learner.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", metrics=["mae"])
    return learner


@pytest.mark.parametrize("factory", [tf_meta.models.mlp, functional_mlp, SubclassedRegressor])
def test_any_keras_model_trains_and_saving_round_trips(factory, tmp_path):
    x, y = episode_batch()
    learner = compiled_maml(factory(), eval_inner_steps=2)
    history = learner.fit(x, y, batch_size=2, epochs=2, verbose=0)
    assert set(history.history) == {"loss", "mae"}
    before = learner.predict(x, verbose=0)
    path = tmp_path / "learner.keras"
    learner.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, tf_meta.MAML)
    assert restored.eval_inner_steps == 2
    np.testing.assert_array_equal(restored.predict(x, verbose=0), before)
    np.testing.assert_allclose(
        restored.evaluate(x, y, verbose=0), learner.evaluate(x, y, verbose=0)
    )


def test_predict_evaluate_and_adapt_leave_variables_unchanged():
    x, y = episode_batch()
    learner = compiled_maml(batchnorm_mlp(), eval_inner_steps=3)
    learner.fit(x, y, epochs=1, verbose=0)  # builds the optimizer too
    before = variable_values(learner)
    learner.predict(x, verbose=0)
    learner.evaluate(x, y, verbose=0)
    learner.adapt(x["support_x"][0], x["support_y"][0])
    learner.adapted_model(x["support_x"][0], x["support_y"][0])
    for a, b in zip(before, variable_values(learner), strict=True):
        np.testing.assert_array_equal(a, b)


def test_training_changes_weights_but_not_batchnorm_moving_statistics():
    x, y = episode_batch()
    learner = compiled_maml(batchnorm_mlp())
    learner(x)
    moving = [v.numpy().copy() for v in learner.model.non_trainable_variables]
    trainable = [v.numpy().copy() for v in learner.model.trainable_variables]
    learner.fit(x, y, epochs=2, verbose=0)
    for a, v in zip(moving, learner.model.non_trainable_variables, strict=True):
        np.testing.assert_array_equal(a, v.numpy())
    assert any(
        np.abs(a - v.numpy()).max() > 0
        for a, v in zip(trainable, learner.model.trainable_variables, strict=True)
    )


def test_batchnorm_is_transductive():
    # Query predictions use the statistics of the query batch: shifting every query input
    # changes nothing a BatchNorm after the first linear layer can see.
    x, _ = episode_batch(tasks=1)
    learner = compiled_maml(batchnorm_mlp(), inner_steps=0)
    shifted = dict(x, query_x=x["query_x"] + 3.0)
    np.testing.assert_allclose(
        learner.predict(shifted, verbose=0), learner.predict(x, verbose=0), atol=1e-4
    )


def test_adapted_model_matches_learner_predictions_and_saves(tmp_path):
    x, _ = episode_batch(tasks=3)
    for network in (tf_meta.models.mlp(), SubclassedRegressor()):
        learner = compiled_maml(network, eval_inner_steps=4)
        predictions = learner.predict(x, verbose=0)
        for task in range(3):
            adapted = learner.adapted_model(x["support_x"][task], x["support_y"][task])
            assert adapted is not learner.model
            np.testing.assert_allclose(
                adapted(x["query_x"][task]), predictions[task], rtol=1e-5, atol=1e-6
            )
        adapted.save(tmp_path / "adapted.keras")
        reloaded = keras.saving.load_model(tmp_path / "adapted.keras")
        np.testing.assert_allclose(reloaded(x["query_x"][2]), predictions[2], rtol=1e-5, atol=1e-6)


def test_jit_compile_gives_the_same_step():
    x, y = episode_batch(tasks=4)
    weights = None
    results = []
    for jit_compile in (False, True):
        keras.utils.set_random_seed(0)
        learner = tf_meta.MAML(tf_meta.models.mlp(), inner_learning_rate=0.1, inner_steps=2)
        learner.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", jit_compile=jit_compile)
        learner(x)
        if weights is None:
            weights = learner.get_weights()
        learner.set_weights(weights)
        learner.fit(x, y, batch_size=4, epochs=3, verbose=0)
        results.append(learner.get_weights())
    assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(weights, results[0], strict=True))
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("first_order", [False, True])
def test_mirrored_strategy_step_equals_single_device_step(first_order, mirrored_strategy):
    x, y = episode_batch(tasks=8)
    dataset = tf.data.Dataset.from_tensors((x, y))

    def one_step(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            learner = tf_meta.MAML(
                tf_meta.models.mlp(),
                inner_learning_rate=0.1,
                inner_steps=2,
                first_order=first_order,
            )
            learner.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
        initial = [v.numpy().copy() for v in learner.model.trainable_variables]
        learner.fit(dataset, epochs=1, verbose=0)
        return initial, learner.get_weights()

    initial, single = one_step(tf.distribute.get_strategy())
    initial_mirrored, mirrored = one_step(mirrored_strategy)
    for a, b in zip(initial, initial_mirrored, strict=True):
        np.testing.assert_array_equal(a, b)
    assert max(np.abs(a - b).max() for a, b in zip(initial, single, strict=True)) > 1e-3
    for a, b in zip(single, mirrored, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


def test_short_fit_on_sinusoids_lowers_post_adaptation_mse():
    learner = tf_meta.MAML(tf_meta.models.mlp(), inner_learning_rate=0.01, eval_inner_steps=5)
    learner.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    pool = tf_meta.data.sinusoid(meta_batch_size=50, seed=1, num_tasks=100)
    before = learner.evaluate(pool, verbose=0)
    learner.fit(tf_meta.data.sinusoid(meta_batch_size=25, seed=0), steps_per_epoch=1500, verbose=0)
    after = learner.evaluate(pool, verbose=0)
    assert after < 0.5 * before, (before, after)


EPISODE = {"support_x": (4, 5, 1), "support_y": (4, 5, 1), "query_x": (4, 6, 1)}


def with_shapes(**changes):
    shapes = {**EPISODE, **changes}
    return {k: np.zeros(s, "float32") for k, s in shapes.items() if s is not None}


@pytest.mark.parametrize(
    "x, y, message",
    [
        (
            np.zeros((4, 5, 1), "float32"),
            np.zeros((4, 6, 1), "float32"),
            r"received x of type .* with shape \(4, 5, 1\)",
        ),
        (with_shapes(support_y=None), np.zeros((4, 6, 1)), r"missing: \['support_y'\]"),
        (
            {**with_shapes(support_y=None), "suport_y": np.zeros((4, 5, 1))},
            np.zeros((4, 6, 1)),
            "suport_y",
        ),
        (
            {**with_shapes(), "query_y": np.zeros((4, 6, 1))},
            np.zeros((4, 6, 1)),
            "Pass query_y as the target",
        ),
        (
            with_shapes(query_x=(4, 6, 2)),
            np.zeros((4, 6, 1)),
            r"'query_x' has feature shape \(2,\) but 'support_x' has \(1,\)",
        ),
        (
            with_shapes(support_y=(4, 7, 1)),
            np.zeros((4, 6, 1)),
            r"'support_y' has examples \(7,\) but 'support_x' has \(5,\)",
        ),
        (with_shapes(query_x=(3, 6, 1)), np.zeros((4, 6, 1)), "'query_x' has task axis"),
        (
            with_shapes(),
            np.zeros((4, 5, 1)),
            r"'query_y' has examples \(5,\) but 'query_x' has \(6,\)",
        ),
        (with_shapes(), np.zeros((4, 6, 2)), "'query_y' has target shape"),
        (with_shapes(support_x=(4, 5)), np.zeros((4, 6, 1)), "'support_x' must have rank >= 3"),
    ],
)
def test_bad_episode_batches_raise_value_error_before_any_change(x, y, message):
    learner = compiled_maml(tf_meta.models.mlp())
    before = variable_values(learner)
    dataset = tf.data.Dataset.from_tensors((x, y))
    with pytest.raises(ValueError, match=message):
        learner.fit(dataset, verbose=0)
    for a, b in zip(before, variable_values(learner), strict=True):
        np.testing.assert_array_equal(a, b)


def test_missing_targets_and_missing_loss_raise_value_error():
    x, y = episode_batch()
    learner = compiled_maml(tf_meta.models.mlp())
    with pytest.raises(ValueError, match="no targets"):
        learner.fit(tf.data.Dataset.from_tensors(x), verbose=0)
    learner = tf_meta.MAML(tf_meta.models.mlp())
    with pytest.raises(ValueError, match="No inner loss"):
        learner.predict(x, verbose=0)


def test_adapt_rejects_mismatched_support():
    learner = compiled_maml(tf_meta.models.mlp())
    with pytest.raises(ValueError, match="'support_y' has examples"):
        learner.adapt(np.zeros((5, 1), "float32"), np.zeros((4, 1), "float32"))
