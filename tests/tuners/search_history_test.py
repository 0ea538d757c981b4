"""SearchHistory: what it records, across processes, and what a killed writer leaves."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import keras_tuner
import numpy as np
import pytest

from tf_meta import tuners

# Runs a small search and records it; `kill_while_writing` kills the process with SIGKILL
# after record.json is written and before examples.npz is, inside the staging directory.
_WRITER = textwrap.dedent(
    """
    import json, math, os, signal, sys
    import keras_tuner, numpy as np
    from tf_meta import tuners

    directory, name, kill_while_writing = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    hp = keras_tuner.HyperParameters()
    hp.Float("learning_rate", 1e-4, 1.0, sampling="log")
    hp.Choice("optimizer", ["adam", "sgd"])

    class Synthetic(keras_tuner.Tuner):
        def run_trial(self, trial, *args, **kwargs):
            values = trial.hyperparameters.values
            return (math.log10(values["learning_rate"]) + 2) ** 2 + (values["optimizer"] == "sgd")

    oracle = keras_tuner.oracles.RandomSearchOracle(max_trials=5, seed=3, hyperparameters=hp)
    Synthetic(oracle, directory=os.path.join(directory, "scratch-" + name)).search(verbose=0)
    if kill_while_writing:
        def killed(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        np.savez = killed
    x = np.linspace(-1, 1, 40, dtype=np.float32)[:, None]
    tuners.SearchHistory(os.path.join(directory, "history")).add(
        name, oracle, x, np.sin(x), information={"family": "sine"}
    )
    trials = [oracle.trials[i] for i in oracle.start_order]
    print(json.dumps([[t.hyperparameters.values, t.score] for t in trials]))
    """
)


def _write(directory, name, kill=False):
    return subprocess.run(
        [sys.executable, "-c", _WRITER, str(directory), name, "1" if kill else "0"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )


def test_a_history_written_by_one_process_is_read_by_another(tmp_path):
    completed = _write(tmp_path, "sine")
    assert completed.returncode == 0, completed.stderr[-3000:]
    trials = json.loads(completed.stdout.strip().splitlines()[-1])
    (record,) = tuners.SearchHistory(str(tmp_path / "history")).records()
    assert record["name"] == "sine"
    assert record["information"] == {"family": "sine"}
    assert record["objective"] == {"name": "default_objective", "direction": "min"}
    assert [[trial["values"], trial["score"]] for trial in record["trials"]] == trials
    np.testing.assert_array_equal(record["x"], np.linspace(-1, 1, 40, dtype=np.float32)[:, None])
    space = keras_tuner.HyperParameters.from_config(record["space"])
    assert [hp.name for hp in space.space] == ["learning_rate", "optimizer"]
    assert record["meta_features"]["log_examples"] == pytest.approx(np.log(40))
    assert record["meta_features"]["classification"] == 0.0


def test_a_record_killed_mid_write_is_skipped_with_a_warning_and_earlier_ones_stay(tmp_path):
    assert _write(tmp_path, "first").returncode == 0
    killed = _write(tmp_path, "second", kill=True)
    assert killed.returncode == -9, killed.stderr[-3000:]
    history_dir = tmp_path / "history"
    (leftover,) = [name for name in os.listdir(history_dir) if name.startswith(".tmp-")]
    assert sorted(os.listdir(history_dir / leftover)) == ["record.json"]
    with pytest.warns(UserWarning, match=leftover):
        records = tuners.SearchHistory(str(history_dir)).records()
    assert [record["name"] for record in records] == ["first"]


def test_an_unreadable_record_is_skipped_with_a_warning_naming_it(tmp_path, family_history):
    history = tuners.SearchHistory(str(tmp_path / "history"))
    for name in ("classes-0", "classes-1"):
        shutil.copytree(
            os.path.join(family_history.directory, name), os.path.join(history.directory, name)
        )
    broken = os.path.join(history.directory, "classes-0", "record.json")
    with open(broken, "r+") as file:
        file.truncate(40)
    with pytest.warns(UserWarning, match="unreadable record.*classes-0"):
        records = history.records()
    assert [record["name"] for record in records] == ["classes-1"]


def _finished_oracle(directory):
    hp = keras_tuner.HyperParameters()
    hp.Float("rate", 0.0, 1.0)

    class Synthetic(keras_tuner.Tuner):
        def run_trial(self, trial, *args, **kwargs):
            return trial.hyperparameters.values["rate"]

    oracle = keras_tuner.oracles.RandomSearchOracle(max_trials=2, seed=1, hyperparameters=hp)
    Synthetic(oracle, directory=str(directory)).search(verbose=0)
    return oracle


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"name": "a/b"}, "`name`"),
        ({"name": ".hidden"}, "`name`"),
        ({"name": "taken"}, "already recorded"),
        ({"search": "not a tuner"}, "`search` must be a KerasTuner"),
        ({"search": keras_tuner.oracles.RandomSearchOracle(max_trials=1)}, "no finished trial"),
        ({"x": np.zeros((2, 1)), "y": np.zeros(2)}, "at least 4 examples"),
        ({"x": np.full((10, 1), np.nan)}, "`x` holds a NaN"),
        ({"y": np.zeros(9)}, "same number of examples"),
        ({"information": {"bad": object()}}, "`information` must be JSON"),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(tmp_path, arguments, message):
    history = tuners.SearchHistory(str(tmp_path / "history"))
    oracle = _finished_oracle(tmp_path / "scratch")
    given = {"name": "taken", "search": oracle, "x": np.zeros((10, 1)), "y": np.zeros(10)}
    history.add(**given)
    before = sorted(os.listdir(history.directory))
    with pytest.raises(ValueError, match=message):
        history.add(**{**given, "name": "new", **arguments})
    assert sorted(os.listdir(history.directory)) == before


def test_max_examples_keeps_a_fixed_sample(tmp_path):
    history = tuners.SearchHistory(str(tmp_path / "history"), max_examples=8)
    oracle = _finished_oracle(tmp_path / "scratch")
    x = np.arange(100, dtype=np.float32)[:, None]
    first = history.add("a", oracle, x, x[:, 0])
    second = history.add("b", oracle, x, x[:, 0])
    assert first["x"].shape == (8, 1)
    np.testing.assert_array_equal(first["x"], second["x"])
    with pytest.raises(ValueError, match="`max_examples`"):
        tuners.SearchHistory(str(tmp_path), max_examples=2)
