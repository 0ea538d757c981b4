"""The benchmark scripts still run (`--smoke`); slow: CI skips it, `pytest -m slow` runs it."""

import os
import subprocess
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks")


@pytest.mark.slow
def test_scaling_smoke_prints_every_configuration(omniglot_dir):
    completed = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, "scaling.py"), "--smoke"],
        env={**os.environ, "TF_META_DATA_DIR": omniglot_dir, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    for row in (
        "| 1 replica (no strategy) |",
        "| 2 replicas (MirroredStrategy, 2 logical CPUs) |",
        "| 1 worker process(es) (MultiWorkerMirroredStrategy) |",
        "| 2 worker process(es) (MultiWorkerMirroredStrategy) |",
        "BackupAndRestore: ",
    ):
        assert row in completed.stdout, completed.stdout
