"""Splitting a study over machines: `resnorm study ... --shard i/k` into one study folder, then
`resnorm report` merging the finished runs and listing the missing ones."""
from __future__ import annotations

import json

import pytest
import yaml

from resnorm import cli
from resnorm.study.execution import job as training
from resnorm.study.execution.job import Outcome

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["a", "b", "c", "d", "e"]


def write_plan(path, names, **defaults):
    plan = {"defaults": {"size": 32, "n": 1, "epochs": 1, "device": "cpu", **defaults},
            "runs": [{"name": name, "norm": "gn"} for name in names]}
    path.write_text(yaml.safe_dump(plan))
    return path


def shard_argv(data, plan, out, shard):
    return ["study", "--data", str(data), "--plan", str(plan), "--out", str(out), "--quiet",
            "--shard", shard]


@pytest.fixture
def trained(monkeypatch):
    """Replace training by a note of which run would train (the assignment is the test)."""
    names = []

    def fake_train_one(cfg, run_dir, progress, label=None):
        names.append(cfg.name)
        return Outcome(label or cfg.name, "completed", "trained", None, 0.0)

    monkeypatch.setattr(training, "train_one", fake_train_one)
    return names


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7])
def test_shards_cover_every_run_exactly_once(k, trained, synth_cache, tmp_path):
    plan = write_plan(tmp_path / "plan.yaml", NAMES)
    out = tmp_path / "study"
    for i in range(k):
        before = len(trained)
        assert cli.main(shard_argv(synth_cache.path, plan, out, f"{i}/{k}")) == 0
        assert trained[before:] == NAMES[i::k]         # round-robin in plan order
    assert sorted(trained) == NAMES                     # each run once, none left out
    # every shard's entries are kept in the one study.json; no shard drew Grad-CAM or a report
    state = json.loads((out / "study.json").read_text())
    assert sorted(state["runs"]) == [f"{name}/seed-0" for name in NAMES]
    assert not (out / "report.html").exists() and not (out / "gradcam").exists()


@pytest.mark.parametrize("shard", ["2/2", "x", "1/0"])
def test_a_bad_shard_is_a_usage_error(shard, trained, synth_cache, tmp_path, capsys):
    plan = write_plan(tmp_path / "plan.yaml", NAMES)
    assert cli.main(shard_argv(synth_cache.path, plan, tmp_path / "s", shard)) == 2
    err = capsys.readouterr().err
    assert "--shard" in err and len(err.strip().splitlines()) == 1
    assert trained == []


def test_report_merges_finished_shards_and_lists_the_missing_runs(synth_cache, tmp_path,
                                                                   capsys):
    plan = write_plan(tmp_path / "plan.yaml", ["first", "second"], batch_size=16)
    out = tmp_path / "study"
    assert cli.main(shard_argv(synth_cache.path, plan, out, "1/2")) == 0
    assert (out / "runs" / "second" / "seed-0" / "final.json").exists()
    assert not (out / "runs" / "first").exists()

    assert cli.main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "first: not started" in report and "have not finished: first" in report

    assert cli.main(shard_argv(synth_cache.path, plan, out, "0/2")) == 0
    assert cli.main(["report", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "not started" not in report and "have not finished" not in report
    assert all(f"| {name} |" in report for name in ("first", "second"))
