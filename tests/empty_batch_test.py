"""Meta-batches with no task: on one device a clear error, under a strategy a partial batch."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta

WAYS = 3


def classifier():
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(WAYS)]
    )


def encoder():
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(momentum=0.5),
            keras.layers.Dense(4),
        ]
    )


LEARNERS = {
    "MAML": lambda: tf_meta.MAML(classifier(), inner_learning_rate=0.3, inner_steps=2),
    "FOMAML": lambda: tf_meta.MAML(classifier(), inner_learning_rate=0.3, first_order=True),
    "MetaSGD": lambda: tf_meta.MetaSGD(classifier(), inner_learning_rate=0.3),
    "ANIL": lambda: tf_meta.ANIL(classifier(), inner_learning_rate=0.3, inner_steps=2),
    "Reptile": lambda: tf_meta.Reptile(classifier(), inner_learning_rate=0.1, inner_steps=2),
    "IMAML": lambda: tf_meta.IMAML(classifier(), inner_learning_rate=0.1, inner_steps=2),
    "PrototypicalNetwork": lambda: tf_meta.PrototypicalNetwork(encoder()),
}


def batch(tasks, seed=0):
    rng = np.random.default_rng(seed)
    x = {
        "support_x": rng.normal(size=(tasks, WAYS * 2, 4)).astype("float32"),
        "support_y": np.tile(np.repeat(np.arange(WAYS), 2), (tasks, 1)).astype("int32"),
        "query_x": rng.normal(size=(tasks, WAYS * 2, 4)).astype("float32"),
    }
    return x, np.tile(np.repeat(np.arange(WAYS), 2), (tasks, 1)).astype("int32")


def compiled(name, optimizer=None):
    keras.utils.set_random_seed(0)
    learner = LEARNERS[name]()
    learner.compile(
        optimizer=optimizer or keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return learner


def state(learner):
    return [v.numpy().copy() for v in learner.variables + learner.optimizer.variables]


@pytest.mark.ci_params("name", "MAML", "PrototypicalNetwork", "Reptile")
@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_an_empty_batch_fails_and_changes_nothing(name):
    learner = compiled(name)
    x, y = batch(2)
    learner.fit(x, y, verbose=0)  # one valid step builds everything
    before = state(learner)
    empty = tf.data.Dataset.from_tensors(batch(0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="no task"):
        learner.fit(empty, verbose=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="no task"):
        learner.evaluate(empty, verbose=0)
    assert learner.predict(empty, verbose=0).shape[:2] == (0, WAYS * 2)
    after = state(learner)
    assert int(learner.optimizer.iterations.numpy()) == 1
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(np.isfinite(v).all() for v in after)


# First-order MAML and ANIL take MAML's path through the step.
@pytest.mark.ci_params("name", "MAML", "PrototypicalNetwork", "Reptile")
@pytest.mark.parametrize("name", sorted(set(LEARNERS) - {"FOMAML", "ANIL"}))
def test_a_global_batch_smaller_than_the_replicas_steps_like_one_device(name, mirrored_strategy):
    """One task on two replicas: one replica gets it, the other none."""
    dataset = tf.data.Dataset.from_tensors(batch(1))
    weights, initial = [], []
    for strategy in (tf.distribute.get_strategy(), mirrored_strategy):
        with strategy.scope():
            learner = compiled(name, keras.optimizers.SGD(0.5))
            learner(batch(1)[0])
        initial.append(learner.get_weights())
        learner.fit(dataset, epochs=2, verbose=0)
        weights.append(learner.get_weights())
        assert int(learner.optimizer.iterations.numpy()) == 2
    for a, b in zip(*initial, strict=True):
        np.testing.assert_array_equal(a, b)
    assert max(np.abs(a - b).max() for a, b in zip(initial[0], weights[0], strict=True)) > 1e-4
    for single, mirrored in zip(*weights, strict=True):
        assert np.isfinite(mirrored).all()
        np.testing.assert_allclose(mirrored, single, rtol=1e-5, atol=1e-6)
