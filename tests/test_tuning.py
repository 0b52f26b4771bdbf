"""The tuning phase (a plan's `tune:`): the plan section, the expected-max estimator, and a
toy tuned study end to end: Optuna's sampler draws the trials, the choice ignores test, a
diverged trial is never chosen, a killed phase resumes without re-training finished trials,
the report shows the tuning. tests/test_tuning_engine.py: the sampled space, choice noise."""
from __future__ import annotations

import itertools
import json
import random
import shutil
import sys

import pytest
import torch
import yaml

from forked import Forked, resnorm
from kill_helpers import epochs_logged, kill_when
from resnorm import cli
from resnorm.data import make_synthetic
from resnorm.errors import UsageError
from resnorm.study.plan.parse import parse_plan
from resnorm.study.plan.resolve import plan_design, resolve_runs
from resnorm.study.tuning.results import (
    TrialPoint, curves_cross, edges_of, expected_max, read_choices, robust_score)

RUNS = [{"name": "a", "norm": "bn"}, {"name": "b", "norm": "gn"}]


@pytest.mark.parametrize("tune, message", [
    ({"lr": [0.1], "pruner": "median"}, "unknown key 'pruner'"),
    ({"lr": [0.1, -0.01]}, "-0.01 is not a positive learning rate"),
    ({"lr": [0.1, 0]}, "0 is not a positive learning rate"),
    ({"lr": []}, "non-empty list"),
    ({"seeds": 1}, "needs 'lr'"),
    ({"space": {"lr": [0.01, 1.0]}}, "needs 'trials'"),
    ({"space": {"lr": [0, 1.0, "log"]}, "trials": 4}, "low > 0 on a log scale"),
    ({"space": {"momentum": [0.5, 0.9]}, "trials": 4}, "'momentum' cannot be tuned"),
    ({"lr": [0.1], "space": {"lr": [0.01, 1.0]}, "trials": 4}, "not both"),
    ({"lr": [0.1], "trials": 4}, "trials goes with space"),
    ({"lr": [0.1], "weight_decay": [-1e-4]}, "not a weight decay >= 0"),
    ({"lr": [0.1], "score": "test_acc"}, "never on test"),
    ({"lr": [0.1], "last_epochs": 0}, "last_epochs must be a positive integer"),
    ({"lr": [0.1], "runs": ["zz"]}, "runs of the plan"),
    ({"lr": [0.1], "share": {"a": "a"}}, "another run"),
])
def test_bad_tune_sections_are_one_line_usage_errors(tune, message):
    with pytest.raises(UsageError) as err:
        parse_plan({"tune": tune, "runs": RUNS})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_tune_section_round_trips_through_the_plan_copy():
    plan = parse_plan({"tune": {"lr": [0.3, 0.03], "epochs": 4}, "runs": RUNS})
    assert plan.tune.lr == [0.03, 0.3] and plan.tune.epochs == 4 and plan.tune.default
    again = parse_plan(plan.to_yaml_dict())
    assert again.tune == plan.tune


def test_expected_max_is_the_mean_best_of_every_subset():
    scores = [0.31, 0.52, 0.47, 0.05, 0.52, 0.6]
    for n in range(1, len(scores) + 1):
        subsets = list(itertools.combinations(scores, n))
        brute = sum(max(s) for s in subsets) / len(subsets)
        assert expected_max(scores, n) == pytest.approx(brute, abs=1e-12)
    assert expected_max(scores, 1) == pytest.approx(sum(scores) / len(scores))
    assert expected_max(scores, len(scores)) == max(scores)


def test_curves_cross_only_when_the_order_flips():
    assert curves_cross([0.5, 0.6, 0.7], [0.55, 0.6, 0.65])
    assert not curves_cross([0.5, 0.6, 0.7], [0.4, 0.6, 0.65])  # a tie is not a flip


def test_robust_score_is_the_median_of_the_last_epochs():
    rows = [{"val_acc": v} for v in (0.1, 0.9, 0.3, 0.5, 0.4)]
    assert robust_score(rows, "val_acc", 3) == 0.4  # not the single best epoch (0.9)
    assert robust_score([{"val_acc": float("nan")}], "val_acc", 3) is None


def test_edges_flag_a_choice_at_the_end_of_what_was_tried():
    grid = [TrialPoint(0.01, "ok", 0.4), TrialPoint(0.1, "ok", 0.5),
            TrialPoint(1.0, "diverged", None)]
    assert edges_of(grid, grid[1]) == {}  # the diverged 1.0 was tried: 0.1 is inside
    assert edges_of(grid, grid[0]) == {"lr": "low"}
    points = [TrialPoint(0.01, "ok", 0.4, weight_decay=1e-4),
              TrialPoint(0.1, "ok", 0.5, weight_decay=1e-3)]
    assert edges_of(points, points[1]) == {"lr": "high", "weight_decay": "high"}


# --- a toy tuned study ------------------------------------------------------------------------

PLAN = {
    "lr_rule": "linear", "base_batch_size": 8, "threads": 1,
    # 1e6 diverges: it must never be chosen
    "tune": {"lr": [0.02, 0.2, 1.0e6], "epochs": 2, "last_epochs": 2, "default": False,
             "share": {"torch_bn": "bn"}},
    "defaults": {"size": 32, "n": 1, "epochs": 2, "batch_size": 8, "device": "cpu"},
    "runs": [{"name": "torch_bn", "norm": "torch_bn"}, {"name": "bn", "norm": "bn"},
             {"name": "nn", "norm": "nn"}, {"name": "lit", "norm": "bn", "recipe": "literal"}],
}


def _dataset(base, shuffle_test: bool):
    """3 classes x (4 train, 3 val, 3 test) images; test from another seed's val. With
    shuffle_test the test images are dealt to random classes (their labels shuffled)."""
    root = make_synthetic(base / "data", class_names=["Cattle-Egret", "Hoopoe", "Indian-Roller"],
                          train_per_class=4, val_per_class=3, side_range=(32, 40))
    other = make_synthetic(base / "other", class_names=["Cattle-Egret", "Hoopoe",
                                                        "Indian-Roller"],
                           train_per_class=1, val_per_class=3, seed=7, side_range=(32, 40))
    shutil.copytree(other / "valid", root / "test")
    if shuffle_test:
        files = sorted(p for p in (root / "test").rglob("*") if p.is_file())
        classes = [p.parent for p in files]
        random.Random(0).shuffle(classes)
        for i, (f, cls) in enumerate(zip(files, classes)):
            f.rename(cls / f"moved-{i}{f.suffix}")
    return root


def _study(base, shuffle_test=False, report=True):
    root = _dataset(base, shuffle_test)
    plan = base / "plan.yaml"
    plan.write_text(yaml.safe_dump(PLAN))
    argv = ["study", "--data", str(root), "--plan", str(plan), "--out", str(base / "s"),
            "--cache", str(base / "cache"), "--quiet", "--no-gradcam"]
    torch.set_num_threads(1)
    code = cli.main(argv + ([] if report else ["--no-report"]))
    return base / "s", code, argv


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    return _study(tmp_path_factory.mktemp("tuned"))


@pytest.mark.slow
def test_toy_tuned_study_chooses_on_val_and_trains_the_final_runs_at_it(tuned):
    study, code, _ = tuned
    assert code == 0
    choices = read_choices(study)
    assert set(choices) == {"bn", "nn"}  # the literal recipe and the sharing run are not tuned
    for name, r in choices.items():
        assert sorted(p.lr for p in r.trials) == [0.02, 0.2, 1e6]  # GridSampler: each once
        assert r.chosen_lr in (0.02, 0.2) and r.sampler == "grid"
        final = yaml.safe_load((study / "runs" / name / "seed-0" / "config.yaml").read_text())
        assert final["lr"] == r.chosen_lr and final["epochs"] == 2
    shared = yaml.safe_load((study / "runs" / "torch_bn" / "seed-0" / "config.yaml").read_text())
    assert shared["lr"] == choices["bn"].chosen_lr
    literal = yaml.safe_load((study / "runs" / "lit" / "seed-0" / "config.yaml").read_text())
    assert literal["lr"] == 1e-4
    notes = json.loads((study / "study.json").read_text())["runs"]
    assert notes["bn/seed-0"]["lr_note"].startswith("tuned: ")


@pytest.mark.slow
def test_the_choice_is_the_optuna_studys_best_trial(tuned):
    import optuna

    from resnorm.study.tuning.engine import journal_storage

    study, _, _ = tuned
    for name, r in read_choices(study).items():
        ostudy = optuna.load_study(study_name=name, storage=journal_storage(study))
        # its best trial, or one scoring exactly as well nearer the untuned lr
        assert r.point(r.chosen).score == ostudy.best_trial.value
        states = {t.number: t.state.name for t in ostudy.trials}
        assert states == {p.number: "COMPLETE" if p.status == "ok" else "FAIL"
                          for p in r.trials}


@pytest.mark.slow
def test_the_manifest_holds_the_tuned_configs_and_what_each_pair_differs_in(tuned):
    study, _, _ = tuned
    manifest = json.loads((study / "study.json").read_text())["manifest"]
    chosen = read_choices(study)
    bn = manifest["runs"]["bn"]
    assert bn["config"]["lr"] == bn["lr"] == chosen["bn"].chosen_lr
    assert bn["lr_note"].startswith("tuned: ") and bn["tuned"] and bn["batch"] == 8
    assert bn["trial"]["number"] == chosen["bn"].chosen and bn["lr_rule"] == "linear"
    assert manifest["runs"]["torch_bn"]["trial"]["run"] == "bn"  # the sanity pair shares it
    assert not manifest["runs"]["lit"]["tuned"]
    assert manifest["design"]["sanity"] == ["torch_bn", "bn"]
    pairs = {(p["a"], p["b"]): p["differs_in"] for p in manifest["design"]["pairs"]}
    assert pairs[("torch_bn", "bn")] == ["norm"]  # the reference takes its candidate's lr
    differs = pairs.get(("bn", "nn")) or pairs[("nn", "bn")]
    assert "norm" in differs and ("lr" in differs) == (chosen["bn"].chosen_lr
                                                       != chosen["nn"].chosen_lr)


def test_the_design_names_the_tuned_runs_and_who_shares_an_lr():
    """Without tune.runs/share: the design's variants and batch runs are tuned, the sanity
    reference takes its candidate's lr, a literal-recipe run keeps its own."""
    from resnorm.study.tuning.phase import shared_lrs, tuned_runs

    runs = [{"name": "torch_bn", "norm": "torch_bn"}, {"name": "bn", "norm": "bn"},
            {"name": "gn", "norm": "gn"}, {"name": "in", "norm": "in"},
            {"name": "bn_b8", "norm": "bn", "batch_size": 8},
            {"name": "gn_b8", "norm": "gn", "batch_size": 8},
            {"name": "lit", "norm": "torch_bn", "recipe": "literal"}]
    plan = parse_plan({"tune": {"lr": [0.01, 0.1]}, "lr_rule": "linear", "runs": runs})
    design = plan_design(plan, resolve_runs(plan))
    assert tuned_runs(plan, design) == ["bn", "gn", "in", "bn_b8", "gn_b8"]
    assert shared_lrs(plan, design) == {"torch_bn": "bn"}
    plan = parse_plan({"tune": {"lr": [0.1], "runs": ["gn"]}, "runs": runs})
    design = plan_design(plan, resolve_runs(plan))
    assert tuned_runs(plan, design) == ["gn"]
    assert shared_lrs(plan, design) == {}  # bn is not tuned: nothing to share


@pytest.mark.slow
def test_a_diverged_trial_is_recorded_and_never_chosen(tuned):
    study, _, _ = tuned
    nn = read_choices(study)["nn"]
    huge = next(p for p in nn.trials if p.lr == 1e6)
    assert huge.status == "diverged" and huge.score is None
    assert nn.chosen_lr != 1e6 and nn.chosen != huge.number
    final = json.loads((study / "tuning" / "nn" / "lr-1e+06" / "seed-0" / "final.json")
                       .read_text())
    assert final["status"] == "diverged"


@pytest.mark.slow
def test_the_report_shows_the_tuning(tuned):
    study, _, _ = tuned
    report = (study / "report.md").read_text()
    assert "Tuning: each run at its own learning rate" in report
    assert "Tuned: each variant and batch run at its own lr, chosen on val" in report
    assert (study / "report_assets" / "tuning_lr.png").stat().st_size > 0
    assert (study / "report_assets" / "tuning_budget.png").stat().st_size > 0
    full = json.loads((study / "summary.json").read_text())
    # the variants are compared though each trained at its own lr
    assert {"bn", "nn"} <= set(full["ranking"]["runs"])
    summary = full["tuning"]
    assert set(summary) == {"bn", "nn"}
    for entry in summary.values():
        assert {"trials", "chosen", "chosen_lr", "at_edge", "choice_noise"} <= set(entry)
        assert sorted((g["lr"], g["status"]) for g in entry["trials"])[:2] == \
            [(0.02, "ok"), (0.2, "ok")]
        noise = entry["choice_noise"]  # two finished trials to choose between
        assert sum(s["share"] for s in noise["shares"]) == pytest.approx(1.0)
        assert noise["unstable"] == (noise["chosen_share"] < 0.7)


@pytest.mark.slow
def test_the_choice_ignores_test(tuned, tmp_path):
    study, _, _ = tuned
    shuffled, code, _ = _study(tmp_path, shuffle_test=True, report=False)
    assert code == 0
    a, b = read_choices(study), read_choices(shuffled)
    assert {k: (r.chosen_lr, [p.score for p in r.trials]) for k, r in a.items()} == \
           {k: (r.chosen_lr, [p.score for p in r.trials]) for k, r in b.items()}
    # the trials did not even score test; the final runs did, and the shuffle reached them
    trial = json.loads((shuffled / "tuning" / "bn" / "lr-0.02" / "seed-0" / "final.json")
                       .read_text())
    assert set(trial["eval"]) == {"train", "val"}
    tests = [json.loads((s / "runs" / "bn" / "seed-0" / "final.json").read_text())
             ["eval"]["test"] for s in (study, shuffled)]
    assert tests[0] != tests[1]


@pytest.mark.slow
def test_rerun_adds_no_optuna_trial_twice(tuned, capsys):
    import optuna

    from resnorm.study.tuning.engine import journal_storage

    study, _, argv = tuned
    assert cli.main(argv + ["--no-report"]) == 0
    out = capsys.readouterr().out
    assert out.count("(already done)") == 6 + 4  # every trial and every final run
    storage = journal_storage(study)
    for name in ("bn", "nn"):
        trials = optuna.load_study(study_name=name, storage=storage).trials
        assert sorted(round(t.params["lr"], 6) for t in trials) == [0.02, 0.2, 1e6]
        assert all(t.state.is_finished() for t in trials)



@pytest.mark.slow
def test_killed_tuning_phase_resumes_without_retraining_finished_trials(tmp_path, capsys):
    plan = dict(PLAN, tune={"lr": [0.02, 0.05], "epochs": 8, "default": False},
                runs=[{"name": "bn", "norm": "bn"}])
    root = _dataset(tmp_path, shuffle_test=False)
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    study = tmp_path / "s"
    argv = ["study", "--data", str(root), "--plan", str(tmp_path / "plan.yaml"), "--out",
            str(study), "--cache", str(tmp_path / "cache"), "--quiet", "--no-gradcam",
            "--no-report"]
    folders = [study / "tuning" / "bn" / f"lr-{lr}" / "seed-0" for lr in (0.02, 0.05)]
    proc = Forked(resnorm, *argv, stdout=False)

    def one_done_other_started(a, b):  # (the sampler decides which trial trains first)
        return (a / "final.json").exists() and (b / "last.pt").exists() and epochs_logged(b) >= 1

    # kill it once the first trial is done and the second has checkpointed an epoch
    kill_when(proc, lambda: one_done_other_started(*folders)
              or one_done_other_started(*folders[::-1]))
    first, second = folders if (folders[0] / "final.json").exists() else folders[::-1]
    assert not (second / "final.json").exists(), "the trial finished before the kill"
    assert not any((study / "runs").iterdir())  # killed in the tuning phase: no final run
    mtime = (first / "final.json").stat().st_mtime_ns

    torch.set_num_threads(1)
    assert cli.main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    name = {f: f"bn@lr={f.parent.name[3:]}/seed-0" for f in folders}
    assert name[first] in lines[0] and "(already done)" in lines[0]
    assert name[second] in lines[1] and "resumed in" in lines[1]
    assert (first / "final.json").stat().st_mtime_ns == mtime
    assert read_choices(study)["bn"].chosen_lr in (0.02, 0.05)
    assert (study / "runs" / "bn" / "seed-0" / "final.json").exists()


@pytest.mark.slow
def test_the_trials_run_as_slurm_tasks_and_choose_as_locally(tuned, tmp_path):
    """Through submitit's debug executor (no cluster needed): the trials go through the same
    SLURM path as the final jobs, and the choice equals the local study's."""
    from resnorm.pipeline import run_study
    from resnorm.study.plan.options import StudyOptions

    study, _, _ = tuned
    torch.set_num_threads(1)
    options = StudyOptions(data=study.parent / "data", progress=False, gradcam=False,
                           report=False, executor="slurm",
                           slurm={"cluster": "debug", "poll_s": 0})
    result = run_study(study.parent / "plan.yaml", tmp_path / "s", options, say=lambda *a: None)
    assert [o.status for o in result.outcomes] == ["completed"] * 4
    assert (tmp_path / "s" / "tuning" / "slurm").is_dir()  # the trials' task logs
    local, remote = read_choices(study), read_choices(tmp_path / "s")
    assert {k: (r.chosen_lr, [p.score for p in r.trials]) for k, r in local.items()} == \
           {k: (r.chosen_lr, [p.score for p in r.trials]) for k, r in remote.items()}


def test_sharing_the_lr_of_an_untuned_run_is_refused():
    from resnorm.study.tuning.phase import tune_phase

    with pytest.raises(UsageError, match="is tuned itself"):
        parse_plan({"tune": {"lr": [0.1], "runs": ["a"], "share": {"a": "b"}}, "runs": RUNS})
    plan = parse_plan({"tune": {"lr": [0.1], "runs": ["a"], "share": {"c": "b"}},
                       "runs": RUNS + [{"name": "c", "norm": "ln"}]})
    runs = resolve_runs(plan)
    with pytest.raises(UsageError, match="'b' is not a tuned run"):
        tune_phase(plan, runs, plan_design(plan, runs), None, None, None)


def test_report_says_when_the_ranking_depends_on_the_budget_and_flags_edges(tmp_path):
    from resnorm.report.document import Bullets
    from resnorm.report.tuning import section_tuning
    from resnorm.study.tuning.results import TuneResult, write_choices

    # a: one great lr among poor ones; b: uniformly decent. With one trial b is ahead in
    # expectation, with all five a is: the curves cross.
    a = [TrialPoint(lr, "ok", s, [s], 100) for lr, s in
         zip((0.01, 0.03, 0.1, 0.3, 1.0), (0.1, 0.1, 0.1, 0.1, 0.9))]
    b = [TrialPoint(lr, "ok", s, [s], 100) for lr, s in
         zip((0.01, 0.03, 0.1, 0.3, 1.0), (0.4, 0.5, 0.45, 0.4, 0.3))]
    results = {"a": TuneResult("a", a, 1.0, "high", 0.1, "val_acc", 3),
               "b": TuneResult("b", b, 0.03, None, 0.1, "val_acc", 3)}
    write_choices(tmp_path, results, {"lr": [0.01, 0.03, 0.1, 0.3, 1.0]})
    summary = {}
    section = section_tuning(tmp_path, summary, tmp_path / "assets")
    notes = " ".join(" ".join(b.items) for b in section.blocks if isinstance(b, Bullets))
    assert "a and b: their expected-max curves cross" in notes
    assert "a: the chosen lr 1 is the highest tried" in notes and "widen" in notes
    assert summary["tuning"]["a"]["at_edge"] == "high"
    assert {k: summary["tuning"]["b"]["trials"][1][k] for k in ("lr", "score", "status")} == \
        {"lr": 0.03, "score": 0.5, "status": "ok"}
    # no trial folders: the choice noise says why it is missing
    assert "predictions" in summary["tuning"]["b"]["choice_noise"]["reason"]


# --- a sampled space: the same Sobol points for every variant --------------------------------

SPACE_PLAN = {
    "threads": 1,
    "tune": {"space": {"lr": [0.01, 0.5, "log"], "weight_decay": [1.0e-5, 1.0e-2, "log"]},
             "trials": 6, "epochs": 1, "last_epochs": 1, "default": False},
    "defaults": {"size": 16, "n": 1, "epochs": 1, "batch_size": 8, "device": "cpu"},
    "runs": [{"name": "bn", "norm": "bn"}, {"name": "gn", "norm": "gn:4"}],
}


@pytest.mark.slow
def test_a_sampled_space_gives_every_variant_the_same_points(tmp_path):
    root = _dataset(tmp_path, shuffle_test=False)
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(SPACE_PLAN))
    torch.set_num_threads(1)
    assert cli.main(["study", "--data", str(root), "--plan", str(tmp_path / "plan.yaml"),
                     "--out", str(tmp_path / "s"), "--cache", str(tmp_path / "cache"),
                     "--quiet", "--no-gradcam"]) == 0
    tuning = json.loads((tmp_path / "s" / "summary.json").read_text())["tuning"]
    points = {name: [(t["number"], t["params"]) for t in entry["trials"]]
              for name, entry in tuning.items()}
    assert len(points["bn"]) == 6 and points["bn"] == points["gn"]
    assert len({json.dumps(p) for _, p in points["bn"]}) == 6  # six distinct points
    for _, params in points["bn"]:
        assert set(params) == {"lr", "weight_decay"}
        assert 0.01 <= params["lr"] <= 0.5 and 1e-5 <= params["weight_decay"] <= 1e-2
    for name, entry in tuning.items():  # the final runs train at the chosen trial's setting
        config = yaml.safe_load((tmp_path / "s" / "runs" / name / "seed-0" / "config.yaml")
                                .read_text())
        chosen = next(t for t in entry["trials"] if t["number"] == entry["chosen"])
        assert (config["lr"], config["weight_decay"]) == (chosen["lr"], chosen["weight_decay"])
        assert entry["sampler"] == "qmc" and len(entry["choice_noise"]["shares"]) >= 2
    assert (tmp_path / "s" / "report_assets" / "tuning_search.png").stat().st_size > 0


def test_a_plan_with_tune_is_refused_in_one_line_without_optuna(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if not installed
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(SPACE_PLAN))
    (tmp_path / "data").mkdir()
    code = cli.main(["study", "--data", str(tmp_path / "data"), "--plan",
                     str(tmp_path / "plan.yaml"), "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "pip install 'resnorm[tune]'" in err
    assert not (tmp_path / "s").exists()


def test_choice_shares_follow_the_gap_between_candidates():
    import numpy as np

    from resnorm.statistics.choice import choice_shares

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 400)
    right = lambda p: np.where(rng.random(400) < p, labels, (labels + 1) % 5)  # noqa: E731
    good, fair, close = right(0.8), right(0.5), right(0.5)
    clear = choice_shares(labels, [[good], [fair]], [0.8, 0.5], "acc", 500)
    assert clear.tolist() == [1.0, 0.0]  # 30 points apart on 400 images: always the same
    tight = choice_shares(labels, [[fair], [close]], [0.50, 0.505], "acc", 500)
    assert tight.sum() == pytest.approx(1.0) and 0.1 < tight[1] < 0.9  # within the noise
    both = choice_shares(labels, [[fair, close], [good]], [0.5, 0.8], "macro_f1", 200)
    assert both[1] == 1.0
    # twins tie on every resample: the earlier one (the choice's tie order) takes them all
    assert choice_shares(labels, [[fair], [fair]], [0.5, 0.5], "acc", 100).tolist() == [1, 0]


@pytest.mark.slow
def test_the_mlflow_export_carries_the_trials(tuned, tmp_path):
    from mlflow.tracking import MlflowClient

    from resnorm.export.mlflow import export_study

    study, _, _ = tuned
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    export_study(study, uri=uri, experiment="tuned")
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tuned").experiment_id
    trials = client.search_runs([exp], "tags.`resnorm.kind` = 'trial'")
    assert len(trials) == 6  # bn and nn, three grid points each
    chosen = {t.data.tags["resnorm.label"] for t in trials
              if t.data.tags["resnorm.chosen"] == "true"}
    assert chosen == {f"tuning/{name}/trial-{r.chosen}"
                      for name, r in read_choices(study).items()}
    diverged = [t for t in trials if t.data.tags["resnorm.status"] == "diverged"]
    assert len(diverged) == 1 and diverged[0].info.status == "FAILED"
    assert any("val_acc" in t.data.metrics for t in trials)
