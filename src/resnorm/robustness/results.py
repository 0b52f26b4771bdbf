"""STUDY/robustness as data: what the robustness step wrote, for the report and the export.

    STUDY/robustness/
        robustness.json             the step: settings, the corrupted set, the splits, the
                                    resolution, the library, how long it took
        <run>/seed-<s>/scores.npz   per image: labels, files, clean predictions, predictions
                                    (corruption, severity, image) as trained and adapted
        <run>/seed-<s>/result.json  the record (accuracies, key, seconds); written last

Imports no torch: the report reads these without it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnorm.fileio import atomic_write_bytes, atomic_write_text, read_json
from resnorm.studydir import StudyDir

__all__ = ["STEP_FILE", "RECORD_FILE", "SCORES_FILE", "TrialScores", "trial_folder",
           "write_trial", "read_record", "read_trial", "collect_scores", "read_step",
           "write_step", "record_metrics"]

STEP_FILE = "robustness.json"
RECORD_FILE = "result.json"
SCORES_FILE = "scores.npz"


@dataclass
class TrialScores:
    """One (run, seed)'s predictions on the corrupted set (arrays of int)."""

    run: str
    seed: int
    record: dict
    labels: np.ndarray          # (N,)
    clean: np.ndarray           # (N,) as trained, clean images
    preds: np.ndarray           # (C, S, N) as trained
    adapted: np.ndarray | None  # (C, S, N) BN adapted, or None

    @property
    def corruptions(self) -> list[str]:
        return list(self.record["corruptions"])

    @property
    def severities(self) -> list[int]:
        return [int(s) for s in self.record["severities"]]


def trial_folder(study: str | Path, run: str, seed: int) -> Path:
    """STUDY/robustness/<run>/seed-<seed>/."""
    return StudyDir(study).robustness_trial(run, seed)


def write_trial(folder: Path, record: dict, **arrays) -> None:
    """scores.npz, then result.json (its presence says the scores are whole)."""
    import io

    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: v for k, v in arrays.items() if v is not None})
    atomic_write_bytes(folder / SCORES_FILE, buffer.getbuffer())
    atomic_write_text(folder / RECORD_FILE, json.dumps(record, indent=1) + "\n")


def read_record(folder: Path) -> dict | None:
    record = read_json(Path(folder) / RECORD_FILE)
    return record if isinstance(record, dict) else None


def read_trial(folder: Path, run: str, seed: int) -> TrialScores | None:
    """A finished evaluation (None when there is none)."""
    record = read_record(folder)
    if record is None or not (folder / SCORES_FILE).is_file():
        return None
    with np.load(folder / SCORES_FILE) as z:
        return TrialScores(run, seed, record, z["labels"], z["clean"], z["preds"],
                           z["adapted"] if "adapted" in z.files else None)


def collect_scores(study: str | Path, trials: list[tuple[str, int]]
                   ) -> dict[str, list[TrialScores]]:
    """The evaluated (run, seed)s among `trials`, per run in the order given, only those
    whose evaluation matches the study's step (robustness.json's `key`s)."""
    step = read_step(study) or {}
    keys = step.get("keys") or {}
    out: dict[str, list[TrialScores]] = {}
    for run, seed in trials:
        scores = read_trial(trial_folder(study, run, seed), run, seed)
        wanted = keys.get(f"{run}/seed-{seed}")
        if scores is not None and wanted in (None, scores.record.get("key")):
            out.setdefault(run, []).append(scores)
    return out


def read_step(study: str | Path) -> dict | None:
    step = read_json(StudyDir(study).robustness / STEP_FILE)
    return step if isinstance(step, dict) else None


def write_step(study: str | Path, step: dict) -> None:
    folder = StudyDir(study).robustness
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / STEP_FILE, json.dumps(step, indent=1) + "\n")


def record_metrics(record: dict | None) -> dict[str, float]:
    """An evaluation's accuracies as flat metrics (the MLflow export): robustness_clean_acc,
    robustness_mean_acc, robustness_acc_<corruption>_s<severity>, and robustness_adapted_*."""
    if not record:
        return {}
    out = {"robustness_clean_acc": record.get("clean_acc")}
    for prefix, mean_key, cells_key in (("robustness", "mean_acc", "acc"),
                                        ("robustness_adapted", "adapted_mean_acc",
                                         "adapted_acc")):
        out[f"{prefix}_mean_acc"] = record.get(mean_key)
        for corruption, by_severity in (record.get(cells_key) or {}).items():
            for severity, acc in by_severity.items():
                out[f"{prefix}_acc_{corruption}_s{severity}"] = acc
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float))}
