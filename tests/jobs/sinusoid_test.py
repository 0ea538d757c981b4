import json
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
    assert set(results) == {
        f"{name}/{steps}" for name in ("MAML", "pretrained") for steps in (0, 1, 10)
    }
    for mean, half_width in results.values():
        assert 0 < half_width < mean
    png = (tmp_path / "adapted_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    # After 300 meta-steps MAML already adapts better than the jointly trained network.
    assert results["MAML/10"][0] < results["pretrained/10"][0]


@pytest.mark.slow
def test_default_budget_reproduces_the_papers_ordering(tmp_path):
    _, results = run_job(tmp_path)
    maml, pretrained = results["MAML/10"][0], results["pretrained/10"][0]
    assert maml < 0.5 * pretrained, results
    assert results["MAML/10"][0] < results["MAML/1"][0] < results["MAML/0"][0]
