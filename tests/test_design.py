"""The study's design: declared in the plan or derived once at plan time, checked, written into
the study manifest before training, and the only thing the report reads to know which runs
answer which question."""
from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import pytest
import torch
import yaml

from resnorm import cli
from resnorm.errors import UsageError
from resnorm.study.plan.manifest import read_manifest
from resnorm.study.plan.parse import load_plan, parse_plan
from resnorm.study.plan.resolve import plan_design as design_from, resolve_runs


def plan_design(plan, source=None):
    """The plan's design from its runs resolved once (as `resnorm study` derives it)."""
    return design_from(plan, resolve_runs(plan), source)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASE = {"defaults": {"n": 1, "size": 32, "epochs": 1, "batch_size": 16}}


def design_of(plan: dict):
    return plan_design(parse_plan(plan, "p.yaml"), "p.yaml")


@pytest.mark.parametrize("name", ["demo", "birds-cpu", "birds-cpu-tuned", "assignment"])
def test_shipped_plans_declare_the_design_the_assignment_would_derive(name):
    plan = load_plan(CONFIGS / f"{name}.yaml")
    assert plan.design is not None and set(plan.design) >= {"variants", "sanity", "batch"}
    declared = plan_design(plan)
    silent = copy.deepcopy(plan)
    silent.design = None
    assert declared.to_dict() == plan_design(silent).to_dict()
    assert declared.variants == ["bn", "in", "bin", "ln", "gn", "nn"]
    assert declared.sanity == ("torch_bn", "bn")
    assert {g: [(m.run, m.batch_size) for m in ms] for g, ms in declared.batch.items()} == {
        "bn": [("bn_b8", 8), ("bn", 32), ("bn_b128", 128)],
        "gn": [("gn_b8", 8), ("gn", 32), ("gn_b128", 128)]}
    assert len(declared.primary) == 15 and declared.ranked() == declared.variants


def test_freely_named_runs_get_exactly_the_declared_design():
    design = design_of({**BASE, "runs": [{"name": "alpha", "norm": "bn"},
                                         {"name": "beta", "norm": "torch_bn"},
                                         {"name": "gamma", "norm": "gn"}],
                        "design": {"variants": ["alpha", "gamma"], "sanity": ["beta", "alpha"]}})
    assert design.sanity == ("beta", "alpha") and design.primary == [("alpha", "gamma")]
    assert design.batch == {} and design.roles_of("alpha") == ["variant", "sanity:candidate"]
    # each pair once: alpha-beta is the sanity pair, beta-gamma differs in the norm alone
    assert [(p["a"], p["b"]) for p in design.pairs] == [("alpha", "gamma"), ("beta", "alpha"),
                                                        ("beta", "gamma")]


def test_variant_groups_at_different_sizes_are_never_merged():
    runs = [{"name": f"{k}{s}", "norm": k, "size": s} for s in (32, 64)
            for k in ("bn", "in", "gn")] + [{"name": "ln64", "norm": "ln", "size": 64}]
    design = design_of({**BASE, "runs": runs})
    assert design.variants == ["bn64", "in64", "gn64", "ln64"]  # the larger group, alone
    assert all("32" not in a + b for a, b in design.primary)
    pairs = {(p["a"], p["b"]): p["differs_in"] for p in design.pairs}
    assert pairs[("bn32", "bn64")] == ["size"]  # compared as a one-setting pair, exploratory


@pytest.mark.parametrize("design, message", [
    ({"variants": ["bn", "nope"]}, "design.variants: 'nope' is not a run of the plan"),
    ({"sanity": ["torch_bn", "gn_b8"]},
     "design.sanity: 'torch_bn' and 'gn_b8' differ in batch_size, patience, not only in the "
     "norm"),
    ({"sanity": ["bn"]}, "design.sanity must name exactly 2 different runs"),
    ({"batch": {"bn": ["bn", "gn_b8"]}}, "design.batch.bn: 'bn' and 'gn_b8' differ in norm, not only in batch_size"),
    ({"colours": []}, "design: unknown key 'colours'"),
])
def test_a_bad_design_is_one_line(design, message):
    runs = [{"name": "torch_bn", "norm": "torch_bn"}, {"name": "bn", "norm": "bn"},
            {"name": "gn_b8", "norm": "gn", "batch_size": 8, "patience": 2}]
    with pytest.raises(UsageError, match=message) as e:
        design_of({**BASE, "runs": runs, "design": design})
    assert "\n" not in str(e.value)


def test_a_bad_design_exits_2_before_any_data_is_read(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({**BASE, "runs": [{"name": "a", "norm": "bn"},
                                                     {"name": "b", "norm": "torch_bn",
                                                      "epochs": 3}],
                                    "design": {"sanity": ["b", "a"]}}))
    code = cli.main(["study", "--data", str(tmp_path / "missing"), "--plan", str(plan),
                     "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    # resolved settings: the recipe's warm-up follows the epochs
    assert "design.sanity: 'b' and 'a' differ in epochs, warmup_epochs, not only in the norm" in err
    assert not (tmp_path / "s").exists()


def test_the_old_top_level_primary_key_is_read_as_the_designs():
    runs = [{"name": n, "norm": n} for n in ("bn", "in", "gn")]
    plan = parse_plan({**BASE, "runs": runs, "primary": [["bn", "gn"]]}, "p.yaml")
    assert plan.design == {"primary": [("bn", "gn")]}
    with pytest.raises(UsageError, match="'primary' is given twice"):
        parse_plan({**BASE, "runs": runs, "primary": [["bn", "gn"]],
                    "design": {"primary": [["bn", "in"]]}}, "p.yaml")


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_study_reports_exactly_its_declared_comparisons(synth_root, tmp_path):
    """Freely named runs, a declared design: the manifest holds it (and every job's resolved
    config) before training, and the report's summary makes exactly its comparisons."""
    plan = {"defaults": {"n": 1, "size": 32, "epochs": 1, "batch_size": 16, "device": "cpu",
                         "eval_batch_size": 64},
            "runs": [{"name": "alpha", "norm": "bn"}, {"name": "beta", "norm": "torch_bn"},
                     {"name": "gamma", "norm": "gn"}, {"name": "delta", "norm": "in"}],
            "design": {"variants": ["alpha", "gamma", "delta"], "sanity": ["beta", "alpha"],
                       "primary": [["gamma", "delta"]]}}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    study = tmp_path / "s"
    torch.set_num_threads(1)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["study", "--data", str(synth_root), "--plan",
                         str(tmp_path / "plan.yaml"), "--out", str(study), "--quiet",
                         "--cache", str(tmp_path / "cache"), "--no-gradcam"])
    assert code == 0
    manifest = read_manifest(study)
    assert manifest.design.sanity == ("beta", "alpha")
    assert set(manifest.jobs) == {f"{n}/seed-0" for n in ("alpha", "beta", "gamma", "delta")}
    job = manifest.jobs["gamma/seed-0"]
    assert job["config"]["norm"] == "gn" and job["config"]["lr"] == pytest.approx(0.025)
    assert job["dir"] == "runs/gamma/seed-0" and manifest.runs["beta"]["roles"] == [
        "sanity:reference"]
    summary = json.loads((study / "summary.json").read_text())
    assert (summary["sanity"]["a"], summary["sanity"]["b"]) == ("beta", "alpha")
    primary = {(c["a"], c["b"]) for c in summary["comparisons"] if c["family"] == "primary"}
    assert primary == {("gamma", "delta")}
    assert summary["ranking"]["runs"] == ["gamma", "delta"]
    assert summary["interaction"] is None
