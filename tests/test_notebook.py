"""examples/assignment.ipynb, run headless to its end on the CPU (nbclient), its parameter
cell overridden as papermill would: the synthetic data and a plan of two runs, one seed, one
epoch at 16x16 pixels, no PDF (tests/test_report_pdf.py lays one out). What a student runs on
Kaggle or Colab, at toy scale."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

nbformat = pytest.importorskip("nbformat", reason="pip install nbformat nbclient ipykernel "
                               "(resnorm's dev extras)")
nbclient = pytest.importorskip("nbclient", reason="pip install nbclient (resnorm's dev extras)")
pytest.importorskip("ipykernel", reason="pip install ipykernel (resnorm's dev extras)")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "assignment.ipynb"
TINY_PLAN = {
    "description": "the notebook at toy scale (CI)",
    "threads": 1,
    "seeds": 1,
    "synthetic": {"class_names": ["Cattle-Egret", "Indian-Peacock", "Ruddy-Shelduck"],
                  "train_per_class": 10, "val_per_class": 5, "seed": 0},
    "gradcam": {"per_class": 1, "classes": ["Cattle Egret"]},
    "defaults": {"size": 16, "n": 1, "epochs": 1, "batch_size": 10, "device": "cpu"},
    "runs": [{"name": "torch_bn", "norm": "torch_bn"}, {"name": "bn", "norm": "bn"}],
}


def with_parameters(nb, **values):
    """The notebook with a cell setting `values` after its "parameters" cell (papermill's
    "injected-parameters")."""
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(at + 1, cell)
    return nb


def outputs(cell) -> str:
    return "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/html", ""))
                     for o in cell.get("outputs", []))


@pytest.mark.slow
def test_the_notebook_runs_headless_to_its_end(tmp_path):
    pdf = False  # laying out the PDF costs ~5 s: tests/test_report_pdf.py checks it
    plan = tmp_path / "tiny.yaml"
    plan.write_text(yaml.safe_dump(TINY_PLAN))
    nb = with_parameters(nbformat.read(NOTEBOOK, as_version=4), DATA=None,
                         SYNTHETIC=str(tmp_path / "synth"), PLAN=str(plan),
                         OUT=str(tmp_path / "study"), SEEDS=None, JOBS=1, PDF=pdf,
                         RESNORM=str(ROOT), INSTALL=False)
    # the kernel: this Python (jupyter_client's "python3"), this environment (PYTHONPATH too),
    # the prepared data cached under tmp_path
    env = {**os.environ, "RESNORM_CACHE": str(tmp_path / "cache")}
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute(env=env)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(o.get("output_type") != "error" for c in code for o in c.get("outputs", []))
    study = tmp_path / "study"
    assert (study / "report.html").is_file() and (study / "report.pdf").is_file() == pdf
    # the last cell shows the report in the notebook, and says where the PDF is
    last = outputs(code[-1])
    assert "<iframe srcdoc=" in last and "Answer sheet" in last
    assert (f"PDF to hand in: {study / 'report.pdf'}" in last) == pdf
    # the study's cell says each run's line as it finishes
    ran = outputs(next(c for c in code if "resnorm.run_study(" in c.source))
    assert "torch_bn/seed-0" in ran and "bn/seed-0" in ran
