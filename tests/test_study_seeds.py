"""Seeds in a real (tiny) study: `seeds:` and --seeds, a folder per (run, seed), per-image
predictions, and the verdicts of summary.json on real training: own BN and PyTorch BN
indistinguishable, a planted large difference (the literal recipe's lr 1e-4 against the
default recipe) found on the right side."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from resnorm import cli
from resnorm.errors import UsageError
from resnorm.rundir import RunDir
from resnorm.study import parse_plan

pytestmark = pytest.mark.usefixtures("one_thread")

PLAN = {"threads": 1, "seeds": 3,
        "synthetic": {"class_names": ["Cattle-Egret", "Indian-Peacock", "Hoopoe", "House-Crow"],
                      "train_per_class": 40, "val_per_class": 20, "seed": 0},
        "defaults": {"size": 32, "n": 1, "epochs": 4, "batch_size": 16, "device": "cpu",
                     "seed": 10},
        "runs": [{"name": "torch_bn", "norm": "torch_bn"}, {"name": "bn", "norm": "bn"},
                 {"name": "literal", "norm": "torch_bn", "recipe": "literal"}]}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    base = tmp_path_factory.mktemp("seeds")
    plan = base / "plan.yaml"
    plan.write_text(yaml.safe_dump(PLAN))
    out = base / "study"
    code = cli.main(["study", "--synthetic", str(base / "synth"), "--plan", str(plan),
                     "--out", str(out), "--cache", str(base / "cache"), "--quiet",
                     "--no-gradcam"])
    assert code == 0
    return out


@pytest.mark.slow
def test_each_run_trains_once_per_seed_in_its_own_folder(study):
    for name in ("torch_bn", "bn", "literal"):
        for seed in (10, 11, 12):  # the defaults' seed + 0, 1, 2
            folder = study / "runs" / name / f"seed-{seed}"
            assert yaml.safe_load((folder / "config.yaml").read_text())["seed"] == seed
            final = json.loads((folder / "final.json").read_text())
            kept = RunDir(folder).predictions()
            # the saved predictions are the best checkpoint's: they give its val accuracy
            val = kept["val"]
            assert val["labels"].shape == (80,) and val["probs"].shape == (80, 4)
            probs = val["probs"].astype(np.float32)  # stored as float16
            assert np.allclose(probs.sum(1), 1, atol=1e-2)
            assert np.all(probs[np.arange(80), val["preds"]] >= probs.max(1) - 1e-3)
            assert np.mean(val["preds"] == val["labels"]) == pytest.approx(
                final["eval"]["val"]["acc"], abs=1e-6)
            assert kept["train"]["labels"].shape == (160,)


@pytest.mark.slow
def test_the_verdicts_on_real_training(study):
    summary = json.loads((study / "summary.json").read_text())
    assert summary["runs"]["bn"]["seeds"] == [10, 11, 12]
    pairs = {(c["a"], c["b"], c["metric"]): c for c in summary["comparisons"]}
    same = pairs[("torch_bn", "bn", "val_acc")]
    assert same["ci95"][0] <= 0 <= same["ci95"][1]
    assert same["verdict"] == "no clear difference"
    planted = pairs[("torch_bn", "literal", "val_acc")]
    # the resolved settings: the literal recipe brings its own lr, momentum style, decay...
    assert planted["differs_in"] == "augment, lr, nesterov, recipe, warmup_epochs, weight_decay"
    assert planted["ci95"][0] > 0 and planted["verdict"] == "a higher"
    # three seeds: the seed variance (moderated across runs) + the image bootstrap
    assert "moderated" in planted["method"] and "image bootstrap" in planted["method"]
    md = (study / "report.md").read_text()
    assert "torch\\_bn higher than literal" in md


@pytest.mark.slow
def test_seeds_on_the_command_line_override_the_plan(study, capsys):
    # --seeds 1 asks for seed 10 only: all trained already, nothing to do
    plan = study.parent / "plan.yaml"
    code = cli.main(["study", "--synthetic", str(study.parent / "synth"), "--plan", str(plan),
                     "--out", str(study), "--cache", str(study.parent / "cache"), "--quiet",
                     "--no-gradcam", "--no-report", "--seeds", "1"])
    out = capsys.readouterr().out
    assert code == 0 and "3 runs x 1 seed(s) (10) = 3 jobs" in out
    assert out.count("(already done)") == 3


@pytest.mark.parametrize("seeds, message", [
    (0, "seeds must be a positive integer"),
    ([1, 1], "list of distinct integers"),
    ("three", "seeds must be a positive integer"),
])
def test_bad_seeds_are_usage_errors(seeds, message):
    with pytest.raises(UsageError, match=message):
        parse_plan({**PLAN, "seeds": seeds}, "p.yaml")


def test_explicit_seed_lists_and_comparison_pairs():
    plan = parse_plan({**PLAN, "seeds": [3, 7], "comparisons": [["bn", "literal"]]}, "p.yaml")
    assert plan.seeds_of(plan.runs[0]) == [3, 7] and plan.comparisons == [("bn", "literal")]
    with pytest.raises(UsageError, match="not a pair of two different runs"):
        parse_plan({**PLAN, "comparisons": [["bn", "nope"]]}, "p.yaml")
    with pytest.raises(UsageError, match="a run sets 'seed'"):
        parse_plan({**PLAN, "seeds": [1, 2],
                    "runs": [{"name": "a", "seed": 4}]}, "p.yaml")
