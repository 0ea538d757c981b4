"""The benchmark scripts still run: each `--smoke` mode, which checks a script in seconds.

Every script runs in a process of its own, all at once, so that the test takes about as long
as the slowest of them. All of them are slow (`pytest -m slow` runs them, as does whoever runs
a benchmark): the three quickest (Omniglot accuracy, the data pipeline, transfer tuning) cost
about 90 s of CPU together, which CI's 8 minutes now spend on the tutorials and the README.
"""

import os
import subprocess
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks")


def _start(script, *flags, data_dir, cwd):
    return subprocess.Popen(
        [sys.executable, os.path.join(BENCHMARKS, script), "--smoke", *flags],
        env={**os.environ, "TF_META_DATA_DIR": data_dir, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )


def _run_all(expected, data_dir, cwd):
    """Starts every command at once; each must succeed and print its expected rows."""
    processes = {command: _start(*command, data_dir=data_dir, cwd=cwd) for command in expected}
    for command, rows in expected.items():
        stdout, stderr = processes[command].communicate(timeout=900)
        assert processes[command].returncode == 0, (command, stderr[-3000:])
        for row in rows:
            assert row in stdout, (command, stdout)


@pytest.mark.slow
def test_every_benchmark_smoke_mode_runs_and_reports(omniglot_dir, tmp_path):
    output = f"--output_dir={tmp_path}"
    expected = {
        ("omniglot_accuracy.py", "--learner=protonet", output): ['"learner": "protonet"'],
        ("data_pipeline.py",): ["| episodes/s, default parallelism |"],
        ("transfer_tuning.py", f"--output_dir={tmp_path / 'transfer'}"): [
            f"| {name} |" for name in ("random", "bayesian", "transfer_embedding")
        ],
    }
    _run_all(expected, data_dir=omniglot_dir, cwd=tmp_path)
    assert sorted(os.listdir(tmp_path)) == [
        "omniglot_protonet_5w1s.json",
        "omniglot_protonet_5w1s.png",
        "transfer",
    ]
    assert sorted(os.listdir(tmp_path / "transfer")) == [
        "best_so_far.png",
        "history",
        "history_seconds.json",
        "searches.json",
        "table.md",
    ]


@pytest.mark.slow
def test_the_slower_smoke_modes_report(omniglot_dir, tmp_path):
    expected = {
        ("cost_growth.py", f"--output_dir={tmp_path / 'cost'}"): [
            "| iMAML | 1 | 2 |",
            "| iMAML | 2 | 2 |",
            "| Reptile | 1 | 1 |",
        ],
        ("throughput.py",): [
            "| MAML baseline |",
            "| MAML (second order) |",
            "| MAML, tasks vectorized, XLA |",
        ],
        ("op_profile.py",): ["| op type | MAML baseline (s) | count | MAML (second order) (s) |"],
        ("meta_rl.py",): ["| in the graph |", "| Meta-World ML1 reach | 2 |"],
        ("generator_input.py",): ["| default |", "| vectorize_tasks |"],
        ("tuning.py", f"--output_dir={tmp_path}"): [
            f"| {name} |" for name in ("random", "evolution", "reinforce")
        ],
    }
    _run_all(expected, data_dir=omniglot_dir, cwd=tmp_path)
    assert os.path.isfile(tmp_path / "tuning_sinusoid.png")
    assert os.path.isfile(tmp_path / "cost" / "cost_growth.png")


@pytest.mark.slow
def test_scaling_smoke_prints_every_configuration(omniglot_dir, tmp_path):
    rows = [
        "| 1 replica (no strategy) |",
        "| 2 replicas (MirroredStrategy, 2 logical CPUs) |",
        "| 1 worker process(es) (MultiWorkerMirroredStrategy) |",
        "| 2 worker process(es) (MultiWorkerMirroredStrategy) |",
        "BackupAndRestore: ",
    ]
    _run_all({("scaling.py",): rows}, data_dir=omniglot_dir, cwd=tmp_path)


@pytest.mark.slow
def test_learned_optimizers_smoke_reports_every_setting(omniglot_dir, tmp_path):
    rows = [
        ": in distribution",
        ": 5x horizon",
        ": 2x wider and deeper",
        "| LearnedOptimizer (meta-trained) |",
        "| LSTMOptimizer (meta-trained) |",
        "| HyperparameterController (meta-trained) |",
        "Ratio LearnedOptimizer / Adam:",
    ]
    command = ("learned_optimizers.py", f"--output_dir={tmp_path}")
    _run_all({command: rows}, data_dir=omniglot_dir, cwd=tmp_path)
