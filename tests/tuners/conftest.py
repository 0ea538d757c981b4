"""A constructed search history whose right answers are known.

Three task families whose data differ plainly (regression on inputs of scale 0.1, regression on
inputs of scale 10, 4-class classification) and whose searches have different optima. Each
recorded search is a synthetic random search whose objective is the distance of a
configuration from its family's optimum, so a held-out task's nearest family, and what a
good configuration for it is, are known in advance.
"""

import json
import math
import os
import subprocess
import sys
import types

import keras_tuner
import numpy as np
import pytest

from tf_meta import tuners

# family: (optimizer, learning_rate) at the optimum
OPTIMA = {"small": ("sgd", 1e-1), "large": ("adam", 1e-4), "classes": ("adam", 1e-2)}


def space():
    hp = keras_tuner.HyperParameters()
    hp.Choice("optimizer", ["adam", "sgd"])
    hp.Float("learning_rate", 1e-5, 1.0, sampling="log")
    return hp


def family_task(family: str, seed: int):
    rng = np.random.default_rng(seed)
    if family == "classes":
        x = rng.normal(size=(80, 6)).astype(np.float32)
        return x, np.argmax(x[:, :4] + 0.3 * rng.normal(size=(80, 4)), axis=1).astype(np.int32)
    scale = 0.1 if family == "small" else 10.0
    x = rng.uniform(-1, 1, (80, 1)).astype(np.float32) * scale
    return x, (np.sin(3 * x / scale) * rng.uniform(0.8, 1.2)).astype(np.float32)


def objective(family: str, values: dict) -> float:
    optimizer, rate = OPTIMA[family]
    return (math.log10(values["learning_rate"]) - math.log10(rate)) ** 2 + 2.0 * (
        values["optimizer"] != optimizer
    )


def synthetic_tuner(oracle, family, directory, overwrite=True):
    class Synthetic(keras_tuner.Tuner):
        def run_trial(self, trial, *args, **kwargs):
            return objective(family, trial.hyperparameters.values)

    return Synthetic(oracle, directory=directory, project_name="search", overwrite=overwrite)


@pytest.fixture(scope="module")
def family_history(tmp_path_factory):
    """A history of 4 searches per family, 12 random trials each."""
    directory = tmp_path_factory.mktemp("history")
    history = tuners.SearchHistory(str(directory / "history"))
    for family in OPTIMA:
        for index in range(4):
            oracle = keras_tuner.oracles.RandomSearchOracle(
                # Seeds far apart: KerasTuner's searches with seeds s and s + 1 sample
                # the same configurations, one hyperparameter apart.
                max_trials=12,
                seed=1000 * index + 1,
                hyperparameters=space(),
            )
            synthetic_tuner(oracle, family, str(directory / f"{family}{index}")).search(verbose=0)
            x, y = family_task(family, seed=100 * index + len(family))
            history.add(f"{family}-{index}", oracle, x, y, information={"family": family})
    return history


@pytest.fixture(scope="module")
def families():
    """The families' helpers: `optima`, `task(family, seed)`, `space()`, `tuner(...)`."""
    return types.SimpleNamespace(
        optima=OPTIMA, task=family_task, space=space, tuner=synthetic_tuner
    )


@pytest.fixture
def tuner_cluster(free_ports, tmp_path):
    """`tuner_cluster(script, *arguments)`: KerasTuner's distributed mode on 127.0.0.1.

    Runs `script` (Python source) as a chief and two workers, each with the arguments
    `tmp_path, *arguments`, checks that all three succeed, and returns the trials written to
    `tmp_path / "distributed"` (the script's project), sorted by trial id.
    """

    def run(script, *arguments):
        (port,) = free_ports(1)
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(tmp_path), *arguments],
                env=dict(
                    os.environ,
                    KERASTUNER_TUNER_ID=tuner_id,
                    KERASTUNER_ORACLE_IP="127.0.0.1",
                    KERASTUNER_ORACLE_PORT=str(port),
                    CUDA_VISIBLE_DEVICES="",
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for tuner_id in ("chief", "tuner0", "tuner1")
        ]
        for process in processes:
            _, error = process.communicate(timeout=300)
            assert process.returncode == 0, error[-3000:]
        return sorted(
            (
                json.loads((path / "trial.json").read_text())
                for path in (tmp_path / "distributed").glob("trial_*")
            ),
            key=lambda trial: trial["trial_id"],
        )

    return run
