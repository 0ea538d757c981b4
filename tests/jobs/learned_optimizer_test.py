import json
import subprocess
import sys

RUN = "from tf_meta.jobs.learned_optimizer import run; run()"


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
