"""The files of a run folder: checkpoints (what they hold, atomic writes, safe loads, RNG
state), config.yaml, metrics.csv, final.json and curves.png.

`Checkpoint` is the one place that knows what last.pt and best.pt hold. On disk a checkpoint
is a plain dict of tensors and primitive containers (dicts, lists, str, int, float, bool,
None) — the config as a dict, RNG states as uint8 tensors — so it loads with
`torch.load(..., weights_only=True)`: opening a checkpoint can never run code.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator

import torch
import yaml

from resnorm.errors import DiskFullError, UsageError
from resnorm.fileio import (atomic_write_bytes, atomic_write_text, format_bytes, free_bytes,
                            is_disk_full, temp_path)
from resnorm.metrics import write_metrics_csv
from resnorm.predictions import PREDICTIONS_FILE, write_predictions

__all__ = ["Checkpoint", "RunFiles", "RUN_FILES", "save_checkpoint", "load_checkpoint",
           "rng_state", "set_rng_state", "atomic_write_text", "to_json"]

# What a run writes in its folder (besides TensorBoard's events.out.tfevents.* files).
RUN_FILES = ("config.yaml", "metrics.csv", "last.pt", "best.pt", "final.json", "curves.png")


@dataclass
class Checkpoint:
    """What last.pt and best.pt hold: enough to rebuild the trained model (`config`,
    `model_args`, `classes`) and to continue training exactly where it stopped (the optimizer,
    the lr schedule, the fp16 loss scaler, the RNG states and the run's progress `state`)."""

    FORMAT = "resnorm-run"
    VERSION = 1

    config: dict        # the resolved TrainConfig, as a dict
    model_args: dict    # resnorm.model.ResNet(**model_args)
    classes: list       # class names, in label order
    distributed: dict   # config.yaml's `distributed:` record (world size, batch per rank)
    model: dict         # the state dicts of the model, optimizer, schedule and scaler
    optimizer: dict
    scheduler: dict
    scaler: dict
    rng: dict           # rng_state()
    state: dict         # the run's progress (resnorm.train.run.RunState as a dict)

    @classmethod
    def capture(cls, *, model, optimizer, scheduler, scaler, **record: Any) -> "Checkpoint":
        """The current state of a run's training objects, with `record`'s fields (config,
        model_args, classes, distributed, state)."""
        return cls(model=model.state_dict(), optimizer=optimizer.state_dict(),
                   scheduler=scheduler.state_dict(), scaler=scaler.state_dict(),
                   rng=rng_state(), **record)

    def restore(self, model, optimizer, scheduler, scaler) -> None:
        """Load the saved state into a run's training objects and the global RNGs (the run
        state is the caller's)."""
        model.load_state_dict(self.model)
        optimizer.load_state_dict(self.optimizer)
        scheduler.load_state_dict(self.scheduler)
        # amp may change on resume (RESUMABLE_CHANGES): a checkpoint saved without fp16 has
        # an empty scaler state, which an fp16 run's scaler refuses; it starts a fresh scale.
        if self.scaler or not scaler.is_enabled():
            scaler.load_state_dict(self.scaler)
        set_rng_state(self.rng)

    def to_dict(self) -> dict:
        return {"format": self.FORMAT, "version": self.VERSION,
                **{f.name: getattr(self, f.name) for f in fields(self)}}

    @classmethod
    def from_dict(cls, saved: dict, source: str = "checkpoint") -> "Checkpoint":
        if not isinstance(saved, dict) or saved.get("format") != cls.FORMAT:
            raise UsageError(f"{source} is not a resnorm run checkpoint")
        missing = [f.name for f in fields(cls) if f.name not in saved]
        if missing:
            raise UsageError(f"{source} lacks {', '.join(missing)} (written by another "
                             f"resnorm version?)")
        return cls(**{f.name: saved[f.name] for f in fields(cls)})

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: Any = "cpu") -> "Checkpoint":
        return cls.from_dict(load_checkpoint(path, map_location), str(path))


class RunFiles:
    """The files of one run folder. Only the main process writes (under DDP: rank 0)."""

    def __init__(self, run_dir: Path, is_main: bool = True) -> None:
        self.dir, self.is_main = Path(run_dir), is_main

    def path(self, name: str) -> Path:
        return self.dir / name

    def clear(self) -> None:
        """Remove what an earlier run left here: only the run's own files, nothing else."""
        if not self.is_main or not self.dir.is_dir():
            return
        for name in RUN_FILES:
            self.path(name).unlink(missing_ok=True)
        for events in self.dir.glob("events.out.tfevents.*"):
            events.unlink()

    def write_config(self, config: dict, environment: dict) -> None:
        """config.yaml: the resolved settings, then the environment they ran in."""
        if self.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            text = yaml.safe_dump({**config, "environment": environment}, sort_keys=False)
            with _run_write(self.path("config.yaml"), hint=False):  # nothing to resume yet
                atomic_write_text(self.path("config.yaml"), text)

    def save(self, name: str, checkpoint: "Checkpoint | dict") -> None:
        """Write a checkpoint; on a full disk the previous one is kept and the error says how
        to continue."""
        if self.is_main:
            if isinstance(checkpoint, Checkpoint):
                checkpoint = checkpoint.to_dict()
            with _run_write(self.path(name)):
                save_checkpoint(checkpoint, self.path(name))

    def write_metrics(self, history: list) -> None:
        if self.is_main:
            path = self.path("metrics.csv")
            with _run_write(path):
                write_metrics_csv(history, path)

    def write_predictions(self, splits: dict[str, dict]) -> None:
        """predictions.npz: per-image labels, predictions, probabilities (for the statistics)."""
        if self.is_main and splits:
            with _run_write(self.path(PREDICTIONS_FILE)):
                write_predictions(self.dir, splits)

    def write_final(self, final: dict, history: list, title: str) -> None:
        """curves.png, then final.json (last: its presence marks the run finished)."""
        if self.is_main:
            from resnorm.plots import plot_run_curves  # matplotlib only when a run ends
            with _run_write(self.path("curves.png")):
                plot_run_curves(history, self.path("curves.png"), title=title)
            with _run_write(self.path("final.json")):
                atomic_write_text(self.path("final.json"), to_json(final))

    def read_final(self) -> dict | None:
        try:
            return json.loads(self.path("final.json").read_text())
        except (OSError, ValueError):
            return None


def to_json(value: Any) -> str:
    """Indented JSON with lists of numbers kept on one line (a confusion row per line)."""
    text = json.dumps(value, indent=2)
    return re.sub(r"\[\s*([-+.\deE,\s]*?)\s*\]",
                  lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text) + "\n"


@contextlib.contextmanager
def _run_write(path: Path, hint: bool = True) -> Iterator[None]:
    """Around a write of a run file: a full disk (in our atomic writes or in a library that
    writes `path` itself) becomes a one-line `DiskFullError` that names the file and the free
    space and says how the run continues; the temp file `fileio.temp_path(path)` is removed.
    """
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        temp_path(path).unlink(missing_ok=True)
        free = free_bytes(path.parent)
        raise DiskFullError(
            f"no space left on the device of {path.parent} "
            f"({format_bytes(free) + ' free' if free is not None else 'free space unknown'}): "
            f"could not write {path.name}, any previous {path.name} is unchanged"
            + ("; free some space, then continue the run with --resume" if hint else "")
        ) from exc


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write `state` to `path` atomically: a temp file in the same folder, fsync, rename.

    The state is serialized in memory first (checkpoints here are a few MB), so a full disk
    shows up as a plain OSError ENOSPC from the write (not as an error inside torch's zip
    writer), the temp file is removed and the previous checkpoint is intact; `RunFiles.save`
    turns it into a one-line `DiskFullError`. A run killed mid-write leaves the previous
    checkpoint intact too (plus at most a stray temp file, which the next save replaces).
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint written by `save_checkpoint` (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a torn or foreign file: say which file, not a pickle traceback
        raise UsageError(f"cannot read checkpoint {path}: {exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc


def rng_state() -> dict:
    """The global torch RNG states (CPU and every CUDA device) as uint8 tensors."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` captured (CUDA states only where the device count matches)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
