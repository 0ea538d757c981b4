import json
import subprocess
import sys

import pytest

RUN = "from tf_meta.jobs.navigation import run; run()"


@pytest.mark.slow  # 20 s; tests/rl checks the learner the job runs
def test_job_writes_the_table_and_both_plots(tmp_path):
    budget = ["--meta_steps=20", "--eval_tasks=6", "--episodes=5", "--meta_batch_size=4"]
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            RUN,
            f"--output_dir={tmp_path}",
            f"--backup_dir={tmp_path / 'backup'}",
            "--hidden_units=16",
            "--verbose=0",
            *budget,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "| policy | return after 0 steps | return after 1 step |" in completed.stdout
    summary = json.loads((tmp_path / "results.json").read_text())
    results = summary["results"]
    # Before adaptation no policy is significantly above the goal-blind bound.
    bound = summary["goal_blind_bound"]
    assert all(mean - half < bound < 0 for (mean, half), *_ in results.values())
    assert set(results) == {"MAML", "pretrained", "random"}
    for rows in results.values():
        assert len(rows) == 4
        for mean, half_width in rows:
            assert -200 < mean < 0 and half_width > 0
    # Even 20 meta-steps of policy gradient leave the random policy behind.
    assert results["MAML"][1][0] > results["random"][1][0]
    for name in ("returns.png", "trajectories.png"):
        png = (tmp_path / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000, name
