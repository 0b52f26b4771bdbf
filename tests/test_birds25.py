"""Real photographs: a small sample of ../shared/birds25 (the public copy's layout train/ val/
test/, whose val/ is mostly copies of train images) through prepare, a 2-run study, Grad-CAM
and the report. Skips where that folder is not beside the repository (set RESNORM_BIRDS25)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from resnorm.cli import main

def _find_birds25() -> Path:
    """$RESNORM_BIRDS25, else ../shared/birds25 beside this repository, or beside the
    repository it was cloned from (a CI clone in a temporary folder)."""
    if os.environ.get("RESNORM_BIRDS25"):
        return Path(os.environ["RESNORM_BIRDS25"])
    repo = Path(__file__).resolve().parents[1]
    homes = [repo]
    try:
        origin = subprocess.run(["git", "-C", str(repo), "config", "remote.origin.url"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        origin = ""
    if origin and Path(origin).is_dir():
        homes.append(Path(origin).resolve())
    candidates = [home.parent / "shared" / "birds25" for home in homes]
    return next((c for c in candidates if (c / "train").is_dir()), candidates[0])


BIRDS25 = _find_birds25()
TRAIN, LEAKED, CLEAN, TEST = 6, 2, 5, 3  # per class in the sample

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not (BIRDS25 / "train").is_dir(),
                                 reason=f"no real photos at {BIRDS25} (a clone away from this "
                                        "repository's home; set RESNORM_BIRDS25)")]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sample_birds(out: Path) -> int:
    """Per class: LEAKED val images that are byte copies of train images (with those train
    images), CLEAN val images with no copy in the whole train folder, TEST test images and
    more train images up to TRAIN + LEAKED. Returns the number of classes."""
    classes = sorted(p.name for p in (BIRDS25 / "train").iterdir() if p.is_dir())
    for name in classes:
        train = sorted((BIRDS25 / "train" / name).iterdir())
        by_hash = {_sha(p): p for p in train}
        val = sorted((BIRDS25 / "val" / name).iterdir())
        copies = [(v, by_hash[_sha(v)]) for v in val if _sha(v) in by_hash][:LEAKED]
        clean = [v for v in val if _sha(v) not in by_hash][:CLEAN]
        originals = [t for _, t in copies]
        chosen = originals + [t for t in train if t not in originals][:TRAIN]
        picks = {"train": chosen, "val": [v for v, _ in copies] + clean,
                 "test": sorted((BIRDS25 / "test" / name).iterdir())[:TEST]}
        for split, files in picks.items():
            (out / split / name).mkdir(parents=True)
            for f in files:
                shutil.copy(f, out / split / name / f.name)
    return len(classes)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    base = tmp_path_factory.mktemp("birds25")
    n_classes = sample_birds(base / "birds")
    plan = base / "plan.yaml"
    plan.write_text("defaults: {size: 32, n: 1, epochs: 2, batch_size: 16, device: cpu}\n"
                    "gradcam: {per_class: 2}\n"
                    "runs: [{name: torch_bn, norm: torch_bn}, {name: gn, norm: gn}]\n")
    code = main(["study", "--data", str(base / "birds"), "--plan", str(plan), "--out",
                 str(base / "s"), "--cache", str(base / "cache"), "--quiet"])
    return {"dir": base / "s", "code": code, "classes": n_classes}


def test_the_study_runs_to_its_report_on_real_photos(study):
    assert study["code"] == 0
    assert (study["dir"] / "report.html").is_file()
    gradcam = json.loads((study["dir"] / "gradcam" / "gradcam.json").read_text())
    assert len(gradcam["classes"]) == 7  # the assignment's seven species are all here


def test_leaked_val_images_are_left_out_and_counted(study):
    summary = json.loads((study["dir"] / "summary.json").read_text())
    n = study["classes"]
    val = summary["splits"]["val"]
    assert val["images"] == (LEAKED + CLEAN) * n and val["leaked"] >= LEAKED * n
    assert val["scored"] == val["images"] - val["leaked"] and not val["inflated"]
    final = json.loads((study["dir"] / "runs" / "gn" / "seed-0" / "final.json").read_text())
    assert sum(map(sum, final["eval"]["val"]["confusion"])) == val["scored"]


def test_test_scores_are_reported_beside_train_and_val(study):
    summary = json.loads((study["dir"] / "summary.json").read_text())
    test = summary["splits"]["test"]
    assert test["images"] == TEST * study["classes"]
    for run in ("torch_bn", "gn"):
        entry = summary["runs"][run]["test_acc"]
        assert 0 <= entry["ci95"][0] <= entry["mean"] <= entry["ci95"][1] <= 1
    assert any(c["metric"] == "test_acc" for c in summary["comparisons"])
    report = (study["dir"] / "report.md").read_text()
    assert "Test acc" in report and "held-out estimate" in report
    assert "left out of every score and of choosing epochs" in report
