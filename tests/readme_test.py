"""Every Python code block of README.md runs, in order, as one script with budgets shrunk.

The blocks share their names as a reader's session would (the serving block exports the
Omniglot block's learner). Only budgets change: each `name=number` keyword argument or
`"name": number` entry named in `BUDGETS` is set to its small value, so a change that breaks
a shown line fails here. The script runs in a fresh process in a temporary directory, as a
user would run it; it takes about a minute of one core.
"""

import os
import re
import subprocess
import sys

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")
BUDGETS = {
    "steps_per_epoch": 2,
    "epochs": 1,
    "max_trials": 2,
    "num_tasks": 8,
    "steps": 2,
    "meta_batch_size": 2,
    "episodes": 2,
}


def readme_script() -> str:
    """The README's Python blocks joined in order, with `BUDGETS` applied."""
    with open(README) as file:
        blocks = re.findall(r"```python\n(.*?)```", file.read(), re.S)
    script = "\n".join(blocks)
    for name, value in BUDGETS.items():
        # A keyword argument (`epochs=10`) or a dictionary entry (`"max_trials": 12`).
        script = re.sub(rf'(\b{name}=|"{name}": )\d+', rf"\g<1>{value}", script)
    return script


def test_budgets_are_the_only_change():
    script = readme_script()
    assert "steps_per_epoch=2000" not in script and "max_trials=2" in script
    assert '"max_trials": 2' in script and '"max_trials": 12' not in script
    assert "inner_steps=1" in script and "eval_inner_steps=10" in script  # untouched


@pytest.mark.usefixtures("omniglot_dir")
def test_every_python_block_of_the_readme_runs(tmp_path):
    script = readme_script() + "\nprint('README RAN')\n"
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "README RAN" in completed.stdout
    for written in ("maml.keras", "adapted.keras", "export", "history", "search", "predictor"):
        assert os.path.exists(tmp_path / written), written
