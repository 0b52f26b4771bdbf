"""Grad-CAM of one run (`run_gradcam`) and of a study's best run (`study_gradcam`): the
galleries, the pointing-game scores, and `gradcam.json`. The run, its model and its data come
from resnorm.train.load_run (the data as the run scored it: val without its leaked images)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from resnorm.errors import UsageError
from resnorm.gradcam.faithfulness import corner_mass, faithfulness
from resnorm.gradcam.gallery import ClassGallery, class_gallery, gallery_slug
from resnorm.gradcam.maps import TOP_SHARE, pointing_game, val_boxes
from resnorm.gradcam.select import PER_CLASS, choose_classes
from resnorm.rundir import BEST_FILE, RunDir
from resnorm.study.execution.records import best_run, collect_runs, read_state, write_state
from resnorm.studydir import StudyDir
from resnorm.train import load_run


def run_gradcam(run_dir: str | Path, out_dir: str | Path, *, data=None,
                classes: Sequence[str] | None = None, per_class: int = PER_CLASS, seed: int = 0,
                score_runs: dict[str, str | Path] | None = None, device: str = "auto",
                faithful: bool = True) -> dict:
    """Galleries for the best checkpoint of `run_dir`, and pointing-game scores.

    `data` is the run's PreparedData (found from the run's config when None). `score_runs`
    (name -> run dir) are scored with the pointing game when the dataset has boxes; by default
    just this run. Writes `out_dir/gradcam.json` (returned), one PNG and two .npy per class.
    `faithful`: also score the maps' faithfulness and their mass on black corners
    (resnorm.gradcam.faithfulness).
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if per_class < 1:
        raise UsageError(f"--per-class must be at least 1, got {per_class}")
    run = load_run(run_dir, device=device, data=data)
    model, data = run.model, run.data
    chosen, note = choose_classes(list(data.classes), classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_previous_output(out_dir)

    predicted = run.predict("val")
    preds, probs = predicted["preds"].numpy(), predicted["probs"].numpy()
    boxes = val_boxes(data)
    galleries = [class_gallery(model, data, data.classes.index(name), preds, probs, per_class,
                               seed, out_dir, run.name, boxes) for name in chosen]
    summary = {
        "run": run.name,
        "run_dir": str(run_dir),
        "val_acc": float((preds == predicted["labels"].numpy()).mean()) if len(preds)
        else float("nan"),
        "target_layers": [n for n, m in model.named_modules()
                          if any(m is layer for layer in model.gradcam_layers())],
        "map_size": int(data.size), "per_class": per_class, "note": note,
        "classes": [g.to_json() for g in galleries],
        "concentration": {kind: _mean([t["concentration"] for g in galleries
                                       for t in getattr(g, kind)])
                          for kind in ("correct", "incorrect")},
        "concentration_top_share": TOP_SHARE,
        "gallery_pointing": _gallery_pointing(galleries),
        "pointing": _score_runs(run, boxes, score_runs, device, seed),
    }
    if faithful:
        val = data.splits["val"]
        summary["faithfulness"] = _gallery_faithfulness(model, data, galleries, out_dir, seed)
        summary["corners"] = corner_mass(model, val.images, np.asarray(val.labels), data.mean,
                                         data.std, seed=seed)
    StudyDir.gallery_json(out_dir).write_text(json.dumps(summary, indent=2))
    return summary


def _gallery_faithfulness(model, data, galleries: list[ClassGallery], out_dir: Path,
                          seed: int) -> dict:
    """Faithfulness of the galleries' correctly classified images (a seeded pick per class of
    the clean val images), from the maps the galleries saved."""
    val = data.splits["val"]
    rows = [t["val_index"] for g in galleries for t in g.correct]
    cams = [np.load(out_dir / f"{gallery_slug(g.name)}_correct.npy") for g in galleries]
    cams = np.concatenate(cams) if cams else np.zeros((0, data.size, data.size), np.float32)
    rows = np.asarray(rows, np.int64)
    return faithfulness(model, val.images[rows], np.asarray(val.labels)[rows], cams, data.mean,
                        data.std, seed=seed)


def _gallery_pointing(galleries: list[ClassGallery]) -> dict | None:
    """Pointing-game hit rate of the gallery maps, correct vs incorrect (None without boxes)."""
    out = {}
    for kind in ("correct", "incorrect"):
        hits = [t["pointing_hit"] for g in galleries for t in getattr(g, kind)
                if "pointing_hit" in t]
        out[kind] = float(np.mean(hits)) if hits else None
    return out if any(v is not None for v in out.values()) else None


def _remove_previous_output(out_dir: Path) -> None:
    """Delete the files an earlier run_gradcam listed in out_dir/gradcam.json (and only those),
    so galleries of classes no longer chosen do not linger beside the new ones."""
    previous = StudyDir.gallery_json(out_dir)
    if not previous.is_file():
        return
    for c in json.loads(previous.read_text()).get("classes", []):
        stem = Path(c["png"]).stem
        for name in (c["png"], f"{stem}_correct.npy", f"{stem}_incorrect.npy"):
            (out_dir / Path(name).name).unlink(missing_ok=True)
    previous.unlink()


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _score_runs(run, boxes, score_runs, device: str, seed: int) -> dict | None:
    """Pointing-game score of each run in `score_runs` (name -> run dir; default: `run`
    alone) on `run`'s data, when the dataset has object boxes."""
    if not boxes:
        return None
    scores = {}
    for name, path in (score_runs or {run.name: None}).items():
        model = run.model if name == run.name else load_run(path, device=device).model
        scores[name] = pointing_game(model, run.data, boxes, seed=seed)
    return scores


# --- a study's best run ------------------------------------------------------------------------

def study_gradcam(study: str | Path, out: str | Path | None = None, *, classes=None,
                  per_class: int = 5, seed: int = 0, device: str = "auto", runs="best",
                  faithful: bool = True) -> dict:
    """Grad-CAM galleries of the study's best run (by mean val accuracy over its seeds; of
    those, the seed closest to the mean), pointing-game scores of every finished run (each
    its representative seed). `runs` ("best", "all", or a list of run names; the plan's
    `gradcam: runs:`) adds galleries of other runs in OUT/runs/<name>/; gradcam.json's
    `variants` then lists each gallery's faithfulness and corner scores. `out`: default
    STUDY/gradcam."""
    study = StudyDir(study)
    out = Path(out) if out is not None else study.gradcam
    records = collect_runs(study)
    best = best_run(records)
    if best is None:
        raise UsageError(f"{study} has no finished run to explain yet")
    others = {r.name: r.dir for r in records if r.ok and RunDir(r.dir).has(BEST_FILE)}
    summary = run_gradcam(best.dir, out, classes=classes, per_class=per_class, seed=seed,
                          score_runs=others, device=device, faithful=faithful)
    # which model: the best run by mean val accuracy, and of its seeds the representative one
    # (closest to that mean), not the luckiest
    summary.update(run=best.name, seed=best.representative.seed, seeds=best.seeds,
                   mean_val_acc=best.score("val", "acc"))
    summary["variants"] = [_variant(summary, best, out, out)] + [
        _variant(run_gradcam(r.dir, StudyDir.galleries_of(out, r.name), classes=classes,
                             per_class=per_class, seed=seed, device=device, faithful=faithful),
                 r, StudyDir.galleries_of(out, r.name), out)
        for r in _extra_runs(records, runs, best)]
    StudyDir.gallery_json(out).write_text(json.dumps(summary, indent=2))
    state = read_state(study)
    if state.get("gradcam_error"):  # an earlier failure is superseded
        state["gradcam_error"] = None
        write_state(study, state)
    return summary


def _extra_runs(records, runs, best) -> list:
    """The finished runs besides the best that the plan's `gradcam: runs:` asks galleries of."""
    finished = [r for r in records
                if r.ok and r.name != best.name and RunDir(r.dir).has(BEST_FILE)]
    if runs in (None, "best"):
        return []
    if runs == "all":
        return finished
    names = [runs] if isinstance(runs, str) else list(runs)
    unknown = [n for n in names if n not in {r.name for r in records}]
    if unknown:
        raise UsageError(f"gradcam runs: no run named {', '.join(unknown)} in this study")
    return [r for r in finished if r.name in names]


def _variant(summary: dict, record, folder: Path, out: Path) -> dict:
    """One gallery's line in gradcam.json's `variants` (`dir`: its folder, relative to `out`)."""
    return {"run": record.name, "norm": record.config.get("norm"),
            "dir": Path(os.path.relpath(folder, out)).as_posix(),
            "seed": record.representative.seed, "val_acc": summary.get("val_acc"),
            "faithfulness": summary.get("faithfulness"), "corners": summary.get("corners")}
