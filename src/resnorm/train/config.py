"""The settings of a training run: TrainConfig, the recipes, and resolving and checking a config.

Recipes (`--recipe`) fill in whatever optimizer settings are not given explicitly:

    default  SGD, momentum 0.9, Nesterov, weight decay 5e-4, lr 0.1 x batch_size / 128
             (0.025 at batch 32, 0.1 at 128), 1 epoch linear warm-up then cosine decay to 0,
             random-crop + flip augmentation. With --optimizer adam|adamw: lr 1e-3 and weight
             decay 0 (adam) or 0.05 (adamw, decoupled).
    literal  The assignment's recipe as written: SGD with initial lr 1e-4 (momentum 0.9, no
             Nesterov, no weight decay), cosine decay, no warm-up, no augmentation.

Why the default: the literal recipe is far too slow for 50 epochs (public solutions report
~25-30 % val accuracy with it, ~80 % with SGD 0.1 + cosine + augmentation). The default is
He et al.'s CIFAR ResNet recipe (SGD, momentum 0.9, lr 0.1 at batch 128) with what later
CIFAR ResNets use (Nesterov, weight decay 5e-4, cosine decay, crop + flip), a one-epoch
warm-up so the variants without batch statistics (NN, IN, LN) survive the first steps, and
the learning rate scaled linearly with the batch size (Goyal et al. 2017) - the rule the GN
paper uses for its batch-size study, so the batch 8 / 128 comparison changes one thing only.

Under torchrun `batch_size` is per process; the global batch is batch_size x N, and the
default recipe's lr follows the global batch.

A config that differs from a run's only in RESUMABLE_CHANGES (data/cache paths, device, amp,
channels_last, compile, compile_mode, eval batch size) may resume it (resnorm.train.run).
"""
from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from resnorm.distributed import launched_world_size
from resnorm.errors import UsageError
from resnorm.model import STAGE_WIDTHS
from resnorm.train.lr_rule import DEFAULT_RECIPE_LR, DEFAULT_RECIPE_RULE
from resnorm.norms import get_norm, norm_factory

@dataclass
class TrainConfig:
    """Every setting of a run, with its default. None means "from the recipe" (or the data)."""

    data: str | None = None          # dataset root (train/ valid/ [test/]) or a prepared cache
    cache: str | None = None         # cache folder; None: $RESNORM_CACHE or ~/.cache/resnorm
    size: int = 256                  # image side the data is prepared at
    resize: str = "squash"           # squash | crop
    out: str | None = None           # the run folder (required)
    name: str | None = None          # display name; default: the run folder's name
    norm: str = "torch_bn"           # torch_bn bn in bin ln gn[:G] nn
    n: int = 2                       # blocks per stage: 6n+2 layers
    shortcut: str = "A"              # A (parameter-free, 6n+2 layers) | B (1x1 projection)
    batch_size: int = 32             # per process: under torchrun the global batch is x world size
    epochs: int = 50
    recipe: str = "default"          # default | literal: presets for the None fields below
    optimizer: str | None = None     # sgd | adam | adamw
    lr: float | None = None          # base learning rate (peak, after warm-up)
    momentum: float | None = None    # SGD only
    nesterov: bool | None = None     # SGD only
    weight_decay: float | None = None
    schedule: str | None = None      # cosine | step (x0.1 at 50% and 75%) | constant
    warmup_epochs: float | None = None  # linear warm-up from ~0 to lr, per step
    gate_lr_mult: float = 10.0       # BIN gates: lr multiplier (no weight decay)
    augment: bool | None = None      # random crop (pad S/8, reflect) + horizontal flip
    patience: int = 0                # early stopping on val accuracy; 0 = off
    min_delta: float = 0.0           # improvement in val accuracy that resets patience
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda | mps
    amp: str = "auto"                # auto (CUDA: bf16 if native, else fp16) | bf16 | fp16 | off
    channels_last: str = "auto"      # auto (on for CUDA) | on | off
    compile: bool = False            # torch.compile the model
    compile_mode: str = "default"    # torch.compile mode: default | reduce-overhead | max-autotune
    eval_batch_size: int = 256
    num_classes: int | None = None   # None: from the data (a disagreeing value is an error)
    sync_bn: bool = False            # under torchrun: bn/bin/torch_bn statistics over all ranks
    keep_leaked: bool = False        # score val/test images that have a copy in train (inflated)
    eval_test: bool = True           # score test at the end (false: an lr-tuning trial, which
                                     # must choose without test)


FIELD_NAMES = tuple(f.name for f in fields(TrainConfig))
FIELD_TYPES = typing.get_type_hints(TrainConfig)
CHOICES = {
    "resize": ("squash", "crop"),
    "shortcut": ("A", "B"),
    "recipe": ("default", "literal"),
    "optimizer": ("sgd", "adam", "adamw"),
    "schedule": ("cosine", "step", "constant"),
    "device": ("auto", "cpu", "cuda", "mps"),
    "amp": ("auto", "bf16", "fp16", "off"),
    "channels_last": ("auto", "on", "off"),
    "compile_mode": ("default", "reduce-overhead", "max-autotune"),
}
# Settings that may change when a run is resumed: where things are and how fast they run.
# Everything else must match the run being resumed.
RESUMABLE_CHANGES = frozenset({"data", "cache", "out", "name", "device", "amp", "channels_last",
                               "compile", "compile_mode", "eval_batch_size"})
# What config.yaml records besides the settings (read back as settings, they are ignored).
RECORD_KEYS = ("environment", "distributed")

RECIPES: dict[str, dict[str, Any]] = {
    "default": dict(optimizer="sgd", momentum=0.9, nesterov=True, weight_decay=5e-4,
                    schedule="cosine", warmup_epochs=1.0, augment=True),
    "literal": dict(optimizer="sgd", lr=1e-4, momentum=0.9, nesterov=False, weight_decay=0.0,
                    schedule="cosine", warmup_epochs=0.0, augment=False),
}
# The default recipe's lr and weight decay per adaptive optimizer (SGD: DEFAULT_RECIPE_LR,
# scaled with the batch size by DEFAULT_RECIPE_RULE, resnorm.train.lr_rule).
ADAPTIVE_DEFAULTS = {"adam": dict(lr=1e-3, weight_decay=0.0),
                     "adamw": dict(lr=1e-3, weight_decay=0.05)}


def config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """A TrainConfig from a mapping (a YAML file, a plan entry); unknown keys are an error.

    Keys may use '-' for '_'. The `environment` and `distributed` records of a run's
    config.yaml are ignored, so a run's config.yaml can be fed back with --config.
    """
    kwargs = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name in RECORD_KEYS:
            continue
        if name not in FIELD_NAMES:
            raise UsageError(f"unknown setting {key!r}; valid settings: {', '.join(FIELD_NAMES)}")
        kwargs[name] = _coerce(name, value)
    return TrainConfig(**kwargs)


def _coerce(name: str, value: Any) -> Any:
    """Check (and widen int -> float) a value against the field's declared type."""
    kind = FIELD_TYPES[name]
    optional = type(None) in typing.get_args(kind)
    base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
    if value is None:
        if optional:
            return None
        raise UsageError(f"{name} cannot be empty")
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base is bool and isinstance(value, bool):
        return value
    if base is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise UsageError(f"{name} must be {base.__name__}, got {value!r}")


def load_config_file(path: str | os.PathLike) -> dict:
    """The settings in a YAML file (a mapping of TrainConfig fields)."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UsageError(f"{path} must hold a mapping of settings, got {type(values).__name__}")
    values = {str(k).replace("-", "_"): v for k, v in values.items()}
    config_from_dict(values)  # check names and types now, while the file is at hand
    return values


def resolve_config(cfg: TrainConfig | Mapping[str, Any], *,
                   world_size: int | None = None) -> TrainConfig:
    """Fill the recipe's presets into the unset fields and check every value.

    Raises UsageError with one line naming the problem. Needs no data: `num_classes` stays as
    given (it is checked against the dataset when the data is loaded). `world_size` is the
    number of processes sharing each step (default: torchrun's WORLD_SIZE, else 1): the
    default recipe scales its lr with the global batch, batch_size x world_size.
    """
    world_size = launched_world_size() if world_size is None else world_size
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not isinstance(cfg, TrainConfig):
        cfg = config_from_dict(cfg)
    for name in FIELD_NAMES:  # catches wrong types set in Python, not only from YAML
        _coerce(name, getattr(cfg, name))
    for name, options in CHOICES.items():
        value = getattr(cfg, name)
        if value is not None and value not in options:
            raise UsageError(f"{name} must be one of {', '.join(options)}, got {value!r}")
    if not cfg.data:
        raise UsageError("no dataset: set --data (a dataset folder or a prepared cache)")
    if not cfg.out:
        raise UsageError("no run folder: set --out")
    if cfg.name is None:
        cfg = dataclasses.replace(cfg, name=Path(cfg.out).expanduser().resolve().name)
    _check_model_settings(cfg, world_size)
    return _check_optimizer_settings(_fill_recipe(cfg, world_size))


def _check_model_settings(cfg: TrainConfig, world_size: int = 1) -> None:
    if cfg.size < 8 or cfg.size % 4:
        raise UsageError(f"size must be >= 8 and divisible by 4, got {cfg.size}")
    if cfg.n < 1:
        raise UsageError(f"n must be >= 1, got {cfg.n}")
    try:
        factory = norm_factory(cfg.norm)
        for width in STAGE_WIDTHS:  # e.g. gn:5 does not divide 16 channels
            factory(width)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if cfg.batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {cfg.batch_size}")
    # The batch BN statistics are taken over: this rank's, or every rank's with sync_bn.
    stats_batch = cfg.batch_size * (world_size if cfg.sync_bn else 1)
    kind = get_norm(cfg.norm)
    if stats_batch < 2 and kind.batch_stats:
        raise UsageError(f"norm {cfg.norm!r} computes batch statistics; batch_size must be >= 2")
    if cfg.sync_bn and kind.batch_stats and kind.sync is None:
        raise UsageError(f"sync_bn: norm {cfg.norm!r} computes batch statistics it cannot sync "
                         "across processes")
    if cfg.sync_bn and kind.sync == "torch" and device_type(cfg.device) != "cuda":
        raise UsageError(f"sync_bn with norm {kind.name} needs CUDA (PyTorch's SyncBatchNorm "
                         "refuses CPU tensors); use norm bn, whose sync works on every device")
    if cfg.eval_batch_size < 1:
        raise UsageError(f"eval_batch_size must be >= 1, got {cfg.eval_batch_size}")
    if cfg.epochs < 1:
        raise UsageError(f"epochs must be >= 1, got {cfg.epochs}")
    if cfg.num_classes is not None and cfg.num_classes < 2:
        raise UsageError(f"num_classes must be >= 2, got {cfg.num_classes}")
    if cfg.patience < 0:
        raise UsageError(f"patience must be >= 0 (0 = no early stopping), got {cfg.patience}")
    if not cfg.min_delta >= 0:
        raise UsageError(f"min_delta must be >= 0, got {cfg.min_delta}")


def _fill_recipe(cfg: TrainConfig, world_size: int = 1) -> TrainConfig:
    preset = dict(RECIPES[cfg.recipe])
    optimizer = cfg.optimizer or preset["optimizer"]
    if cfg.recipe == "default":
        if optimizer == "sgd":  # DDP averages gradients: the step is the global batch's
            preset["lr"] = DEFAULT_RECIPE_RULE.scale(DEFAULT_RECIPE_LR,
                                                     cfg.batch_size * world_size)
        else:
            preset.update(ADAPTIVE_DEFAULTS[optimizer])
    if optimizer != "sgd":  # momentum and Nesterov are SGD settings
        for name in ("momentum", "nesterov"):
            if getattr(cfg, name) is not None:
                raise UsageError(f"{name} applies to the sgd optimizer only, not {optimizer}")
            preset[name] = None
    if cfg.warmup_epochs is None:  # a preset warm-up never takes the whole run
        preset["warmup_epochs"] = min(preset["warmup_epochs"], float(cfg.epochs - 1))
    filled = {name: preset[name] for name in preset if getattr(cfg, name) is None}
    return dataclasses.replace(cfg, **filled)


def _check_optimizer_settings(cfg: TrainConfig) -> TrainConfig:
    if not cfg.lr > 0 or not math.isfinite(cfg.lr):
        raise UsageError(f"lr must be > 0, got {cfg.lr}")
    if cfg.momentum is not None and not 0 <= cfg.momentum < 1:
        raise UsageError(f"momentum must be in [0, 1), got {cfg.momentum}")
    if cfg.nesterov and not cfg.momentum:
        raise UsageError("nesterov needs momentum > 0")
    if not cfg.weight_decay >= 0:
        raise UsageError(f"weight_decay must be >= 0, got {cfg.weight_decay}")
    if not 0 <= cfg.warmup_epochs < cfg.epochs:
        raise UsageError(f"warmup_epochs must be >= 0 and less than epochs ({cfg.epochs}), "
                         f"got {cfg.warmup_epochs}")
    if not cfg.gate_lr_mult > 0:
        raise UsageError(f"gate_lr_mult must be > 0, got {cfg.gate_lr_mult}")
    return cfg



# --- the device a config names ---------------------------------------------------------------
# Here rather than in runtime.py: checking a config needs it (sync_bn + torch_bn needs CUDA),
# and runtime.py builds on this module.

def device_type(name: str) -> str:
    """auto: cuda, else mps, else cpu (without selecting a GPU). Asking for a missing
    accelerator is a usage error."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device cuda requested but CUDA is not available")
    if name == "mps" and not has_mps:
        raise UsageError("device mps requested but MPS is not available")
    return name
