"""A run folder: the one place that knows its file names, writes them and reads them back.

A run folder (`resnorm train --out RUN`, a study's STUDY/runs/<name>/seed-<s>/) holds

    config.yaml       the resolved settings, then `distributed:` and `environment:`
    metrics.csv       one row per epoch (resnorm.metrics)
    events.out.tfevents.*   TensorBoard scalars of the same epochs
    last.pt, best.pt  checkpoints (what they hold: resnorm.checkpoint.Checkpoint)
    predictions.npz   the best checkpoint's per-image predictions (resnorm.predictions)
    curves.png        the learning curves
    final.json        written last: its presence marks the run finished
    error.txt         a study's record of why the run failed (the traceback)
    train.log         a study's copy of the run's output when it trained in its own process
    .lock, .lock.json a study process's lock on the folder (resnorm.study.execution.locks)
    gradcam/          `resnorm gradcam --run RUN`'s galleries (by default)

Every write is atomic (`resnorm.fileio`), only by the main process (under torchrun: rank 0),
and a full disk becomes one `DiskFullError` line naming the file. `clear()` is what a fresh
start (`--restart`, or a folder without last.pt) removes: every file the run itself wrote,
nothing else. The readers (`final`, `metrics`, `predictions`, `config`) answer None or empty
for a file that is not there yet, so the study and the report read any run in any state.
`status()` is a run's one status, whoever asks (a study's records, the tuning phase).
This module imports no torch (metrics.csv's reader pulls it in only when called).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

import yaml

from resnorm.errors import DiskFullError
from resnorm.fileio import (atomic_write_bytes, atomic_write_text, format_bytes, free_bytes,
                            is_disk_full, temp_path)
from resnorm.predictions import read_predictions, write_predictions

__all__ = ["RunDir", "CONFIG_FILE", "METRICS_FILE", "LAST_FILE", "BEST_FILE", "FINAL_FILE",
           "PREDICTIONS_FILE", "CURVES_FILE", "ERROR_FILE", "LOG_FILE", "LOCK_FILE",
           "CLAIM_FILE", "EVENTS_GLOB", "GRADCAM_DIR", "RUN_FILES", "ARTIFACT_FILES",
           "OK_STATUSES", "STATUSES", "to_json"]

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
LAST_FILE = "last.pt"
BEST_FILE = "best.pt"
FINAL_FILE = "final.json"
PREDICTIONS_FILE = "predictions.npz"
CURVES_FILE = "curves.png"
ERROR_FILE = "error.txt"
LOG_FILE = "train.log"
LOCK_FILE = ".lock"
CLAIM_FILE = ".lock.json"
EVENTS_GLOB = "events.out.tfevents.*"
GRADCAM_DIR = "gradcam"
# What `clear` removes (with the TensorBoard events and stray temp files of these): the files
# a run writes, and error.txt, which describes a run that a fresh start discards. train.log
# and the locks belong to the study process that is training the run right now.
RUN_FILES = (CONFIG_FILE, METRICS_FILE, LAST_FILE, BEST_FILE, FINAL_FILE, PREDICTIONS_FILE,
             CURVES_FILE, ERROR_FILE)
# What a finished run hands on as its record (the MLflow export's artifacts).
ARTIFACT_FILES = (CURVES_FILE, CONFIG_FILE, METRICS_FILE, FINAL_FILE)
# A run's status (RunDir.status): final.json's once it ended, else what the folder and the
# study say. The good ones: a model that trained to its end or stopped early as planned.
OK_STATUSES = ("completed", "early_stopped")
STATUSES = (*OK_STATUSES, "diverged", "failed", "interrupted", "not started")


class RunDir:
    """The files of one run folder. `is_main`: whether this process writes (under DDP only
    rank 0 does; every rank reads)."""

    def __init__(self, path: str | os.PathLike, is_main: bool = True) -> None:
        self.dir, self.is_main = Path(path).expanduser(), is_main

    def __repr__(self) -> str:
        return f"RunDir({str(self.dir)!r})"

    def path(self, name: str) -> Path:
        return self.dir / name

    def has(self, name: str) -> bool:
        return self.path(name).exists()

    @property
    def finished(self) -> bool:
        """final.json is there: the run ended (completed, stopped early or diverged)."""
        return self.has(FINAL_FILE)

    @property
    def resumable(self) -> bool:
        """last.pt is there: a run to continue (or a finished one's last state)."""
        return self.has(LAST_FILE)

    @property
    def gradcam(self) -> Path:
        """Where `resnorm gradcam --run` puts this run's galleries by default."""
        return self.path(GRADCAM_DIR)

    def status(self, recorded: str | None = None) -> str:
        """The run's one status (STATUSES): final.json's status once the run ended
        (completed, early_stopped, diverged); else "failed" when the study recorded a failure
        (`recorded`: its study.json entry's status, e.g. a SLURM task that died) or the
        folder holds error.txt; else "interrupted" (last.pt) or "not started"."""
        final = self.final()
        if final is not None:
            return str(final.get("status", "completed"))
        if recorded == "failed" or self.has(ERROR_FILE):
            return "failed"
        return "interrupted" if self.resumable else "not started"

    @property
    def started(self) -> bool:
        """Something of a run is here (its config, a checkpoint or final.json)."""
        return any(self.has(name) for name in (CONFIG_FILE, FINAL_FILE, LAST_FILE))

    # --- a fresh start -------------------------------------------------------------------

    def clear(self) -> None:
        """Remove what an earlier run left here (RUN_FILES, TensorBoard events, temp files of
        interrupted writes): only the run's own files, nothing else."""
        if not self.is_main or not self.dir.is_dir():
            return
        for name in RUN_FILES:
            self.path(name).unlink(missing_ok=True)
        for events in self.dir.glob(EVENTS_GLOB):
            events.unlink()
        for name in RUN_FILES:  # left by a process killed mid-write (fileio.temp_path)
            for temp in self.dir.glob(f".{name}.tmp-*"):
                temp.unlink(missing_ok=True)

    # --- writes --------------------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self, name: str, hint: bool = True) -> Iterator[Path]:
        """Around a write of the run file `name` (yields its path): a full disk, in our atomic
        writes or in a library that writes the file itself, becomes a one-line DiskFullError
        naming the file and the free space and saying how the run continues (`hint`); the
        temp file of an atomic write is removed."""
        path = self.path(name)
        try:
            yield path
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            temp_path(path).unlink(missing_ok=True)
            free = free_bytes(path.parent)
            raise DiskFullError(
                f"no space left on the device of {path.parent} "
                f"({format_bytes(free) + ' free' if free is not None else 'free space unknown'})"
                f": could not write {name}, any previous {name} is unchanged"
                + ("; free some space, then continue the run with --resume" if hint else "")
            ) from exc

    def write_text(self, name: str, text: str, hint: bool = True) -> None:
        if self.is_main:
            with self.writing(name, hint) as path:
                atomic_write_text(path, text)

    def write_bytes(self, name: str, data: bytes | memoryview) -> None:
        if self.is_main:
            with self.writing(name) as path:
                atomic_write_bytes(path, data)

    def write_config(self, config: dict, environment: dict) -> None:
        """config.yaml: the resolved settings, then the environment they ran in."""
        if self.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            text = yaml.safe_dump({**config, "environment": environment}, sort_keys=False)
            self.write_text(CONFIG_FILE, text, hint=False)  # nothing to resume yet

    def write_metrics(self, rows: list[dict]) -> None:
        if self.is_main:
            from resnorm.metrics import write_metrics_csv  # torch: only where a run trains
            with self.writing(METRICS_FILE) as path:
                write_metrics_csv(rows, path)

    def write_predictions(self, splits: dict[str, dict]) -> None:
        """predictions.npz: per-image labels, predictions, probabilities (for the statistics)."""
        if self.is_main and splits:
            with self.writing(PREDICTIONS_FILE) as path:
                write_predictions(path, splits)

    def write_final(self, final: dict) -> None:
        """final.json (write it last: its presence marks the run finished)."""
        self.write_text(FINAL_FILE, to_json(final))

    def write_error(self, text: str) -> None:
        """error.txt: why the run failed (a study writes it; any process may)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path(ERROR_FILE), text)

    # --- reads ---------------------------------------------------------------------------

    def final(self) -> dict | None:
        """final.json, or None while the run has not finished (or the file is unreadable)."""
        try:
            final = json.loads(self.path(FINAL_FILE).read_text())
        except (OSError, ValueError):
            return None
        return final if isinstance(final, dict) else None

    def config(self) -> dict:
        """config.yaml as written ({} when there is none or it is unreadable)."""
        try:
            config = yaml.safe_load(self.path(CONFIG_FILE).read_text())
        except (OSError, yaml.YAMLError):
            return {}
        return config if isinstance(config, dict) else {}

    def metrics(self) -> list[dict]:
        """metrics.csv's rows (resnorm.metrics.read_metrics_csv), [] before the first epoch."""
        if not self.has(METRICS_FILE):
            return []
        from resnorm.metrics import read_metrics_csv  # torch: only where a run is read
        return read_metrics_csv(self.path(METRICS_FILE))

    def predictions(self) -> dict[str, dict[str, Any]] | None:
        """predictions.npz per split (resnorm.predictions.read_predictions), or None."""
        return read_predictions(self.path(PREDICTIONS_FILE))


def to_json(value: Any) -> str:
    """Indented JSON with lists of numbers kept on one line (a confusion row per line)."""
    text = json.dumps(value, indent=2)
    return re.sub(r"\[\s*([-+.\deE,\s]*?)\s*\]",
                  lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text) + "\n"
