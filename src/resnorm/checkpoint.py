"""Checkpoints: what last.pt and best.pt hold, their atomic writes, safe loads and RNG state.
(The rest of a run folder: resnorm.rundir.)

`Checkpoint` is the one place that knows what last.pt and best.pt hold. On disk a checkpoint
is a plain dict of tensors and primitive containers (dicts, lists, str, int, float, bool,
None) — the config as a dict, RNG states as uint8 tensors — so it loads with
`torch.load(..., weights_only=True)`: opening a checkpoint can never run code.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from resnorm.errors import UsageError
from resnorm.fileio import atomic_write_bytes
from resnorm.rundir import RunDir

__all__ = ["Checkpoint", "write_checkpoint", "save_checkpoint", "load_checkpoint",
           "rng_state", "set_rng_state"]


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


def write_checkpoint(run: RunDir, name: str, checkpoint: "Checkpoint | dict") -> None:
    """Write a checkpoint into the run folder (main process only); on a full disk the previous
    one is kept and the one-line error says how to continue (`RunDir.writing`)."""
    if run.is_main:
        if isinstance(checkpoint, Checkpoint):
            checkpoint = checkpoint.to_dict()
        with run.writing(name) as path:
            save_checkpoint(checkpoint, path)


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write `state` to `path` atomically: a temp file in the same folder, fsync, rename.

    The state is serialized in memory first (checkpoints here are a few MB), so a full disk
    shows up as a plain OSError ENOSPC from the write (not as an error inside torch's zip
    writer), the temp file is removed and the previous checkpoint is intact; `write_checkpoint`
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
