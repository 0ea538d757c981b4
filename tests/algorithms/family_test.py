"""Checks every learner passes: saving, distribution, XLA and learning."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta

WAYS = 5


def classifier():
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(WAYS)]
    )


def encoder():
    """With batch normalization, whose moving statistics a prototypical network updates."""
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16),
            keras.layers.BatchNormalization(momentum=0.5),
            keras.layers.ReLU(),
            keras.layers.Dense(8),
        ]
    )


# CI runs one learner of each kind (nested-tape MAML, Reptile's interpolation, a metric
# learner): the others share their steps; `pytest -m slow` runs all eight.
LEARNERS = {
    "MAML": lambda: tf_meta.MAML(classifier(), inner_learning_rate=0.3, inner_steps=2),
    "FOMAML": lambda: tf_meta.MAML(classifier(), inner_learning_rate=0.3, first_order=True),
    "FOMAMLZeroingTrick": lambda: tf_meta.MAML(
        classifier(), inner_learning_rate=0.3, first_order=True, zeroing_trick=True
    ),
    "MetaSGD": lambda: tf_meta.MetaSGD(classifier(), inner_learning_rate=0.3),
    "ANIL": lambda: tf_meta.ANIL(classifier(), inner_learning_rate=0.3, inner_steps=2),
    "PrototypicalNetwork": lambda: tf_meta.PrototypicalNetwork(encoder()),
    "Reptile": lambda: tf_meta.Reptile(classifier(), inner_learning_rate=0.1, inner_steps=3),
    "ReptileSGD": lambda: tf_meta.Reptile(
        classifier(), inner_learning_rate=0.3, inner_optimizer="sgd", transductive=False
    ),
}


def compiled(name, optimizer=None, **compile_arguments):
    keras.utils.set_random_seed(0)
    learner = LEARNERS[name]()
    learner.compile(
        optimizer=optimizer or keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        **compile_arguments,
    )
    return learner


def clusters(tasks, seed=0):
    """Episodes of 5-way 2-shot 3-query classification of Gaussian clusters in 8 dimensions."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 8)) * 2
    labels = np.repeat(np.arange(20), 10)
    points = (centers[labels] + rng.normal(size=(200, 8))).astype("float32")
    return tf_meta.data.episodes((points, labels), WAYS, 2, 3, tasks, seed=seed)


@pytest.mark.ci_params("name", "MAML", "PrototypicalNetwork", "Reptile")
@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_saving_round_trip_gives_identical_predictions(name, tmp_path):
    learner = compiled(name)
    learner.fit(clusters(4), steps_per_epoch=3, verbose=0, shuffle=False)
    x, y = next(iter(clusters(6, seed=1)))
    learner.save(tmp_path / "learner.keras")
    restored = keras.saving.load_model(tmp_path / "learner.keras")
    assert type(restored) is type(learner)
    hyperparameters = lambda config: {k: v for k, v in config.items() if k != "model"}  # noqa: E731
    assert hyperparameters(restored.get_config()) == hyperparameters(learner.get_config())
    np.testing.assert_array_equal(restored.predict(x, verbose=0), learner.predict(x, verbose=0))
    np.testing.assert_allclose(
        restored.evaluate(x, y, verbose=0), learner.evaluate(x, y, verbose=0), rtol=1e-6
    )


@pytest.mark.ci_params("name", "MAML", "PrototypicalNetwork", "Reptile")
@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_mirrored_step_equals_single_device_step(name, mirrored_strategy):
    batch = clusters(8).take(1).cache()
    weights = []
    for strategy in (tf.distribute.get_strategy(), mirrored_strategy):
        with strategy.scope():
            learner = compiled(name, optimizer=keras.optimizers.SGD(0.5))
        learner.fit(batch, epochs=1, verbose=0, shuffle=False)
        weights.append(learner.get_weights())
    for single, mirrored in zip(*weights, strict=True):
        np.testing.assert_allclose(mirrored, single, rtol=1e-5, atol=1e-6)


@pytest.mark.ci_params("name", "MAML", "PrototypicalNetwork", "Reptile")
@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_jit_compile_gives_the_same_steps_as_graph_mode(name):
    batch = clusters(4).take(3).cache()
    weights = []
    for jit_compile in (False, True):
        # Adam has slot variables, created when the compiled step is traced. A large epsilon
        # keeps it from scaling rounding noise in gradients that are zero in exact
        # arithmetic (a bias before batch normalization) up to full steps.
        optimizer = keras.optimizers.Adam(0.01, epsilon=1.0)
        learner = compiled(name, optimizer, jit_compile=jit_compile)
        learner.fit(batch, epochs=1, verbose=0, shuffle=False)
        weights.append(learner.get_weights())
    for graph, xla in zip(*weights, strict=True):
        np.testing.assert_allclose(xla, graph, rtol=1e-4, atol=1e-5)


@pytest.mark.ci_params("name", "MAML", "PrototypicalNetwork", "Reptile")
@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_training_changes_weights_from_the_shared_initialization(name):
    learner = compiled(name)
    x, y = next(iter(clusters(4)))
    learner(x)
    initial = [w.copy() for w in learner.get_weights()]
    learner.fit(x, y, epochs=1, verbose=0)
    assert (
        max(np.abs(a - b).max() for a, b in zip(initial, learner.get_weights(), strict=True)) > 1e-4
    )
