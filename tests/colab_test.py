"""The tutorials in `colab/` run top to bottom and show what their text says.

Each notebook runs headlessly in a fresh Jupyter kernel through papermill, with the `budget`
of its `parameters` cell set to `"small"` (CI) or left at `"full"` (what a Colab user runs,
marked slow). A cell the test appends prints, as JSON, the values the notebook displays
(its table, its accuracies, the served predictions' differences), and the test asserts on
them and on the figures the notebook drew. The committed notebooks must carry no outputs.
"""

import json
import os

import nbformat
import numpy as np
import papermill
import pytest

COLAB = os.path.join(os.path.dirname(os.path.dirname(__file__)), "colab")
MARK = "TF_META_VALUES "


def _values_of(expression):
    return f"import json\nprint({MARK!r} + json.dumps({expression}, default=float))"


def _check_quickstart(values, budget):
    for name in ("MAML", "pretrained"):
        before, _, after = values[name]
        assert after < before, (name, values)  # ten steps on the support set help
    if budget == "full":  # Finn et al. 2017, Figure 3: MAML far ahead after one step
        assert values["MAML"][1] < 0.5 * values["pretrained"][1], values


def _check_omniglot(values, budget):
    for name, (mean, half_width) in values.items():
        assert mean - half_width > 0.2, (name, values)  # above chance (5 ways), significantly
    if budget == "full":
        assert values["prototypical"][0] > 0.9, values


def _check_meta_optimization(values, budget):
    trials = {"full": 12, "small": 2}[budget]
    for name, curve in values["best"].items():
        assert len(curve) == trials, (name, curve)
        assert np.all(np.diff(curve) <= 0) and np.all(np.isfinite(curve)), (name, curve)
    assert set(values["architecture"]) == {"width", "depth", "activation"}
    assert all(np.isfinite(loss) for loss in values["final"].values()), values
    if budget == "full":  # the notebook's text says the learned rule ends below tuned Adam
        adam, learned = values["final"].values()
        assert learned < adam, values


def _check_serving(values, budget):
    assert values == {"rest": 0.0, "grpc": 0.0}, values


def _check_scaling(values, budget):
    assert len(values["table"]) == 7
    assert all(rate > 0 and peak >= 0 for rate, peak in values["table"].values()), values
    steps = {"full": 200, "small": 10}[budget]
    resumed = values["resumed"]
    assert "Epoch 3/4" in resumed and "Epoch 1/4" not in resumed, resumed
    assert f"meta-steps counted: {4 * steps}" in resumed, resumed


# notebook: (expression printed after it ran, check, figures it draws, needs Omniglot)
NOTEBOOKS = {
    "01_quickstart_maml_sinusoid.ipynb": ("mse", _check_quickstart, 1, False),
    "02_few_shot_omniglot.ipynb": ("accuracy", _check_omniglot, 2, True),
    "03_meta_optimization.ipynb": (
        "{'best': {k: list(v) for k, v in best_so_far.items()}, 'architecture': winner, "
        "'final': final_loss}",
        _check_meta_optimization,
        2,
        False,
    ),
    "04_serving.ipynb": ("differences", _check_serving, 1, False),
    "05_scaling.ipynb": ("{'table': table, 'resumed': resumed}", _check_scaling, 0, False),
}


def test_every_tutorial_is_tested_and_stored_without_outputs():
    assert sorted(name for name in os.listdir(COLAB) if name.endswith(".ipynb")) == sorted(
        NOTEBOOKS
    )
    with open(os.path.join(os.path.dirname(COLAB), "README.md")) as file:
        readme = file.read()
    for name in NOTEBOOKS:
        notebook = nbformat.read(os.path.join(COLAB, name), as_version=4)
        nbformat.validate(notebook)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        for cell in code:
            assert cell.outputs == [] and cell.execution_count is None, (name, cell.source[:80])
        assert "pip install" in code[0].source, name  # Colab's first step
        parameters = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
        assert [cell.source for cell in parameters] == ['budget = "full"'], name
        assert f"colab/{name}" in readme, name  # the README links every tutorial


def _run(name, budget, directory):
    expression, check, figures, _ = NOTEBOOKS[name]
    notebook = nbformat.read(os.path.join(COLAB, name), as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(_values_of(expression)))
    source = directory / name
    nbformat.write(notebook, source)
    executed = papermill.execute_notebook(
        str(source),
        str(directory / f"executed_{name}"),
        parameters={"budget": budget},
        kernel_name="python3",
        cwd=str(directory),
        progress_bar=False,
        execution_timeout=3600,
    )
    outputs = [output for cell in executed.cells for output in cell.get("outputs", [])]
    printed = "".join(output["text"] for output in outputs if output.get("name") == "stdout")
    values = json.loads(printed[printed.index(MARK) + len(MARK) :].splitlines()[0])
    check(values, budget)
    drawn = sum("image/png" in output.get("data", {}) for output in outputs)
    assert drawn == figures, (name, drawn)


@pytest.fixture
def data_for(request):
    """Skips a notebook that reads Omniglot where the data is missing (never in CI)."""

    def needs(name):
        if NOTEBOOKS[name][3]:
            request.getfixturevalue("omniglot_dir")

    return needs


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_tutorial_runs_in_its_small_budget(name, tmp_path, data_for):
    data_for(name)
    _run(name, "small", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_tutorial_runs_in_its_full_budget(name, tmp_path, data_for):
    data_for(name)
    _run(name, "full", tmp_path)
