import json
import subprocess
import sys

import numpy as np
import pytest

from tf_meta.jobs import learned_optimizer as job

RUN = "from tf_meta.jobs.learned_optimizer import run; run()"


def test_summary_counts_steps_to_the_reference_loss_per_task():
    # Two tasks measured every 10 steps; the reference ends at 1.0 and 0.5.
    results = {
        "reference": np.array([[4.0, 2.0, 1.0], [4.0, 1.0, 0.5]]),
        "fast": np.array([[4.0, 0.9, 0.1], [4.0, 0.4, 0.2]]),
        "never": np.array([[4.0, 3.0, 2.0], [4.0, 3.0, np.inf]]),
    }
    rows = job.summary(results, "reference")
    assert rows["reference"]["median_steps_to_reference"] == 20.0
    assert rows["fast"]["median_steps_to_reference"] == 10.0
    assert rows["fast"]["final_loss"] == 0.15000000000000002
    assert rows["never"]["median_steps_to_reference"] is None
    assert rows["never"]["diverged"] == 1 and rows["never"]["reached_reference"] == 0.0
    table = job.table(rows, 20, "reference")
    assert "| fast | 0.15 ± 0.098 | 0 | 10 (0.50x) | 100% |" in table
    assert "| never |" in table and "never |" in table


@pytest.mark.slow  # the job's parts are tested in-process here and in tests/optimizers/
def test_job_writes_results_curves_and_the_learned_schedule(tmp_path):
    flags = [
        f"--output_dir={tmp_path}",
        "--rules=mlp,controller",
        "--meta_steps=2",
        "--run_length=20",
        "--truncation_length=10",
        "--meta_batch_size=2",
        "--tuning_trials=2",
        "--tuning_tasks=1",
        "--tasks=3",
        "--verbose=0",
    ]
    completed = subprocess.run(
        [sys.executable, "-c", RUN, *flags], capture_output=True, text=True, timeout=900
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = (tmp_path / "results.md").read_text()
    for row in (
        "| Adam (tuned) |",
        "| LearnedOptimizer (meta-trained) |",
        "| HyperparameterController (meta-trained) |",
    ):
        assert row in report, report
    record = json.loads((tmp_path / "results.json").read_text())
    assert 1e-4 <= record["rates"]["adam"] <= 1.0
    # Adam reaches its own final loss at the last step on every task.
    assert record["rows"]["Adam (tuned)"]["reached_reference"] == 1.0
    for name in ("curves.png", "controller_schedule.png"):
        png = (tmp_path / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000, name


def test_help_shows_the_jobs_flags_and_description():
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; sys.argv[0] = 'tf-meta-learned-optimizer'; {RUN}",
            "--help",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Meta-trains learned optimizers on a task family" in completed.stdout
    for flag in ("--rules", "--estimator", "--run_length", "--tuning_trials"):
        assert flag in completed.stdout, flag
