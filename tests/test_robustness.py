"""The robustness step end to end on a miniature study, and what it must never do: the clean
subset scored exactly as the run scored it, a no-op corruption scoring exactly the clean
predictions, the checkpoint untouched and only running statistics adapted, no test label
reaching the adaptation, the corrupted set the same in two processes and two makings, and bad
input one line with exit 2."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from resnorm import cli
from resnorm.data import load_cache
from resnorm.robustness import corrupted as corrupted_module
from resnorm.robustness import evaluate as evaluate_module
from resnorm.robustness.adaptation import adapted, running_stat_layers
from resnorm.robustness.corrupted import ensure_set
from resnorm.robustness.results import read_trial, trial_folder
from resnorm.rundir import RunDir
from resnorm.study.plan.robustness_settings import RobustnessSettings

pytestmark = pytest.mark.usefixtures("one_thread")

CORRUPTIONS, SEVERITIES = ["gaussian_noise", "contrast"], [2]
PLAN = {"threads": 1, "seeds": 1,
        "defaults": {"size": 32, "n": 1, "epochs": 1, "batch_size": 16, "device": "cpu",
                     "seed": 0},
        "robustness": {"corruptions": CORRUPTIONS, "severities": SEVERITIES, "images": 1000},
        "runs": [{"name": "bn", "norm": "bn"}, {"name": "gn", "norm": "gn"}]}


@pytest.fixture(scope="module")
def study(synth_cache, tmp_path_factory):
    """The miniature study: 2 runs x 1 seed, 1 epoch, then the robustness step and report."""
    folder = tmp_path_factory.mktemp("robust") / "study"
    plan = folder.parent / "plan.yaml"
    plan.write_text(yaml.safe_dump(PLAN))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(["study", "--data", str(synth_cache.path), "--plan", str(plan),
                         "--out", str(folder), "--quiet", "--no-gradcam"]) == 0
    finally:
        torch.set_num_threads(before)
    return folder


def settings() -> RobustnessSettings:
    return RobustnessSettings(corruptions=list(CORRUPTIONS), severities=list(SEVERITIES),
                              images=1000)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_study_scores_every_run_and_reports_it(study):
    step = json.loads((study / "robustness" / "robustness.json").read_text())
    assert step["scored"] == "val" and step["shared"] and step["images"] == 30
    state = json.loads((study / "study.json").read_text())["robustness"]
    assert sorted(state) == ["bn/seed-0", "gn/seed-0"]
    summary = json.loads((study / "summary.json").read_text())["robustness"]
    assert summary["reference"] is None and summary["corruptions"] == CORRUPTIONS
    assert "adapted" in summary["runs"]["bn"] and "adapted" not in summary["runs"]["gn"]
    kinds = [(c["a"], c["b"], c["kind"]) for c in summary["comparisons"]]
    assert ("bn", "gn", "pair") in kinds and ("bn (adapted)", "bn", "adapt") in kinds
    assert all(c["family"] == "robustness" and c["p_adjusted"] is not None
               for c in summary["comparisons"])
    report = (study / "report.md").read_text()
    assert "Robustness" in report and "adaptation and scoring share the val images" in report


def test_the_clean_subset_is_scored_exactly_as_the_run_scored_it(study):
    """Every scored val image is in the set here (images >= 30): the evaluation's clean
    predictions are the run's own, image for image, and so is its accuracy."""
    for run in ("bn", "gn"):
        scores = read_trial(trial_folder(study, run, 0), run, 0)
        own = RunDir(study / "runs" / run / "seed-0")
        predictions = own.predictions()["val"]
        assert np.array_equal(scores.clean, predictions["preds"])
        assert np.array_equal(scores.labels, predictions["labels"])
        # final.json keeps float32 scores: equal at that precision
        assert np.float32(scores.record["clean_acc"]) == np.float32(own.final()["eval"]["val"]["acc"])


def test_a_no_op_corruption_reproduces_the_clean_predictions(study, synth_cache, monkeypatch,
                                                             tmp_path):
    monkeypatch.setattr(corrupted_module, "corrupt_image", lambda image, *a: image.copy())
    cset = ensure_set(synth_cache, ["val"], CORRUPTIONS, SEVERITIES, 1000, seed=99)
    try:
        run = study / "runs" / "gn" / "seed-0"
        record = evaluate_module.evaluate_trial(run, tmp_path, cset, settings(), None, "val")
        scores = read_trial(tmp_path, "gn", 0)
        assert np.array_equal(scores.preds, np.broadcast_to(scores.clean, scores.preds.shape))
        assert record["mean_acc"] == record["clean_acc"]
    finally:
        shutil.rmtree(cset.folder)


def test_adaptation_leaves_the_checkpoint_and_changes_only_running_statistics(study,
                                                                             synth_cache,
                                                                             tmp_path):
    from resnorm.train.load import load_run_model

    run = study / "runs" / "bn" / "seed-0"
    before = (sha(run / "best.pt"), (run / "best.pt").stat().st_mtime_ns)
    cset = ensure_set(synth_cache, ["val"], CORRUPTIONS, SEVERITIES, 1000, seed=0)
    record = evaluate_module.evaluate_trial(run, tmp_path, cset, settings(), "val", "val")
    assert record["adapted_on"] == "val" and "adapted_mean_acc" in record
    assert (sha(run / "best.pt"), (run / "best.pt").stat().st_mtime_ns) == before
    model, _ = load_run_model(run)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(40, 3, 32, 32) * 3 + 1
    copy = adapted(model, [images[:20], images[20:]])
    changed = {k for k, v in copy.state_dict().items() if not torch.equal(v, original[k])}
    stats = {k for k in changed if k.rsplit(".", 1)[-1] in ("running_mean", "running_var",
                                                            "num_batches_tracked")}
    assert changed and changed == stats
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
    assert not copy.training and len(list(running_stat_layers(copy))) > 0


def with_test_split(data, tmp_path: Path):
    """A copy of the cache whose val images also serve as a test split (files test/...)."""
    out = tmp_path / "cache-with-test"
    shutil.copytree(data.path, out, ignore=shutil.ignore_patterns("corrupted"))
    manifest = json.loads((out / "manifest.json").read_text())
    val = manifest["splits"]["val"]
    shutil.copy(out / val["images"], out / "test_images.u8")
    shutil.copy(out / val["labels"], out / "test_labels.npy")
    manifest["splits"]["test"] = {**val, "images": "test_images.u8",
                                  "labels": "test_labels.npy", "folder": "test"}
    manifest["sources"]["test"] = [["test/" + f.split("/", 1)[1], h]
                                   for f, h in manifest["sources"]["val"]]
    (out / "manifest.json").write_text(json.dumps(manifest))
    return load_cache(out)


def test_adaptation_sees_the_val_images_and_never_a_test_label(study, synth_cache, tmp_path,
                                                              monkeypatch):
    data = with_test_split(synth_cache, tmp_path)
    cset = ensure_set(data, ["test", "val"], CORRUPTIONS, SEVERITIES, 1000, seed=0)
    seen = []

    def spy(model, images):
        batches = list(images)
        seen.append(torch.cat(batches))
        return adapted(model, batches)

    monkeypatch.setattr(evaluate_module, "adapted", spy)
    run = study / "runs" / "bn" / "seed-0"
    evaluate_module.evaluate_trial(run, tmp_path / "a", cset, settings(), "val", "test")
    mean = torch.tensor(cset.meta["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cset.meta["std"]).view(1, 3, 1, 1)
    for x, (c, s) in zip(seen, [(c, s) for c in CORRUPTIONS for s in SEVERITIES]):
        val = torch.from_numpy(np.array(cset.images("val", c, s))).float() / 255
        assert torch.allclose(x, (val - mean) / std, atol=1e-5)
    # scrambled test labels change no prediction: labels never reach the models
    meta = json.loads((cset.folder / "meta.json").read_text())
    meta["splits"]["test"]["labels"] = meta["splits"]["test"]["labels"][::-1]
    (cset.folder / "meta.json").write_text(json.dumps(meta))
    scrambled = corrupted_module.open_set(cset.folder)
    evaluate_module.evaluate_trial(run, tmp_path / "b", scrambled, settings(), "val", "test")
    a, b = read_trial(tmp_path / "a", "bn", 0), read_trial(tmp_path / "b", "bn", 0)
    assert np.array_equal(a.adapted, b.adapted) and np.array_equal(a.preds, b.preds)


MAKE = """
import sys, numpy as np
from resnorm.data import load_cache
from resnorm.robustness.corrupted import ensure_set
cset = ensure_set(load_cache(sys.argv[1]), ["val"], sys.argv[2].split(","), [3], 12, seed=5)
print(cset.folder)
"""


def test_the_corrupted_set_is_the_same_in_two_processes_and_two_makings(synth_cache, tmp_path):
    names = ["shot_noise", "impulse_noise", "frost", "elastic_transform"]
    for i in range(2):  # two caches of the same data
        shutil.copytree(synth_cache.path, tmp_path / f"c{i}",
                        ignore=shutil.ignore_patterns("corrupted"))
    out = subprocess.run([sys.executable, "-c", MAKE, str(tmp_path / "c1"), ",".join(names)],
                         capture_output=True, text=True, check=True)
    elsewhere = Path(out.stdout.strip())  # made by another process
    here = ensure_set(load_cache(tmp_path / "c0"), ["val"], names, [3], 12, seed=5)
    first = {n: here.path("val", n, 3).read_bytes() for n in names}
    shutil.rmtree(here.folder)  # made again, here, from nothing
    again = ensure_set(load_cache(tmp_path / "c0"), ["val"], names, [3], 12, seed=5)
    assert elsewhere.name == again.folder.name and len(again.rows("val")) == 12
    clean = np.asarray(synth_cache.splits["val"].images)[again.rows("val")]
    for n in names:
        made = again.path("val", n, 3).read_bytes()
        assert first[n] == made == (elsewhere / again.path("val", n, 3).name).read_bytes()
        assert not np.array_equal(np.array(again.images("val", n, 3)), clean)


@pytest.mark.parametrize("args, message", [
    (["--corruptions", "gaussian_noise,rain"], "unknown corruption 'rain'"),
    (["--severities", "3,6"], "severity '6' is not one of 1, 2, 3, 4, 5"),
    (["--severities", "0"], "severity '0' is not one of 1, 2, 3, 4, 5"),
])
def test_bad_flags_are_one_line_and_exit_2(study, args, message, capsys):
    assert cli.main(["robustness", str(study), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_study_without_a_finished_run_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "runs" / "bn" / "seed-0").mkdir(parents=True)
    assert cli.main(["robustness", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no finished run to evaluate" in err and len(err.splitlines()) == 1


def test_a_bad_robustness_section_is_refused_before_training(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({**PLAN, "robustness": {"corruptions": ["fog", "hail"]}}))
    assert cli.main(["study", "--synthetic", str(tmp_path / "d"), "--plan", str(plan),
                     "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert "robustness.corruptions: unknown corruption 'hail'" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "d").exists()
