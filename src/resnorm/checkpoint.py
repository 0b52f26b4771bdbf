"""The files of a run folder: checkpoints (atomic writes, safe loads, RNG state), config.yaml,
metrics.csv, final.json and curves.png.

A checkpoint is a plain dict of tensors and primitive containers (dicts, lists, str, int,
float, bool, None) — the config as a dict, RNG states as uint8 tensors — so it loads with
`torch.load(..., weights_only=True)`: opening a checkpoint can never run code.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
import yaml

from resnorm.errors import UsageError
from resnorm.fileio import atomic_write_text
from resnorm.metrics import write_metrics_csv

__all__ = ["RunFiles", "RUN_FILES", "save_checkpoint", "load_checkpoint", "rng_state",
           "set_rng_state", "atomic_write_text", "to_json"]

# What a run writes in its folder (besides TensorBoard's events.out.tfevents.* files).
RUN_FILES = ("config.yaml", "metrics.csv", "last.pt", "best.pt", "final.json", "curves.png")


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
            atomic_write_text(self.path("config.yaml"), text)

    def save(self, name: str, checkpoint: dict) -> None:
        if self.is_main:
            save_checkpoint(checkpoint, self.path(name))

    def write_metrics(self, history: list) -> None:
        if self.is_main:
            write_metrics_csv(history, self.path("metrics.csv"))

    def write_final(self, final: dict, history: list, title: str) -> None:
        """curves.png, then final.json (last: its presence marks the run finished)."""
        if self.is_main:
            from resnorm.plots import plot_run_curves  # matplotlib only when a run ends
            plot_run_curves(history, self.path("curves.png"), title=title)
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


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write `state` to `path` atomically: a temp file in the same folder, fsync, rename.

    A run killed mid-write leaves the previous checkpoint intact (plus at most a stray temp
    file, which the next save replaces).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
