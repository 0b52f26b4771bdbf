"""Leaked images: val/test images with an exact or near copy in train are left out of every
score and of choosing epochs by default, kept (and labelled inflated) on request."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from resnorm.cli import main
from resnorm.data import load_cache, make_synthetic, prepare
from resnorm.data.cache import MIN_SCORED_PER_CLASS
from resnorm.errors import UsageError
from resnorm.rundir import RunDir
from resnorm.train import train

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["Hoopoe", "House-Crow", "Indian-Roller"]


def leaky_dataset(root, val_per_class=6, copies=2, test=True):
    """A synthetic dataset whose val/ holds `copies` byte copies of train images per class
    (and test/ one), in the public copy's layout (train/ val/ test/)."""
    make_synthetic(root, class_names=CLASSES, train_per_class=12, val_per_class=val_per_class,
                   side_range=(32, 48))
    shutil.move(root / "valid", root / "val")
    if test:
        shutil.copytree(root / "val", root / "test")
    for name in CLASSES:
        train = sorted((root / "train" / name).iterdir())
        for k in range(copies):
            shutil.copy(train[k], root / "val" / name / f"c{k}{train[k].suffix}")
        if test:
            shutil.copy(train[-1], root / "test" / name / f"c{train[-1].suffix}")
    return root


@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
    base = tmp_path_factory.mktemp("leaky")
    root = leaky_dataset(base / "data")
    return root, load_cache(prepare(root, size=16, out=base / "cache", workers=1,
                                    progress=False))


def test_the_audit_marks_the_copies_and_scored_leaves_them_out(leaky):
    _, data = leaky
    val = data.splits["val"]
    assert sorted(f.rsplit(".", 1)[0] for f in np.array(val.files)[val.leaked]) == sorted(
        f"val/{n}/c{k}" for n in CLASSES for k in range(2))
    assert not data.splits["train"].leaked.any()
    scored = data.scored()
    assert len(scored.splits["val"]) == 18 and len(scored.splits["test"]) == 18
    assert not any("/c" in f for f in scored.splits["val"].files)
    assert len(scored.splits["train"]) == len(data.splits["train"])
    assert scored.split_counts() == {"val": {"images": 24, "scored": 18, "leaked": 6},
                                     "test": {"images": 21, "scored": 18, "leaked": 3}}
    kept = data.scored(keep_leaked=True)
    assert kept.split_counts()["val"] == {"images": 24, "scored": 24, "leaked": 6}
    assert "left out of every score" in scored.leak_note()
    assert "KEPT" in kept.leak_note() and "inflated" in kept.leak_note()


def test_too_few_clean_val_images_say_what_to_do(tmp_path):
    root = leaky_dataset(tmp_path / "data", val_per_class=MIN_SCORED_PER_CLASS - 1, copies=1,
                         test=False)
    data = load_cache(prepare(root, size=16, out=tmp_path / "cache", workers=1, progress=False))
    with pytest.raises(UsageError) as info:
        data.scored()
    message = str(info.value)
    assert f"fewer than {MIN_SCORED_PER_CLASS}" in message and "--keep-leaked" in message
    assert "test/" in message and "\n" not in message
    assert len(data.scored(keep_leaked=True).splits["val"]) == 5 * len(CLASSES)


def test_a_small_val_split_without_leaks_is_not_refused(tmp_path):
    root = leaky_dataset(tmp_path / "data", val_per_class=2, copies=0, test=False)
    data = load_cache(prepare(root, size=16, out=tmp_path / "cache", workers=1, progress=False))
    assert len(data.scored().splits["val"]) == 2 * len(CLASSES)


@pytest.mark.parametrize("keep", [False, True])
def test_a_run_chooses_and_scores_on_the_clean_images_only(leaky, tmp_path, keep):
    _, data = leaky
    final = train({"data": str(data.path), "out": str(tmp_path / "run"), "size": 16, "n": 1,
                   "epochs": 2, "batch_size": 8, "device": "cpu", "keep_leaked": keep},
                  progress=False)
    val_n, test_n = (24, 21) if keep else (18, 18)
    assert final["splits"]["val"] == {"images": 24, "scored": val_n, "leaked": 6}
    for split, n in (("val", val_n), ("test", test_n)):
        assert sum(map(sum, final["eval"][split]["confusion"])) == n
    predictions = RunDir(tmp_path / "run").predictions()
    assert len(predictions["val"]["labels"]) == val_n and len(predictions["test"]["labels"]) == test_n
    # the epoch chosen was chosen on the same images: its csv val accuracy is final.json's
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    best = rows[final["best_epoch"]].split(",")
    assert float(best[header.index("val_acc")]) == pytest.approx(final["eval"]["val"]["acc"])


def test_train_cli_warns_once_about_the_left_out_images(leaky, tmp_path, capsys):
    root, _ = leaky
    code = main(["train", "--data", str(root), "--cache", str(tmp_path / "cache"), "--size",
                 "16", "--n", "1", "--epochs", "1", "--batch-size", "8", "--device", "cpu",
                 "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: 6 of 24 val and 3 of 21 test images have an exact or near copy "
                        "in train: left out of every score and of choosing epochs "
                        "(--keep-leaked keeps them)"]


def test_a_study_refuses_too_few_clean_images_before_training(tmp_path, capsys):
    root = leaky_dataset(tmp_path / "data", val_per_class=3, copies=2, test=False)
    plan = tmp_path / "plan.yaml"
    plan.write_text("defaults: {size: 16, n: 1, epochs: 1, device: cpu}\n"
                    "runs: [{name: bn, norm: bn}]\n")
    code = main(["study", "--data", str(root), "--plan", str(plan), "--out",
                 str(tmp_path / "s"), "--cache", str(tmp_path / "cache"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--keep-leaked" in err
    assert not (tmp_path / "s" / "runs" / "bn").exists()


def test_summary_and_report_say_what_was_left_out_and_mark_kept_scores(leaky, tmp_path):
    root, _ = leaky
    plan = tmp_path / "plan.yaml"
    plan.write_text("defaults: {size: 16, n: 1, epochs: 1, batch_size: 8, device: cpu}\n"
                    "runs: [{name: torch_bn, norm: torch_bn}, {name: bn, norm: bn}]\n")
    for keep in (False, True):
        out = tmp_path / f"s-{keep}"
        argv = ["study", "--data", str(root), "--plan", str(plan), "--out", str(out),
                "--cache", str(tmp_path / "cache"), "--quiet", "--no-gradcam"]
        assert main(argv + (["--keep-leaked"] if keep else [])) == 0
        summary = json.loads((out / "summary.json").read_text())
        val = {"images": 24, "scored": 24 if keep else 18, "leaked": 6, "inflated": keep}
        assert summary["splits"]["val"] == val
        assert summary["splits"]["test"]["inflated"] is keep
        metrics = {c["metric"] for c in summary["comparisons"]}
        assert metrics == {"val_acc", "val_macro_f1", "test_acc", "test_macro_f1"}
        assert summary["sanity"]["metric"] == "test_acc"
        report = (out / "report.md").read_text()
        assert "Test acc" in report and "held-out estimate" in report
        if keep:
            assert "Val acc †" in report and "val scores are INFLATED" in report
        else:
            assert "6 left out of every score and of choosing epochs" in report
            assert "†" not in report
