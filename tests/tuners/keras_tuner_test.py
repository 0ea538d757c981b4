"""tf_meta learners under KerasTuner: its own tuners, ours, architecture search, distribution."""

import json
import textwrap

import keras
import keras_tuner
import numpy as np
import pytest

import tf_meta
from tf_meta import tuners

TRAIN = tf_meta.data.sinusoid(shots=5, queries=5, meta_batch_size=8, seed=0)
VALIDATION = tf_meta.data.sinusoid(shots=5, queries=5, meta_batch_size=20, seed=1, num_tasks=40)


def build_maml(hp):
    learner = tf_meta.MAML(
        tf_meta.models.mlp(hidden_units=(hp.Choice("width", [16, 32]),) * 2),
        inner_learning_rate=hp.Float("inner_learning_rate", 1e-3, 0.3, sampling="log"),
        inner_steps=hp.Int("inner_steps", 1, 3),
    )
    learner.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", metrics=["mae"])
    return learner


TUNERS = {
    "RandomSearch": lambda **k: keras_tuner.RandomSearch(build_maml, max_trials=3, **k),
    "BayesianOptimization": lambda **k: keras_tuner.BayesianOptimization(
        build_maml, max_trials=3, num_initial_points=2, **k
    ),
    "Hyperband": lambda **k: keras_tuner.Hyperband(build_maml, max_epochs=2, factor=2, **k),
    "Evolution": lambda **k: tuners.Evolution(
        build_maml, max_trials=3, population_size=2, tournament_size=2, **k
    ),
    "Reinforce": lambda **k: tuners.Reinforce(build_maml, max_trials=3, **k),
}


@pytest.mark.parametrize(
    "name",
    [
        # Evolution's search is checked in CI on the architecture space below.
        pytest.param("Evolution", marks=pytest.mark.slow),
        "RandomSearch",
        # Slower searches: `pytest -m slow` (CI skips them to keep the suite short). The
        # oracle tests and the distributed search cover REINFORCE in CI.
        pytest.param("Reinforce", marks=pytest.mark.slow),
        pytest.param("BayesianOptimization", marks=pytest.mark.slow),
        pytest.param("Hyperband", marks=pytest.mark.slow),
    ],
)
def test_every_tuner_searches_maml_on_post_adaptation_validation_loss(name, tmp_path):
    tuner = TUNERS[name](objective="val_loss", seed=1, directory=tmp_path, project_name=name)
    tuner.search(TRAIN, validation_data=VALIDATION, epochs=1, steps_per_epoch=20, verbose=0)
    trials = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
    assert len(trials) >= 2
    best = tuner.get_best_models(1)[0]
    assert isinstance(best, tf_meta.MAML)
    best_trial = tuner.oracle.get_best_trials(1)[0]
    assert best.inner_steps == best_trial.hyperparameters.values["inner_steps"]
    # The recorded objective is the learner's own post-adaptation validation loss.
    np.testing.assert_allclose(
        best.evaluate(VALIDATION, verbose=0, return_dict=True)["loss"], best_trial.score, rtol=1e-4
    )


def test_objective_the_learner_does_not_report_is_rejected_before_any_trial(tmp_path):
    for tuner_class in (tuners.Evolution, tuners.Reinforce):
        tuner = tuner_class(build_maml, objective="val_accuracy", max_trials=2, directory=tmp_path)
        with pytest.raises(ValueError, match="'val_accuracy' is not reported.*'loss', 'mae'"):
            tuner.search(TRAIN, validation_data=VALIDATION, epochs=1, steps_per_epoch=2)
        assert tuner.oracle.trials == {}


def build_convnet(hp):
    """Small-scale architecture search: blocks and filters of a conv4-style network."""
    layers = [keras.Input((28, 28, 1))]
    for _ in range(hp.Int("blocks", 1, 3)):
        layers += [
            keras.layers.Conv2D(hp.Choice("filters", [8, 16]), 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(2),
        ]
    layers += [keras.layers.Flatten(), keras.layers.Dense(5)]
    learner = tf_meta.MAML(keras.Sequential(layers), inner_learning_rate=0.4, first_order=True)
    learner.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return learner


@pytest.mark.parametrize(
    "name",
    [
        "Evolution",
        pytest.param("RandomSearch", marks=pytest.mark.slow),
        pytest.param("BayesianOptimization", marks=pytest.mark.slow),
        pytest.param("Reinforce", marks=pytest.mark.slow),
    ],
)
def test_architecture_search_space_on_omniglot(name, tmp_path, omniglot_dir):
    images, labels = tf_meta.data.load_omniglot("background", data_dir=omniglot_dir)
    train = tf_meta.data.episodes((images, labels), 5, 1, 2, 4, seed=0)
    validation = tf_meta.data.episodes((images, labels), 5, 1, 2, 10, seed=1, num_tasks=10)
    base = {
        "RandomSearch": keras_tuner.RandomSearch,
        "BayesianOptimization": keras_tuner.BayesianOptimization,
        "Evolution": lambda *a, **k: tuners.Evolution(
            *a, population_size=2, tournament_size=1, **k
        ),
        "Reinforce": tuners.Reinforce,
    }[name]
    tuner = base(build_convnet, objective="val_accuracy", max_trials=3, seed=2, directory=tmp_path)
    tuner.search(train, validation_data=validation, epochs=1, steps_per_epoch=3, verbose=0)
    blocks = {t.hyperparameters.values["blocks"] for t in tuner.oracle.trials.values()}
    assert blocks <= {1, 2, 3}
    model = tuner.get_best_models(1)[0]
    convolutions = [x for x in model.model.layers if isinstance(x, keras.layers.Conv2D)]
    assert len(convolutions) == tuner.oracle.get_best_trials(1)[0].hyperparameters.values["blocks"]


WORKER = textwrap.dedent(
    """
    import math, sys, time
    import keras_tuner
    from tf_meta import tuners

    def objective(values):
        return (values["x"] - 0.3) ** 2 + 0.1 * values["n"]

    class Synthetic(tuners.{tuner}):
        def run_trial(self, trial, *args, **kwargs):
            time.sleep(0.2)
            return objective(trial.hyperparameters.values)

    hp = keras_tuner.HyperParameters()
    hp.Float("x", 0.0, 1.0)
    hp.Int("n", 0, 5)
    tuner = Synthetic(hyperparameters=hp, max_trials=12, seed=3, directory=sys.argv[1],
                      project_name="distributed")
    tuner.search(verbose=0)
    """
)


@pytest.mark.ci_params("tuner", "Evolution")  # Reinforce: `pytest -m slow`
@pytest.mark.parametrize("tuner", ["Evolution", "Reinforce"])
def test_chief_and_two_workers_share_trials_without_repeats(tuner, tuner_cluster):
    trials = tuner_cluster(WORKER.format(tuner=tuner))
    assert len(trials) == 12
    values = [json.dumps(t["hyperparameters"]["values"], sort_keys=True) for t in trials]
    assert len(set(values)) == 12  # no configuration run twice
    assert all(t["status"] == "COMPLETED" for t in trials)
