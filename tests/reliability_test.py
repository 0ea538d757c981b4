"""Bad input is refused early, by name, and changes nothing (issue 21's defects)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_meta

WAYS = 3


def classifier(outputs=WAYS):
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(outputs)]
    )


def batch(tasks=2, ways=WAYS, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.tile(np.repeat(np.arange(ways), 2), (tasks, 1)).astype("int32")
    x = {
        "support_x": rng.normal(size=(tasks, ways * 2, 4)).astype("float32"),
        "support_y": labels,
        "query_x": rng.normal(size=(tasks, ways * 2, 4)).astype("float32"),
    }
    return x, labels.copy()


CLASSIFIERS = {
    "MAML": lambda network: tf_meta.MAML(network, inner_learning_rate=0.3),
    "Reptile": lambda network: tf_meta.Reptile(network, inner_learning_rate=0.1, inner_steps=2),
    "IMAML": lambda network: tf_meta.IMAML(network, inner_steps=2),
    "PrototypicalNetwork": lambda network: tf_meta.PrototypicalNetwork(network),
}


def compiled(name, network=None):
    keras.utils.set_random_seed(0)
    learner = CLASSIFIERS[name](network or classifier())
    learner.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    learner.build_symbolically({k: tf.constant(v) for k, v in batch()[0].items()})
    learner.optimizer.build(learner.trainable_variables)
    return learner


def state(learner):
    return [v.numpy().copy() for v in learner.variables + learner.optimizer.variables]


def assert_unchanged(before, learner):
    for a, b in zip(before, state(learner), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.ci_params("name", "MAML", "PrototypicalNetwork", "Reptile")
@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
@pytest.mark.parametrize("key", ["support_y", "query_y"])
def test_fractional_class_labels_are_refused_by_every_learner(name, key):
    learner = compiled(name)
    before = state(learner)
    x, y = batch()
    if key == "support_y":
        x = {
            **x,
            "support_y": x["support_y"].astype("float32") + np.float32(0.6) * (x["support_y"] == 0),
        }
    else:
        y = y.astype("float32") + np.float32(0.6) * (y == 0)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{key} must hold integer class"):
        learner.fit(x, y, verbose=0)
    assert_unchanged(before, learner)


@pytest.mark.parametrize("name", ["MAML", "Reptile", "IMAML"])
def test_a_head_narrower_than_the_ways_is_named(name):
    learner = compiled(name, classifier(outputs=2))
    before = state(learner)
    with pytest.raises(tf.errors.InvalidArgumentError, match="the network has 2 outputs"):
        learner.fit(*batch(ways=WAYS), verbose=0)
    assert_unchanged(before, learner)


@pytest.mark.ci_params("name", "MAML", "PrototypicalNetwork", "Reptile")
@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_adapt_refuses_nan_support_inputs(name):
    learner = compiled(name)
    x, _ = batch()
    support_x = x["support_x"][0].copy()
    support_x[1, 2] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="support_x"):
        learner.adapt(support_x, x["support_y"][0])


@pytest.mark.parametrize(
    "make, argument",
    [
        (
            lambda: tf_meta.MAML(classifier(), inner_learning_rate=float("inf")),
            "inner_learning_rate",
        ),
        (lambda: tf_meta.MAML(classifier(), inner_learning_rate="0.1"), "inner_learning_rate"),
        (
            lambda: tf_meta.MetaSGD(classifier(), inner_learning_rate=float("nan")),
            "inner_learning_rate",
        ),
        (lambda: tf_meta.Reptile(classifier(), inner_learning_rate=True), "inner_learning_rate"),
        (
            lambda: tf_meta.MetaSGD(classifier(), per_step_learning_rates=True),
            "per_step_learning_rates",
        ),
        (lambda: tf_meta.PrototypicalNetwork(classifier(), cosine_scale="10"), "cosine_scale"),
        (lambda: tf_meta.MAML(classifier(), inner_steps=1.5), "inner_steps"),
    ],
)
def test_constructor_arguments_are_refused_by_name(make, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        make()


def test_fit_on_an_endless_stream_without_steps_per_epoch_is_refused():
    learner = compiled("MAML")
    before = state(learner)
    stream = tf.data.Dataset.from_tensors(batch()).repeat()
    with pytest.raises(ValueError, match="steps_per_epoch"):
        learner.fit(stream, verbose=0)
    assert_unchanged(before, learner)


def test_keras_backup_and_restore_works_on_a_learner_built_by_fit(tmp_path):
    keras.utils.set_random_seed(0)
    learner = tf_meta.MAML(classifier(), inner_learning_rate=0.3)
    learner.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    stream = tf.data.Dataset.from_tensors(batch()).repeat()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), delete_checkpoint=False)
    learner.fit(stream, steps_per_epoch=2, epochs=2, callbacks=[backup], verbose=0)
    assert int(learner.optimizer.iterations.numpy()) == 4
    assert (tmp_path / "backup" / "latest.weights.h5").exists()
