"""Using a trained run: its model rebuilt from a checkpoint, its config, the data as it scored
it, on a device. Grad-CAM, the report and the predictions all load a run this one way."""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnorm.checkpoint import Checkpoint
from resnorm.model import ResNet
from resnorm.rundir import BEST_FILE, LAST_FILE, RunDir
from resnorm.train.config import config_from_dict
from resnorm.train.loop import predict_all
from resnorm.train.runtime import Runtime, load_data, make_stream, select_device

__all__ = ["LoadedRun", "load_run", "load_run_model"]


def load_run_model(run_dir: str | os.PathLike, which: str = "best",
                   map_location: Any = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model of a run from best.pt (or last.pt), in eval mode, with its config."""
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    name = {"best": BEST_FILE, "last": LAST_FILE}[which]
    checkpoint = Checkpoint.load(RunDir(run_dir).path(name), map_location)
    model = ResNet(**checkpoint.model_args)
    model.load_state_dict(checkpoint.model)
    model.eval()
    return model, dict(checkpoint.config)


@dataclass
class LoadedRun:
    """A trained run: `model` (eval mode, on `device`), its resolved `config` (a dict), and
    `data`, the prepared dataset as the run scored it (val/test without the images that have
    a copy in train unless it kept them), loaded on first use."""

    dir: Path
    model: nn.Module
    config: dict
    device: torch.device

    @cached_property
    def data(self):
        return load_data(config_from_dict(self.config), progress=False)

    @property
    def name(self) -> str:
        return self.config.get("name") or self.dir.name

    def predict(self, split: str = "val") -> dict:
        """Per-image "labels", "preds" and softmax "probs" (CPU tensors, split order) of the
        model on a split of `data`, as the run's own evaluation computes them (float32)."""
        cfg = config_from_dict(self.config)
        rt = Runtime(self.device, None, False)
        stream = make_stream(self.data, split, cfg, rt, training=False)
        return predict_all(self.model, stream, len(self.data.classes), rt)


def load_run(run_dir: str | os.PathLike, which: str = "best", device: str = "auto",
             data=None) -> LoadedRun:
    """The run in `run_dir` from its best.pt (or last.pt) on `device` (auto: a GPU if there is
    one); `data`, when the caller has it already, is used instead of loading it again."""
    model, config = load_run_model(run_dir, which)
    target = select_device(device)
    run = LoadedRun(Path(run_dir), model.to(target), config, target)
    if data is not None:
        run.data = data  # cached_property: an instance attribute takes its place
    return run
