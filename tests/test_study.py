"""`resnorm study`: plan validation, the lr rule, and a miniature study end to end (runs in
order, a diverged and a failed run recorded while the study goes on, skip on re-run,
Grad-CAM and the report, HTML escaping of a class folder named with markup)."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from resnorm import cli
from resnorm.data import make_synthetic
from resnorm.errors import UsageError
from resnorm.study import RunSpec, load_plan, parse_plan, resolve_runs

pytestmark = pytest.mark.usefixtures("one_thread")

MARKUP = "<img src=x onerror=alert(1)>"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
VALID = {"defaults": {"n": 1}, "runs": [{"name": "bn", "norm": "bn"}]}


# --- the plan ---------------------------------------------------------------------------------

@pytest.mark.parametrize("plan, message", [
    ([1, 2], "a plan is a mapping"),
    ({**VALID, "run": []}, "unknown key 'run'"),
    ({**VALID, "defaults": {"nrom": "bn"}}, "defaults: unknown field 'nrom'"),
    ({**VALID, "defaults": {"out": "x"}}, "'out' is set by the study"),
    ({"defaults": {}}, "'runs' must be a non-empty list"),
    ({"runs": [{"norm": "bn"}]}, "run #1 must be a mapping with a 'name'"),
    ({"runs": [{"name": "a"}, {"name": "a"}]}, "two runs are named 'a'"),
    ({"runs": [{"name": "../a"}]}, "must be a plain folder name"),
    ({"runs": [{"name": "a", "batchsize": 8}]}, "run 'a': unknown field 'batchsize'"),
    ({**VALID, "lr_rule": "cubic"}, "lr_rule 'cubic' is not one of linear, sqrt, none"),
    ({**VALID, "base_batch_size": 0}, "base_batch_size must be a positive integer"),
    ({**VALID, "sanity_tolerance": {"acc": 1}}, "sanity_tolerance must be a number"),
    ({**VALID, "gradcam": {"class": ["A"]}}, "gradcam: unknown key 'class'"),
    ({**VALID, "synthetic": {"classes": 3}}, "synthetic: unknown key 'classes'"),
])
def test_bad_plans_are_one_line_usage_errors(plan, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        parse_plan(plan, "p.yaml")
    assert "\n" not in str(e.value)


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text("defaults:\n  n: 1\nruns: [\n  {name: a\n")
    with pytest.raises(UsageError, match=r"not valid YAML \(line \d+\)"):
        load_plan(path)
    with pytest.raises(UsageError, match="does not exist"):
        load_plan(tmp_path / "missing.yaml")


def test_bad_plan_exits_2_with_one_line_before_anything_runs(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"runs": [{"name": "a", "norm": "bm"}]}))
    data = tmp_path / "data"
    data.mkdir()
    code = cli.main(["study", "--data", str(data), "--plan", str(plan), "--out",
                     str(tmp_path / "s")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("resnorm study: error:") and "\n" not in err
    assert not (tmp_path / "s").exists()


def test_lr_rule_scales_runs_without_their_own_lr():
    plan = parse_plan({"lr_rule": "linear", "base_batch_size": 32,
                       "defaults": {"n": 1, "batch_size": 32}, "runs": [{"name": "x"}]})

    def lr(**overrides):
        plan.runs = [RunSpec("r", overrides)]
        return resolve_runs(plan)["r"].lr
    # the default recipe's lr at batch 32 is the base: 0.1 x 32 / 128
    assert lr() == pytest.approx(0.025)
    assert lr(batch_size=8) == pytest.approx(0.025 / 4)
    assert lr(batch_size=128) == pytest.approx(0.1)
    assert lr(batch_size=8, lr=0.3) == 0.3                       # a run's own lr is kept
    assert lr(batch_size=128, recipe="literal") == pytest.approx(4e-4)  # 1e-4 x 4
    plan.defaults["lr"] = 0.2
    assert lr(batch_size=64) == pytest.approx(0.4)
    plan.lr_rule = "sqrt"
    assert lr(batch_size=128) == pytest.approx(0.4)
    plan.lr_rule = "none"
    assert lr(batch_size=128) == pytest.approx(0.2)
    plan.lr_rule, plan.defaults = "linear", {"n": 1}
    run = (lr(batch_size=8), resolve_runs(plan)["r"])
    assert run[1].lr_rule == "linear" and run[1].batch == 8 and not run[1].tuned
    assert run[1].config["lr"] == run[0] and run[1].config["weight_decay"] == 5e-4
    assert "linear" in parse_plan({**VALID, "lr_rule": "linear"}).lr_rule_text()


def test_shipped_plans_are_valid():
    for name in ("demo", "assignment", "birds-cpu"):
        plan = load_plan(CONFIGS / f"{name}.yaml")
        norms = {str(r.overrides.get("norm", plan.defaults.get("norm"))) for r in plan.runs}
        assert {"torch_bn", "bn", "in", "bin", "ln", "gn", "nn"} <= norms
        batches = {(r.overrides.get("norm"), r.overrides.get("batch_size")) for r in plan.runs}
        assert {("bn", 8), ("bn", 128), ("gn", 8), ("gn", 128)} <= batches
        assert any(r.overrides.get("recipe") == "literal" for r in plan.runs)
        assert plan.lr_rule == "linear"


# --- a miniature study ------------------------------------------------------------------------

MINI_PLAN = {
    "description": "miniature",
    "lr_rule": "linear",
    "base_batch_size": 16,
    "gradcam": {"per_class": 2, "classes": [MARKUP, "Cattle Egret"]},
    "defaults": {"size": 32, "n": 1, "epochs": 2, "batch_size": 16, "device": "cpu"},
    "runs": [
        {"name": "torch_bn", "norm": "torch_bn"},
        {"name": "bn", "norm": "bn"},
        {"name": "gn_b8", "norm": "gn", "batch_size": 8, "patience": 1},
        {"name": "boom", "norm": "nn", "lr": 1.0e6},          # diverges
        {"name": "too_big", "norm": "gn", "batch_size": 512},  # fails: fewer images
    ],
}


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """The miniature study, run once; returns (paths, exit code, stdout, stderr)."""
    base = tmp_path_factory.mktemp("study")
    root = make_synthetic(base / "synth", class_names=["Cattle-Egret", "Hoopoe", "Indian-Roller"],
                          train_per_class=12, val_per_class=4, side_range=(32, 48))
    shutil.move(root / "train" / "Hoopoe", root / "train" / MARKUP)
    shutil.move(root / "valid" / "Hoopoe", root / "valid" / MARKUP)
    plan = base / "plan.yaml"
    plan.write_text(yaml.safe_dump(MINI_PLAN))
    argv = ["study", "--data", str(root), "--plan", str(plan), "--out", str(base / "s"),
            "--cache", str(base / "cache"), "--quiet"]
    torch.set_num_threads(1)
    out, err = io.StringIO(), io.StringIO()  # capsys is function-scoped
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return {"base": base, "study": base / "s", "argv": argv, "code": code,
            "out": out.getvalue(), "err": err.getvalue()}


@pytest.mark.slow
def test_quiet_prints_one_line_per_run_and_no_epoch_lines(mini):
    assert "epoch 1/" not in mini["out"] + mini["err"]


@pytest.mark.slow
def test_runs_in_order_with_a_summary_line_each(mini):
    lines = [line for line in mini["out"].splitlines() if line.startswith("[")]
    assert [line.split()[1] for line in lines] == ["torch_bn/seed-0", "bn/seed-0", "gn_b8/seed-0",
                                                  "boom/seed-0", "too_big/seed-0"]
    assert [line.split()[2] for line in lines] == ["completed", "completed", "completed",
                                                  "diverged", "failed"]
    assert "val acc" in lines[0] and "trained in" in lines[0]
    assert "non-finite loss at epoch 1" in lines[3]
    assert "fewer than one batch" in lines[4]
    assert "linear scaling" in mini["out"].splitlines()[0]


@pytest.mark.slow
def test_a_failed_run_is_recorded_and_the_study_goes_on(mini):
    study = mini["study"]
    assert mini["code"] == 1
    assert "1 job(s) failed: too_big/seed-0" in mini["err"]
    state = json.loads((study / "study.json").read_text())
    assert state["runs"]["too_big/seed-0"]["status"] == "failed"
    assert "fewer than one batch" in state["runs"]["too_big/seed-0"]["error"]
    assert "Traceback" in (study / "runs" / "too_big" / "seed-0" / "error.txt").read_text()
    # the diverged run is recorded by its final.json; the study carried on past it
    boom = json.loads((study / "runs" / "boom" / "seed-0" / "final.json").read_text())
    assert boom["status"] == "diverged" and boom["diverged_at"]["epoch"] == 1
    assert state["runs"]["boom/seed-0"]["status"] == "diverged"
    for name in ("torch_bn", "bn", "gn_b8"):
        final = json.loads((study / "runs" / name / "seed-0" / "final.json").read_text())
        assert final["status"] == "completed"
    # the lr rule was applied and written into the run's own config
    gn_b8 = yaml.safe_load((study / "runs" / "gn_b8" / "seed-0" / "config.yaml").read_text())
    assert gn_b8["lr"] == pytest.approx(0.1 * 16 / 128 / 2)
    assert "linear rule, batch 8" in state["runs"]["gn_b8/seed-0"]["lr_note"]


@pytest.mark.slow
def test_data_is_prepared_once_and_shared(mini):
    caches = [p for p in (mini["base"] / "cache").iterdir() if not p.name.startswith(".")]
    assert len(caches) == 1
    for name in ("torch_bn", "bn", "gn_b8"):
        cfg = yaml.safe_load((mini["study"] / "runs" / name / "seed-0" / "config.yaml").read_text())
        assert cfg["data"] == str(caches[0])


@pytest.mark.slow
def test_gradcam_and_report_are_written(mini):
    study = mini["study"]
    summary = json.loads((study / "gradcam" / "gradcam.json").read_text())
    assert [c["name"] for c in summary["classes"]] == [MARKUP, "Cattle-Egret"]
    assert set(summary["pointing"]) == {"torch_bn", "bn", "gn_b8"}  # finished runs only
    page = (study / "report.html").read_text()
    md = (study / "report.md").read_text()
    assert MARKUP not in page and MARKUP not in md
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    for title in ("Setup", "Results", "Curves", "Sanity check", "Batch size", "BIN gates",
                  "Grad-CAM", "Observations"):
        assert title in page
    assert "SYNTHETIC" in page
    assert "too\\_big: failed" in md and "boom diverged at epoch 1" in md
    assert "Curve verdict over 2 epochs:" in md
    assert "Equivalence test on val accuracy" in md and "## 4. Comparisons" in md
    stats = json.loads((study / "summary.json").read_text())
    assert stats["runs"]["bn"]["seeds"] == [0] and stats["sanity"]["a"] == "torch_bn"
    assert "no finished seed" in stats["runs"]["boom"]["reason"]


@pytest.mark.slow
def test_rerun_skips_finished_runs_and_retries_the_failed_one(mini, capsys):
    study = mini["study"]
    before = {n: (study / "runs" / n / "seed-0" / "best.pt").stat().st_mtime_ns
              for n in ("torch_bn", "bn", "gn_b8")}
    code = cli.main(mini["argv"])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert code == 1
    assert all("(already done)" in line for line in lines[:4])
    assert "failed" in lines[4]  # retried, and fails again
    after = {n: (study / "runs" / n / "seed-0" / "best.pt").stat().st_mtime_ns for n in before}
    assert after == before


@pytest.mark.slow
def test_a_prepared_cache_as_data_must_fit_the_plan(mini, tmp_path, capsys):
    cache = next(p for p in (mini["base"] / "cache").iterdir() if not p.name.startswith("."))
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"defaults": {"size": 64}, "runs": [{"name": "a"}]}))
    assert cli.main(["study", "--data", str(cache), "--plan", str(plan),
                     "--out", str(tmp_path / "s")]) == 2
    assert "is a cache of 32px images" in capsys.readouterr().err
