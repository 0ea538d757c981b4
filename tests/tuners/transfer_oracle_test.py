"""TransferOracle: ranking by similarity, the warm start, the continuing search, other spaces."""

import json
import textwrap

import keras_tuner
import numpy as np
import pytest

from tf_meta import tuners
from tf_meta.tuners.configurations import best_values, encode, fit_to_space


@pytest.mark.parametrize("family", ["small", "large", "classes"])
def test_meta_features_rank_the_true_family_first(families, family_history, family):
    x, y = families.task(family, seed=999)
    oracle = tuners.TransferOracle(family_history, x, y, hyperparameters=families.space())
    nearest = [name for name, _ in oracle.ranking()[:4]]
    assert all(name.startswith(family + "-") for name in nearest), oracle.ranking()


def test_learned_embedding_ranks_the_true_family_first(families, family_history):
    records = family_history.records()
    encoder = tuners.TaskEncoder()
    inputs = encoder.task_batch([(record["x"], record["y"]) for record in records])
    best = np.stack([encode(best_values(record), families.space()) for record in records])
    targets = np.linalg.norm(best[:, None] - best[None], axis=-1) / np.sqrt(best.shape[1])

    def distance_error():
        embeddings = encoder(inputs).numpy()
        distances = np.linalg.norm(embeddings[:, None] - embeddings[None], axis=-1)
        return np.mean((distances - targets) ** 2)

    before = distance_error()
    encoder.fit_history(records, steps=150, verbose=0)
    assert distance_error() < 0.2 * before
    for family in families.optima:
        x, y = families.task(family, seed=999)
        oracle = tuners.TransferOracle(
            records, x, y, encoder=encoder, hyperparameters=families.space()
        )
        assert oracle.ranking()[0][0].startswith(family + "-"), (family, oracle.ranking())


@pytest.mark.parametrize("search", tuners.transfer_oracle.SEARCHES)
def test_first_trials_are_the_neighbours_best_configurations_then_the_search_goes_on(
    families, family_history, search, tmp_path
):
    x, y = families.task("large", seed=999)
    oracle = tuners.TransferOracle(
        family_history,
        x,
        y,
        max_trials=8,
        neighbours=3,
        search=search,
        seed=1,
        hyperparameters=families.space(),
    )
    families.tuner(oracle, "large", str(tmp_path)).search(verbose=0)
    by_name = {record["name"]: record for record in family_history.records()}
    expected = [best_values(by_name[name]) for name, _ in oracle.ranking()[:3]]
    assert len({repr(values) for values in expected}) == 3  # three distinct warm trials
    trials = [oracle.trials[trial_id] for trial_id in oracle.start_order]
    assert [trial.hyperparameters.values for trial in trials[:3]] == expected
    assert len(trials) == 8
    hashes = {oracle._compute_values_hash(trial.hyperparameters.values) for trial in trials}
    assert len(hashes) == 8  # the continuing search repeats nothing
    # The warm start is already near the family's optimum; a random first trial rarely is.
    assert min(trial.score for trial in trials[:3]) < 0.1


def test_a_predictor_gives_the_first_trial(families, family_history, tmp_path):
    predictor = tuners.ConfigurationPredictor(families.space(), candidates=200)
    predictor.fit(family_history.records(), epochs=100, verbose=0)
    x, y = families.task("small", seed=999)
    oracle = tuners.TransferOracle(
        family_history,
        x,
        y,
        max_trials=2,
        neighbours=1,
        predictor=predictor,
        hyperparameters=families.space(),
    )
    families.tuner(oracle, "small", str(tmp_path)).search(verbose=0)
    first = oracle.trials[oracle.start_order[0]].hyperparameters.values
    assert first == predictor.predict(x, y)


def test_a_different_space_takes_defaults_for_what_the_history_lacks(families, family_history):
    hp = keras_tuner.HyperParameters()
    hp.Float("learning_rate", 1e-3, 1.0, sampling="log", default=0.5)  # narrower range
    hp.Int("layers", 1, 4, default=2)  # not in the history
    x, y = families.task("large", seed=999)
    oracle = tuners.TransferOracle(family_history, x, y, neighbours=2, hyperparameters=hp)
    oracle.warm_start = oracle._warm_values()
    # The family's best rates (about 1e-4) are outside this range: they take the default.
    # The history's optimizer is not in this space: it is dropped.
    assert oracle.warm_start == [{"learning_rate": 0.5, "layers": 2}]
    assert fit_to_space({"learning_rate": 0.01, "other": "x"}, hp) == {
        "learning_rate": 0.01,
        "layers": 2,
    }


def test_resuming_continues_the_warm_start(families, family_history, tmp_path):
    x, y = families.task("classes", seed=999)

    def run(max_trials, overwrite):
        oracle = tuners.TransferOracle(
            family_history,
            x,
            y,
            max_trials=max_trials,
            neighbours=4,
            seed=1,
            hyperparameters=families.space(),
        )
        return families.tuner(oracle, "classes", str(tmp_path), overwrite=overwrite)

    first = run(2, overwrite=True)
    first.search(verbose=0)
    resumed = run(6, overwrite=False)
    resumed.search(verbose=0)
    oracle = resumed.oracle
    values = [oracle.trials[trial_id].hyperparameters.values for trial_id in oracle.start_order]
    assert values[:4] == oracle.warm_start[:4]


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"history": []}, "`history` holds no search"),
        ({"neighbours": 0}, "`neighbours`"),
        ({"max_trials": -1}, "`max_trials`"),
        ({"search": "grid"}, "`search` must be one of"),
        ({"x": np.zeros((2, 1)), "y": np.zeros(2)}, "at least 4 examples"),
    ],
)
def test_bad_arguments_are_refused(families, family_history, arguments, message):
    x, y = families.task("small", seed=1)
    given = {"history": family_history, "x": x, "y": y, **arguments}
    with pytest.raises(ValueError, match=message):
        tuners.TransferOracle(**given)


# A chief and two workers of KerasTuner's distributed mode, the chief's oracle a TransferOracle.
_DISTRIBUTED = textwrap.dedent(
    """
    import math, sys, time
    import keras_tuner, numpy as np
    from tf_meta import tuners

    hp = keras_tuner.HyperParameters()
    hp.Choice("optimizer", ["adam", "sgd"])
    hp.Float("learning_rate", 1e-5, 1.0, sampling="log")

    class Synthetic(keras_tuner.Tuner):
        def run_trial(self, trial, *args, **kwargs):
            time.sleep(0.2)
            values = trial.hyperparameters.values
            return (math.log10(values["learning_rate"]) + 4) ** 2 + 2.0 * (
                values["optimizer"] != "adam")

    x = np.linspace(-10, 10, 80, dtype=np.float32)[:, None]
    oracle = tuners.TransferOracle(tuners.SearchHistory(sys.argv[2]), x, np.sin(x / 10),
                                   max_trials=8, neighbours=3, seed=1, hyperparameters=hp)
    Synthetic(oracle, directory=sys.argv[1], project_name="distributed").search(verbose=0)
    """
)


def test_distributed_search_starts_from_the_warm_start(families, family_history, tuner_cluster):
    trials = tuner_cluster(_DISTRIBUTED, family_history.directory)
    x = np.linspace(-10, 10, 80, dtype=np.float32)[:, None]
    oracle = tuners.TransferOracle(
        family_history, x, np.sin(x / 10), neighbours=3, hyperparameters=families.space()
    )
    warm = oracle._warm_values()
    values = [trial["hyperparameters"]["values"] for trial in trials]
    assert len(values) == 8 and all(trial["status"] == "COMPLETED" for trial in trials)
    assert values[: len(warm)] == warm
    assert len({json.dumps(value, sort_keys=True) for value in values}) == 8
