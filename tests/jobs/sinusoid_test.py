import json
import os
import subprocess
import sys

import pytest

RUN = "from tf_meta.jobs.sinusoid import run; run()"


def run_job(tmp_path, *flags):
    completed = subprocess.run(
        [sys.executable, "-c", RUN, f"--output_dir={tmp_path}", "--verbose=0", *flags],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    return completed.stdout, results


def test_job_writes_report_table_and_plot(tmp_path):
    stdout, results = run_job(tmp_path, "--meta_steps=300", "--eval_tasks=50")
    assert "| MAML |" in stdout and "| pretrained |" in stdout
    assert "| MSE after 0 steps | MSE after 1 step | MSE after 10 steps |" in stdout
    assert set(results) == {
        f"{name}/{steps}" for name in ("MAML", "pretrained") for steps in (0, 1, 10)
    }
    for mean, half_width in results.values():
        assert 0 < half_width < mean
    png = (tmp_path / "adapted_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    # After 300 meta-steps MAML already adapts better than the jointly trained network.
    assert results["MAML/10"][0] < results["pretrained/10"][0]


def test_help_shows_the_jobs_flags_and_description():
    # Run as the console script is: the main module is a wrapper with no flags of its own.
    completed = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.argv[0] = 'tf-meta-sinusoid'; {RUN}", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # absl's --help exits with status 1 after printing the usage.
    assert "MAML on sinusoid regression against a pretrained baseline" in completed.stdout
    for flag in ("--meta_steps", "--output_dir", "--strategy", "--backup_dir"):
        assert flag in completed.stdout, flag


@pytest.mark.slow  # tests/multi_worker_fit_test.py checks two workers in CI
def test_two_workers_report_what_one_process_reports(tmp_path, free_ports):
    budget = ["--meta_steps=20", "--eval_tasks=20", "--meta_batch_size=24"]
    flags = [*budget, "--verbose=0", "--strategy=multi_worker"]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", RUN, f"--output_dir={tmp_path / 'two'}", *flags],
            env={
                **os.environ,
                "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": index}}
                ),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    stdout, expected = run_job(
        tmp_path / "one",
        *budget,
        "--tensorboard_dir",
        str(tmp_path / "logs"),
        "--backup_dir",
        str(tmp_path / "backup"),
    )
    assert "on 1 replica(s)" in stdout
    received = json.loads((tmp_path / "two" / "results.json").read_text())["results"]
    assert (tmp_path / "two" / "worker-1" / "results.json").exists()
    for key, (mean, _) in expected.items():
        assert received[key][0] == pytest.approx(mean, rel=1e-4), key
    # TensorBoard logs of both learners; backups are deleted when training ends.
    assert {path.name for path in (tmp_path / "logs").iterdir()} == {"maml", "pretrained"}
    assert not any((tmp_path / "backup").rglob("*.weights.h5"))


@pytest.mark.slow
def test_default_budget_reproduces_the_papers_ordering(tmp_path):
    _, results = run_job(tmp_path)
    maml, pretrained = results["MAML/10"][0], results["pretrained/10"][0]
    assert maml < 0.5 * pretrained, results
    assert results["MAML/10"][0] < results["MAML/1"][0] < results["MAML/0"][0]
