"""Train one model variant: a 6n+2-layer ResNet with one normalization, on a prepared dataset.

    resnorm train --data data/synth --norm gn --n 2 --epochs 50 --out runs/gn
    resnorm train --config run.yaml --lr 0.05          # flags override the file
    resnorm train --data data/birds --recipe literal --out runs/literal

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

Parameter groups: conv and linear weights get weight decay; biases and norm weights/biases
do not (the usual practice: decaying a norm's scale only fights the normalisation); BIN gates
(rho) get no weight decay and lr x gate_lr_mult (10, as in Nam & Kim) and are clamped to [0,1]
after every optimizer step. The schedule is applied per step.

A run folder holds config.yaml (fully resolved, with versions, device and git commit),
metrics.csv (one row per epoch), TensorBoard events, last.pt (every epoch), best.pt (best val
accuracy), final.json (the best checkpoint evaluated in eval mode on train, val and test) and
curves.png. Checkpoints hold only tensors and plain containers and load with
weights_only=True.

Resume: running the same command again continues from last.pt exactly (same metrics.csv as an
uninterrupted run, on CPU); a finished run is left alone and says so. `--resume` insists on a
checkpoint, `--restart` deletes the run's files and starts over. A config that differs from
the run's (other than data/cache paths, device, amp, channels_last, compile, compile_mode,
eval batch size) is refused.

Compilation: `--compile` wraps the model in torch.compile(model, mode=--compile-mode).
"default" compiles with Inductor; "reduce-overhead" also records CUDA graphs, which replay a
whole step's kernels with one launch: that helps the launch-bound small-batch runs (batch 8)
on a GPU and does nothing on a CPU; "max-autotune" searches kernel configurations (long first
epoch). The mode changes speed, not results' meaning, so a run may resume with another one.

Several processes (torchrun; docs/distributed.md): `torchrun --nproc_per_node=N -m resnorm
train ...` trains with DistributedDataParallel (nccl on CUDA, one GPU per process; gloo on
CPU). `batch_size` is per process; the global batch is batch_size x N, and the default
recipe's lr follows the global batch. Each rank trains on a disjoint share of every epoch's
shuffled order and evaluates a disjoint block of each split; losses and confusion counts are
summed over ranks, so metrics.csv and final.json describe each image exactly once. Without
`--sync-bn` each rank's BN normalizes by its own batch of batch_size images (as on N separate
GPUs); with it, bn/bin (and torch_bn, on CUDA) use statistics over the global batch, so the
run computes what one process with the global batch computes. Rank 0 writes every file and
prints; the run folder must be visible to every rank (the others read best.pt and last.pt).
config.yaml records `distributed:` world_size, batch_size_per_rank, global_batch_size and
bn_statistics (per_rank, global, or none for norms without batch statistics). A run resumes
only with the world size it was started with.

Exit codes: 0 done, 2 invalid settings (one line), 3 diverged (non-finite training loss:
final.json says "diverged" with the epoch and step).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import time
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from resnorm import __version__
from resnorm.checkpoint import RUN_FILES, RunFiles, load_checkpoint, rng_state, set_rng_state
from resnorm.cpu_memory import keep_freed_memory
from resnorm.data import BatchStream, load_cache, prepare
from resnorm.data.cache import read_manifest
from resnorm.distributed import (DistInfo, all_reduce_min, barrier, broadcast_buffers_,
                                 contiguous_shard, in_turn, init_from_env, is_distributed,
                                 is_main_process, launched_world_size)
from resnorm.errors import DivergedError, UsageError
from resnorm.metrics import EpochMeter, read_metrics_csv
from resnorm.model import STAGE_WIDTHS, ResNet, count_parameters
from resnorm.norms import clamp_gates_, enable_sync_, gate_parameters, norm_factory

__all__ = ["TrainConfig", "train", "resolve_config", "config_from_dict", "load_config_file",
           "build_optimizer", "build_scheduler", "lr_factor", "evaluate", "load_run_model",
           "read_history", "configure_parser", "config_from_args", "run_cli", "RECIPES",
           "RESUMABLE_CHANGES", "RUN_FILES"]


# --- configuration ---------------------------------------------------------------------------

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
    amp: str = "auto"                # auto (bf16 on CUDA, else off) | bf16 | fp16 | off
    channels_last: str = "auto"      # auto (on for CUDA) | on | off
    compile: bool = False            # torch.compile the model
    compile_mode: str = "default"    # torch.compile mode: default | reduce-overhead | max-autotune
    eval_batch_size: int = 256
    num_classes: int | None = None   # None: from the data (a disagreeing value is an error)
    sync_bn: bool = False            # under torchrun: bn/bin/torch_bn statistics over all ranks


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
# Norms that compute batch statistics in training: a batch of one is meaningless for them.
BATCH_STAT_NORMS = ("torch_bn", "bn", "bin")
# What config.yaml records besides the settings (read back as settings, they are ignored).
RECORD_KEYS = ("environment", "distributed")

RECIPES: dict[str, dict[str, Any]] = {
    "default": dict(optimizer="sgd", momentum=0.9, nesterov=True, weight_decay=5e-4,
                    schedule="cosine", warmup_epochs=1.0, augment=True),
    "literal": dict(optimizer="sgd", lr=1e-4, momentum=0.9, nesterov=False, weight_decay=0.0,
                    schedule="cosine", warmup_epochs=0.0, augment=False),
}
# The default recipe's lr and weight decay per optimizer (SGD: lr scaled with the batch size).
DEFAULT_LR_PER_128 = 0.1
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
    if stats_batch < 2 and cfg.norm.split(":")[0].lower() in BATCH_STAT_NORMS:
        raise UsageError(f"norm {cfg.norm!r} computes batch statistics; batch_size must be >= 2")
    if cfg.sync_bn and cfg.norm.split(":")[0].lower() == "torch_bn" and \
            device_type(cfg.device) != "cuda":
        raise UsageError("sync_bn with norm torch_bn needs CUDA (PyTorch's SyncBatchNorm refuses "
                         "CPU tensors); use norm bn, whose sync works on every device")
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
            preset["lr"] = DEFAULT_LR_PER_128 * cfg.batch_size * world_size / 128
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


# --- building blocks -------------------------------------------------------------------------

def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer over three parameter groups (see the module docstring).

    Each group carries `lr_mult`; the schedule scales `lr * lr_mult`.
    """
    gates = {id(p) for p in gate_parameters(model)}
    decay, no_decay, gate = [], [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in gates:
            gate.append(p)
        elif p.ndim >= 2:  # conv and linear weights
            decay.append(p)
        else:  # biases, norm weights and biases
            no_decay.append(p)
    groups = [
        dict(name="weights", params=decay, weight_decay=cfg.weight_decay, lr_mult=1.0),
        dict(name="biases_and_norms", params=no_decay, weight_decay=0.0, lr_mult=1.0),
        dict(name="bin_gates", params=gate, weight_decay=0.0, lr_mult=cfg.gate_lr_mult),
    ]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["lr"] = cfg.lr * g["lr_mult"]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base lr for optimizer step `step` (0-based)."""
    if step < warmup_steps:  # linear warm-up: the first step already takes a small step
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    if schedule == "step":  # He et al.: divide by 10 at 50% and 75% of training
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR following `lr_factor` (its state is plain numbers)."""
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        return lr_factor(step, total, warmup, cfg.schedule)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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


def select_device(name: str) -> torch.device:
    """The device `device_type(name)` names; for CUDA the current GPU (under torchrun
    `init_from_env` has made it the process's LOCAL_RANK)."""
    name = device_type(name)
    # With an index ("cuda:0", not "cuda"): it compares equal to the device of a tensor on it.
    if name == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name, 0) if name == "mps" else torch.device(name)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: full float32)."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if amp == "fp16" and device.type != "cuda":
        raise UsageError("amp fp16 needs a CUDA device (use bf16 or off)")
    if amp == "bf16" and device.type == "mps":
        raise UsageError("amp bf16 is not supported on mps (use off)")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]


@dataclass(frozen=True)
class Runtime:
    """Where a run computes and in what numerics."""

    device: torch.device
    amp: torch.dtype | None          # autocast dtype; None: plain float32
    channels_last: bool
    keeps_freed_memory: bool = False  # CPU: malloc keeps freed memory (resnorm.cpu_memory)

    @classmethod
    def for_config(cls, cfg: TrainConfig) -> "Runtime":
        device = select_device(cfg.device)
        channels_last = cfg.channels_last == "on" or (cfg.channels_last == "auto"
                                                      and device.type == "cuda")
        if device.type == "cuda":  # speed over bit-exactness on GPUs (determinism: CPU only)
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        kept = device.type == "cpu" and keep_freed_memory()
        return cls(device, resolve_amp(cfg.amp, device), channels_last, kept)

    def autocast(self):
        """A fresh autocast context (a no-op without amp)."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)


def load_data(cfg: TrainConfig, progress: bool):
    """The prepared dataset: `cfg.data` is a cache folder, or a dataset prepared on the fly."""
    root = Path(cfg.data).expanduser()
    if not root.exists():
        raise UsageError(f"data folder {root} does not exist")
    if read_manifest(root) is not None:
        data = load_cache(root)
    else:
        data = load_cache(prepare(root, size=cfg.size, out=cfg.cache, resize=cfg.resize,
                                  progress=progress))
    if data.size != cfg.size:
        raise UsageError(f"the cache at {data.path} holds {data.size}px images, not {cfg.size}px "
                         f"(set --size {data.size} or point --data at the dataset)")
    cached_resize = data.manifest.get("params", {}).get("resize", cfg.resize)
    if cached_resize != cfg.resize:
        raise UsageError(f"the cache at {data.path} was resized with {cached_resize!r}, not "
                         f"{cfg.resize!r} (set --resize {cached_resize})")
    if cfg.num_classes is not None and cfg.num_classes != len(data.classes):
        raise UsageError(f"num_classes is {cfg.num_classes} but the dataset has "
                         f"{len(data.classes)} classes")
    if "valid" not in data.splits:
        raise UsageError(f"the dataset at {data.root} has no valid/ split")
    return data


def sync_batch_norms(model: nn.Module) -> nn.Module:
    """The model with BN statistics over every rank's batch: our bn/bin layers switched to
    sync in place, PyTorch's BatchNorm2d (torch_bn) converted to nn.SyncBatchNorm, which works
    on CUDA only (resolve_config refuses torch_bn + sync_bn elsewhere). Parameters and
    buffers are kept, so checkpoints load into the plain model."""
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the same model without torch_bn
    enable_sync_(model)
    return model


def distributed_record(cfg: TrainConfig, info: DistInfo) -> dict:
    """config.yaml's `distributed:` mapping: how many processes shared each step, the batch
    per process and per step, and which batch the BN statistics were taken over."""
    if cfg.norm.split(":")[0].lower() not in BATCH_STAT_NORMS:
        statistics = "none"      # per-sample statistics (in, ln, gn) or no norm
    elif cfg.sync_bn or info.world_size == 1:
        statistics = "global"    # over the global batch of the step
    else:
        statistics = "per_rank"  # each rank over its own batch_size images
    return {"world_size": info.world_size, "batch_size_per_rank": cfg.batch_size,
            "global_batch_size": cfg.batch_size * info.world_size,
            "bn_statistics": statistics, "backend": info.backend}


def make_stream(data, split: str, cfg: TrainConfig, rt: Runtime, training: bool,
                info: DistInfo = DistInfo()) -> BatchStream:
    """Batches of one split on the device, for this rank.

    Training: shuffled, augmented if the config says so, trailing partial batch dropped; order
    and augmentation depend only on (seed, epoch, rank); each rank takes a disjoint share of
    the epoch's order (the global batch of a step is the single-process batch of
    batch_size x world_size images at that step, as a set).
    Evaluation: every image once, in order, no augmentation; each rank evaluates one
    contiguous block of the split, unpadded, so the metrics summed over ranks count every
    image exactly once (BatchStream would pad evaluation by wrapping around).
    """
    split_data = data.splits[split]
    images, labels = split_data.images, split_data.labels
    if training:
        return BatchStream(images, labels, cfg.batch_size, device=rt.device, mean=data.mean,
                           std=data.std, shuffle=True, augment=cfg.augment, seed=cfg.seed,
                           drop_last=True, rank=info.rank, world_size=info.world_size,
                           channels_last=rt.channels_last)
    start, stop = contiguous_shard(len(labels), info.rank, info.world_size)
    return BatchStream(images[start:stop], labels[start:stop], cfg.eval_batch_size,
                       device=rt.device, mean=data.mean, std=data.std, shuffle=False,
                       augment=False, seed=cfg.seed, drop_last=False,
                       channels_last=rt.channels_last)


# --- progress display ------------------------------------------------------------------------

class Progress:
    """Per-epoch progress: a tqdm bar (loss, acc, img/s) on a terminal, else plain lines.

    `wants(step)` says when to read numbers back from the device: every `every` steps for the
    bar, at 25/50/75 % of the epoch for plain lines; between those, nothing is synchronised.
    """

    def __init__(self, enabled: bool, epochs: int, every: int) -> None:
        self.enabled, self.epochs, self.every = enabled, epochs, every
        self.tty = enabled and sys.stderr.isatty()
        self.bar = None

    def start(self, epoch: int, steps: int) -> None:
        self.epoch, self.steps = epoch, steps
        self.marks = {math.ceil(steps * q / 4) for q in (1, 2, 3)} - {steps}
        if self.tty:
            self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{self.epochs}", unit="step",
                            leave=False, dynamic_ncols=True, file=sys.stderr)

    def wants(self, step: int) -> bool:
        if not self.enabled:
            return False
        if self.tty:
            return step % self.every == 0 or step == self.steps
        return step in self.marks

    def update(self, step: int, loss: float, acc: float, images_per_s: float) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.4f}",
                                 img_s=f"{images_per_s:.0f}", refresh=False)
        elif self.enabled:
            log(f"epoch {self.epoch}/{self.epochs} step {step}/{self.steps} loss {loss:.4f} "
                f"acc {acc:.4f} {images_per_s:.0f} img/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def log(message: str) -> None:
    """A line on stderr (through tqdm, so an active bar is not broken)."""
    tqdm.write(message, file=sys.stderr)
    sys.stderr.flush()


# --- run state and files ---------------------------------------------------------------------

@dataclass
class RunState:
    """Where a run is: what a resume needs besides the model, optimizer and schedule."""

    epoch: int = 0                   # epochs completed
    step: int = 0                    # optimizer steps taken
    history: list = field(default_factory=list)  # metrics.csv rows
    best_acc: float = -1.0           # best val accuracy so far
    best_epoch: int | None = None
    bad_epochs: int = 0              # epochs since the last improvement (early stopping)
    status: str = "running"          # running | completed | early_stopped
    elapsed_s: float = 0.0           # training wall time over all sessions

    def record(self, row: dict, cfg: TrainConfig) -> bool:
        """Add an epoch's row; update best and early stopping. True if val accuracy improved."""
        self.history.append(row)
        self.epoch = row["epoch"]
        improved = row["val_acc"] > self.best_acc + cfg.min_delta or self.best_epoch is None
        if improved:
            self.best_acc, self.best_epoch, self.bad_epochs = row["val_acc"], self.epoch, 0
        else:
            self.bad_epochs += 1
        if self.epoch >= cfg.epochs:
            self.status = "completed"
        elif cfg.patience and self.bad_epochs >= cfg.patience:
            self.status = "early_stopped"
        return improved


class NonFiniteLoss(Exception):
    def __init__(self, epoch: int, step: int, global_step: int) -> None:
        super().__init__(f"non-finite loss at epoch {epoch}, step {step}")
        self.where = {"epoch": epoch, "step": step, "global_step": global_step}


def _mismatches(cfg: TrainConfig, saved: Mapping[str, Any]) -> list[str]:
    """Settings of `cfg` that differ from a saved run's config (ignoring RESUMABLE_CHANGES)."""
    out = []
    for name in FIELD_NAMES:
        if name in RESUMABLE_CHANGES or (name == "num_classes" and cfg.num_classes is None):
            continue
        if name in saved and saved[name] != getattr(cfg, name):
            out.append(f"{name}: {saved[name]!r} -> {getattr(cfg, name)!r}")
    return out


def _refuse_mismatch(files: RunFiles, cfg: TrainConfig, saved: Mapping[str, Any]) -> None:
    diff = _mismatches(cfg, saved)
    if diff:
        raise UsageError(f"{files.dir} holds a run with other settings ({'; '.join(diff)}); "
                         f"use another --out, or --restart to discard it")


def _refuse_other_world_size(files: RunFiles, saved: Mapping[str, Any], info: DistInfo) -> None:
    """A run is continued (or found finished) only by as many processes as trained it: the
    world size sets the global batch, the lr of the default recipe and each rank's data."""
    record = saved.get("distributed") or {}
    world_size = record.get("world_size", 1)
    if world_size != info.world_size:
        raise UsageError(f"{files.dir} was trained by {world_size} process(es) (global batch "
                         f"{record.get('global_batch_size', saved.get('batch_size'))}), not "
                         f"{info.world_size}; launch it with {world_size} process(es) in all "
                         f"(torchrun), or --restart to discard it")


def _finished_run(files: RunFiles, cfg: TrainConfig, resume: str,
                  info: DistInfo = DistInfo()) -> dict | None:
    """final.json of a finished run in the folder (the same run, else UsageError), or None.

    A diverged run stays diverged: DivergedError again, so the exit code says so again.
    """
    final = files.read_final()
    if final is None or resume == "restart":
        return None
    try:
        saved = yaml.safe_load(files.path("config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        saved = {}
    _refuse_other_world_size(files, saved, info)
    _refuse_mismatch(files, cfg, saved)
    if files.is_main:
        log(f"{files.dir}: already finished ({final['status']}, {final['epochs_run']} epochs); "
            f"nothing to do (--restart trains it again)")
    if final["status"] == "diverged":
        where = final.get("diverged_at") or {}
        raise DivergedError(f"{files.dir} diverged earlier (non-finite loss at epoch "
                            f"{where.get('epoch')}, step {where.get('step')})")
    return final


def _checkpoint_to_resume(files: RunFiles, cfg: TrainConfig, resume: str,
                          info: DistInfo = DistInfo()) -> dict | None:
    """last.pt of an interrupted run of the same config, or None to start from scratch.
    Under torchrun every rank reads it (the run folder is on a shared filesystem)."""
    last = files.path("last.pt")
    if resume == "require" and not last.exists():
        raise UsageError(f"--resume: nothing to resume, {last} does not exist")
    if resume == "restart" or not last.exists():
        return None
    checkpoint = load_checkpoint(last)
    _refuse_other_world_size(files, checkpoint, info)
    _refuse_mismatch(files, cfg, checkpoint["config"])
    return checkpoint


def environment(rt: Runtime, data) -> dict:
    """What the run ran with, for config.yaml: versions, device, git commit, data cache."""
    import numpy
    import torchmetrics

    env = {
        "resnorm": __version__, "torch": str(torch.__version__),
        "torchmetrics": torchmetrics.__version__, "numpy": numpy.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "device": str(rt.device),
        "device_name": (torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "amp": str(rt.amp).replace("torch.", "") if rt.amp else "off",
        "channels_last": rt.channels_last,
        "keeps_freed_memory": rt.keeps_freed_memory,
        "git_commit": None, "git_dirty": None,
        "data_cache": str(data.path), "classes": len(data.classes),
        "images": {name: len(split) for name, split in data.splits.items()},
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    env["git_commit"], env["git_dirty"] = _git_state()
    return env


def _git_state() -> tuple[str | None, bool | None]:
    """HEAD commit and dirtiness of the git checkout holding this package, if any."""
    here = Path(__file__).resolve().parent

    def git(*args):  # read-only: --no-optional-locks keeps `status` from rewriting the index
        return subprocess.run(["git", "--no-optional-locks", "-C", str(here), *args],
                              capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None, None
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return head.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


# --- the run ---------------------------------------------------------------------------------

RESUME_MODES = ("auto", "require", "restart")
SCORE_KEYS = ("loss", "acc", "micro_f1", "macro_f1")  # per split in metrics.csv


def train(cfg: TrainConfig | Mapping[str, Any], *, resume: str = "auto",
          progress: bool = True) -> dict:
    """Train one run into `cfg.out` and return its final.json contents.

    resume: "auto" continues from last.pt when there is one (and returns a finished run's
    final.json untouched); "require" fails unless there is something to continue; "restart"
    deletes the run's files first. Raises UsageError for invalid settings and DivergedError
    (after writing final.json) when the training loss becomes non-finite.
    """
    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES}, got {resume!r}")
    cfg = resolve_config(cfg)
    # Processes: under torchrun join the group (once per process); only rank 0 prints and
    # writes files. Single-process runs never touch torch.distributed.
    info = init_from_env(device_type(cfg.device))
    is_main = info.is_main
    files = RunFiles(Path(cfg.out).expanduser(), is_main)

    # A finished run is left alone: re-running a study or a command is a no-op.
    final = _finished_run(files, cfg, resume, info)
    if final is not None:
        return final
    checkpoint = _checkpoint_to_resume(files, cfg, resume, info)
    barrier()  # every rank has looked at the folder before rank 0 clears or writes it

    # Data: decoded once into the uint8 cache; its classes fix the output layer.
    data = in_turn(info, lambda: load_data(cfg, progress and is_main))  # one builder at a time
    cfg = dataclasses.replace(cfg, num_classes=len(data.classes))
    if checkpoint is not None and checkpoint["classes"] != data.classes:
        raise UsageError(f"the dataset's classes differ from those {files.dir} was trained on")
    rt = Runtime.for_config(cfg)

    # Model, seeded: runs with one seed start from the same weights (on every rank).
    torch.manual_seed(cfg.seed)
    model_args = dict(n=cfg.n, num_classes=cfg.num_classes, norm=cfg.norm, shortcut=cfg.shortcut)
    model = ResNet(**model_args).to(rt.device)
    if cfg.sync_bn:  # batch statistics over every rank's batch (a no-op in one process)
        model = sync_batch_norms(model)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # Evaluation runs the plain model (each rank on its own block of a split, no collectives
    # inside); training goes through DDP, which averages the gradients over ranks.
    eval_forward = _compiled(model, cfg)
    forward = eval_forward
    if info.enabled:
        # (DDP also sends rank 0's buffers to every rank before each training forward, so
        # per-rank running statistics restart from rank 0's at every step.)
        ddp = DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
        forward = _compiled(ddp, cfg)
    train_stream = make_stream(data, "train", cfg, rt, training=True, info=info)
    val_stream = make_stream(data, "valid", cfg, rt, training=False, info=info)
    optimizer = build_optimizer(model, cfg)
    parts = TrainParts(model, forward, optimizer,
                       build_scheduler(optimizer, cfg, len(train_stream)),
                       torch.amp.GradScaler(rt.device.type, enabled=rt.amp is torch.float16),
                       eval_forward=eval_forward, info=info)
    record = distributed_record(cfg, info)

    # Resume: everything the next epoch depends on comes from last.pt; else start clean.
    if checkpoint is not None:
        state = parts.restore(checkpoint)
        if is_main:
            log(f"{files.dir}: resuming after epoch {state.epoch}/{cfg.epochs}")
    else:
        state = RunState()
        files.clear()
        files.write_config({**dataclasses.asdict(cfg), "distributed": record},
                           environment(rt, data))
    files.write_metrics(state.history)  # the csv always matches the checkpoint
    if is_main and info.enabled:
        log(f"{files.dir}: {info.world_size} processes ({info.backend}), batch "
            f"{cfg.batch_size} per process = {record['global_batch_size']} per step, "
            f"BN statistics: {record['bn_statistics']}")

    def snapshot() -> dict:
        return {"format": "resnorm-run", "version": 1, "config": dataclasses.asdict(cfg),
                "model_args": model_args, "classes": list(data.classes), "distributed": record,
                **parts.state_dict(), "state": dataclasses.asdict(state)}

    show = Progress(progress and is_main, cfg.epochs, every=1 if rt.device.type == "cpu" else 25)
    writer = _tensorboard(files, purge_step=state.epoch + 1 if state.epoch else None)
    try:
        while state.status == "running":
            epoch = state.epoch + 1
            started = time.perf_counter()

            # One pass over the augmented training batches, in train mode.
            train_stats, lr, train_s = train_one_epoch(parts, train_stream, rt, show, epoch,
                                                       state.step, cfg.num_classes)
            state.step += len(train_stream)

            # Validation in eval mode (running statistics), no augmentation. Every rank
            # evaluates (and rank 0 saves) the same model: rank 0's running statistics.
            broadcast_buffers_(model)
            val_stats = evaluate(eval_forward, val_stream, cfg.num_classes, rt)
            epoch_s = time.perf_counter() - started
            state.elapsed_s += epoch_s

            # Bookkeeping: the csv row, best epoch, early stopping, status.
            row = {"epoch": epoch, "lr": lr,
                   **{f"train_{k}": train_stats[k] for k in SCORE_KEYS},
                   **{f"val_{k}": val_stats[k] for k in SCORE_KEYS},
                   "epoch_time_s": round(epoch_s, 3),
                   "images_per_s": round(train_stream.num_samples * info.world_size / train_s,
                                         1)}
            improved = state.record(row, cfg)

            # Checkpoints: best first, then last, so last.pt never points past a best.pt.
            saved = snapshot()  # built once: both files hold the same state
            if improved:
                files.save("best.pt", saved)
            files.save("last.pt", saved)
            files.write_metrics(state.history)
            _log_scalars(writer, row)
            if is_main:
                log(_epoch_line(row, cfg.epochs, improved))
    except NonFiniteLoss as exc:
        _finish(files, cfg, state, parts, data, rt, "diverged", exc.where)
        raise DivergedError(f"{exc} (global step {exc.where['global_step']}); "
                            f"see {files.path('final.json')}") from None
    finally:
        show.close()
        if writer is not None:
            writer.close()
    return _finish(files, cfg, state, parts, data, rt, state.status)


def _compiled(module: nn.Module, cfg: TrainConfig) -> nn.Module:
    """`module` under torch.compile with the run's mode when `cfg.compile`, else itself.

    mode "reduce-overhead" adds CUDA graphs (one launch per step: the batch-8 runs on a GPU
    are launch-bound); "max-autotune" also tunes kernels; "default" is plain Inductor.
    """
    return torch.compile(module, mode=cfg.compile_mode) if cfg.compile else module


@dataclass
class TrainParts:
    """What a training step touches, and what a checkpoint saves besides the run state."""

    model: nn.Module                 # the module whose state_dict is saved
    forward: nn.Module               # training: the same model, DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    eval_forward: nn.Module | None = None  # evaluation: the model, compiled or not (no DDP)
    info: DistInfo = DistInfo()      # this process's place among the ranks

    def __post_init__(self) -> None:
        if self.eval_forward is None:
            self.eval_forward = self.forward

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rng_state()}

    def restore(self, checkpoint: dict) -> RunState:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        set_rng_state(checkpoint["rng"])
        return RunState(**checkpoint["state"])


def train_one_epoch(parts: TrainParts, stream: BatchStream, rt: Runtime, show: Progress,
                    epoch: int, global_step: int, num_classes: int) -> tuple[dict, float, float]:
    """Train for one epoch; return (scores, lr of its last step, seconds spent).

    Raises NonFiniteLoss at the first non-finite loss (checked whenever the host reads from
    the device anyway, and at the end of the epoch).
    """
    model, optimizer, scaler = parts.model, parts.optimizer, parts.scaler
    parts.forward.train()  # the DDP/compile wrappers and the model inside them
    stream.set_epoch(epoch - 1)
    # Under DDP a rank must not stop alone mid-epoch (the others would wait for it in the
    # gradient all-reduce): divergence is checked by all ranks together at the epoch's end.
    check_early = not parts.info.enabled
    meter = EpochMeter(num_classes, rt.device)
    first_bad = torch.full((), -1, dtype=torch.long, device=rt.device)
    show.start(epoch, len(stream))
    started = time.perf_counter()
    lr = optimizer.param_groups[0]["lr"]
    for step, (x, y) in enumerate(stream, 1):
        # Forward under autocast; cross-entropy is computed in float32 either way.
        with rt.autocast():
            logits = parts.forward(x)
            loss = F.cross_entropy(logits, y)
        # Backward and update (the scaler only acts for fp16).
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        # BIN gates stay in [0, 1]: clamped in place, so the optimizer keeps the same tensor.
        clamp_gates_(model)
        # Per-step schedule: warm-up and decay are smooth whatever the epoch count.
        lr = optimizer.param_groups[0]["lr"]
        parts.scheduler.step()
        # Statistics accumulate on the device: no host synchronisation here.
        meter.update(loss, logits, y)
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
        # Read back only when the display needs numbers; check for divergence then. Under
        # DDP the numbers shown are rank 0's batches', the speed is all ranks' images.
        if show.wants(step):
            if check_early:
                _raise_if_diverged(first_bad, epoch, global_step)
            loss_so_far, acc_so_far = meter.running()
            seen = step * stream.batch_size * stream.world_size
            show.update(step, loss_so_far, acc_so_far, seen / (time.perf_counter() - started))
    _raise_if_diverged(_first_bad_on_any_rank(first_bad), epoch, global_step)
    stats = meter.compute()  # synchronises, so the time below includes all device work
    show.close()
    return stats, lr, time.perf_counter() - started


def _first_bad_on_any_rank(first_bad: torch.Tensor) -> torch.Tensor:
    """The first step at which any rank saw a non-finite loss (-1: none), on every rank."""
    if not is_distributed():
        return first_bad
    none = torch.iinfo(torch.long).max
    earliest = all_reduce_min(torch.where(first_bad < 0, none, first_bad))
    return torch.where(earliest == none, -1, earliest)


def _raise_if_diverged(first_bad: torch.Tensor, epoch: int, global_step: int) -> None:
    bad = int(first_bad)
    if bad >= 0:
        raise NonFiniteLoss(epoch, bad, global_step + bad)


@torch.no_grad()
def evaluate(model: nn.Module, stream, num_classes: int, rt: Runtime | None = None) -> dict:
    """Loss and scores of `model` over `stream` in eval mode (see EpochMeter.compute)."""
    rt = rt or Runtime(torch.device("cpu"), None, False)
    was_training = model.training
    model.eval()
    meter = EpochMeter(num_classes, rt.device)
    try:
        for x, y in stream:
            with rt.autocast():
                logits = model(x)
                loss = F.cross_entropy(logits, y)
            meter.update(loss, logits, y)
    finally:
        model.train(was_training)
    return meter.compute()


def evaluate_best(files: RunFiles, parts: TrainParts, data, cfg: TrainConfig,
                  rt: Runtime) -> dict:
    """best.pt evaluated in eval mode on every split (train as "train", valid as "val").
    Under torchrun every rank loads it (after rank 0 has written it) and evaluates its block
    of each split; the scores are summed over ranks."""
    barrier()
    if not files.path("best.pt").exists():
        return {}
    parts.model.load_state_dict(load_checkpoint(files.path("best.pt"), rt.device)["model"])
    results = {}
    for split, key in (("train", "train"), ("valid", "val"), ("test", "test")):
        if split in data.splits and len(data.splits[split]):
            stream = make_stream(data, split, cfg, rt, training=False, info=parts.info)
            results[key] = evaluate(parts.eval_forward, stream, cfg.num_classes, rt)
    return results


def _finish(files: RunFiles, cfg: TrainConfig, state: RunState, parts: TrainParts, data,
            rt: Runtime, status: str, diverged_at: dict | None = None) -> dict:
    """Evaluate the best checkpoint, write final.json and curves.png; return final.json."""
    started = time.perf_counter()
    results = evaluate_best(files, parts, data, cfg, rt)
    final = {
        "name": cfg.name,
        "status": status,
        "epochs_run": state.epoch,
        "best_epoch": state.best_epoch,
        "wall_time_s": round(state.elapsed_s + time.perf_counter() - started, 3),
        "parameters": count_parameters(parts.model),
        "classes": list(data.classes),
        "eval": results,
    }
    if diverged_at is not None:
        final["diverged_at"] = diverged_at
    files.write_final(final, state.history,
                      title=f"{cfg.name} ({cfg.norm}, n={cfg.n}, batch {cfg.batch_size})")
    if files.is_main and status != "diverged":
        val = results.get("val", {})
        log(f"{files.dir}: {status} after {state.epoch} epochs; best epoch {state.best_epoch}: "
            f"val acc {val.get('acc', math.nan):.4f}, macro F1 {val.get('macro_f1', math.nan):.4f}")
    return final


def _tensorboard(files: RunFiles, purge_step: int | None):
    """A SummaryWriter in the run folder; events of epochs being redone are purged."""
    if not files.is_main:
        return None
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(log_dir=str(files.dir), purge_step=purge_step)


def _log_scalars(writer, row: dict) -> None:
    if writer is None:
        return
    for key, value in row.items():
        if key != "epoch":
            split, _, metric = key.partition("_")
            tag = f"{metric}/{split}" if split in ("train", "val") else f"run/{key}"
            writer.add_scalar(tag, value, row["epoch"])
    writer.flush()


def _epoch_line(row: dict, epochs: int, improved: bool) -> str:
    return (f"epoch {row['epoch']}/{epochs} lr {row['lr']:.3g} | train loss "
            f"{row['train_loss']:.4f} acc {row['train_acc']:.4f} | val loss {row['val_loss']:.4f} "
            f"acc {row['val_acc']:.4f} macro-F1 {row['val_macro_f1']:.4f} | "
            f"{row['epoch_time_s']:.1f}s {row['images_per_s']:.0f} img/s"
            + (" *" if improved else ""))


# --- using a trained run ---------------------------------------------------------------------

def load_run_model(run_dir: str | os.PathLike, which: str = "best",
                   map_location: Any = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model of a run from best.pt (or last.pt), in eval mode, with its config."""
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    checkpoint = load_checkpoint(Path(run_dir) / f"{which}.pt", map_location)
    model = ResNet(**checkpoint["model_args"])
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return model, dict(checkpoint["config"])


def read_history(run_dir: str | os.PathLike) -> list[dict]:
    """The metrics.csv rows of a run."""
    return read_metrics_csv(Path(run_dir) / "metrics.csv")


# --- command line ----------------------------------------------------------------------------

# What each flag means; defaults are appended from TrainConfig and RECIPES (defined once).
HELP = {
    "data": "dataset folder (train/ valid/ [test/]) or a cache made by `resnorm prepare`",
    "cache": "cache folder for the decoded images (default: under $RESNORM_CACHE or "
             "~/.cache/resnorm)",
    "size": "image side in pixels",
    "resize": "how images become square",
    "out": "run folder (required)",
    "name": "display name (default: the run folder's name)",
    "norm": "normalization: torch_bn bn in bin ln gn[:G] nn",
    "n": "blocks per stage; the network has 6n+2 layers",
    "shortcut": "A: identity + zero-padded channels, B: 1x1 projection",
    "batch_size": "training batch size per process (under torchrun the batch of a step is "
                  "this x the number of processes)",
    "epochs": "epochs",
    "recipe": "presets for the optimizer settings not given (see below)",
    "optimizer": "optimizer",
    "lr": "peak learning rate (after warm-up)",
    "momentum": "SGD momentum",
    "nesterov": "Nesterov momentum (SGD)",
    "weight_decay": "weight decay on conv and linear weights",
    "schedule": "per-step lr schedule (step: x0.1 at 50%% and 75%% of training)",
    "warmup_epochs": "linear warm-up epochs",
    "gate_lr_mult": "learning-rate multiplier of the BIN gates",
    "augment": "random crop (pad S/8, reflect) + horizontal flip",
    "patience": "stop after this many epochs without a val-accuracy gain (0: never)",
    "min_delta": "val-accuracy gain that counts as an improvement",
    "seed": "random seed (weights, batch order, augmentation)",
    "device": "where to train",
    "amp": "autocast dtype (auto: bf16 on CUDA, else off)",
    "channels_last": "channels-last memory format (auto: on for CUDA)",
    "compile": "torch.compile the model",
    "compile_mode": "torch.compile mode with --compile: reduce-overhead adds CUDA graphs (for "
                    "launch-bound small batches on a GPU), max-autotune tunes kernels",
    "eval_batch_size": "batch size for evaluation",
    "num_classes": "expected number of classes (default: from the data)",
    "sync_bn": "under torchrun, bn/bin (torch_bn: CUDA only) normalize by statistics over all "
               "processes' batches instead of each process's own",
}


def _default_text(name: str) -> str:
    """The default of a field as --help shows it (from the recipes for recipe fields)."""
    if name == "lr":
        return (f"default recipe: {DEFAULT_LR_PER_128:g} x batch_size/128 for sgd, "
                f"{ADAPTIVE_DEFAULTS['adam']['lr']:g} for adam/adamw; "
                f"literal: {RECIPES['literal']['lr']:g}")
    if name in RECIPES["default"]:
        return f"default recipe: {RECIPES['default'][name]}; literal: {RECIPES['literal'][name]}"
    default = TrainConfig.__dataclass_fields__[name].default
    return "" if default is None else f"default: {default}"


def _recipe_text(recipe: str) -> str:
    r = RECIPES[recipe]
    lr = f"lr {r['lr']:g}" if "lr" in r else f"lr {DEFAULT_LR_PER_128:g} x batch_size/128"
    warmup = f"{r['warmup_epochs']:g}-epoch warm-up + " if r["warmup_epochs"] else "no warm-up, "
    return (f"{r['optimizer'].upper()} {lr}, momentum {r['momentum']:g}"
            f"{', Nesterov' if r['nesterov'] else ''}, weight decay {r['weight_decay']:g},\n"
            f"{'':11}{warmup}{r['schedule']} decay, "
            f"augmentation {'on' if r['augment'] else 'off'}")


EPILOG = f"""\
examples:
  resnorm train --data data/synth --norm bn --n 1 --size 32 --epochs 5 --out runs/bn
  resnorm train --config runs/bn/config.yaml --out runs/bn-seed1 --seed 1
  resnorm train --data data/birds --recipe literal --out runs/literal

recipes (fill in the optimizer settings not set explicitly):
  default  {_recipe_text("default")}
           (trains in 50 epochs; lr scaled linearly with the batch size)
  literal  {_recipe_text("literal")}
           (the assignment's SGD with initial lr 1e-4)

Re-running a command continues an interrupted run from last.pt; a finished run is a no-op.
Compiled: --compile [--compile-mode reduce-overhead] (CUDA graphs: one launch per step, for the
launch-bound batch-8 runs on a GPU; max-autotune tunes kernels, a slow first epoch).
Several GPUs or machines: torchrun --nproc_per_node=4 -m resnorm train ... [--sync-bn]
(--batch-size is per process; see docs/distributed.md).
Exit codes: 0 done, 2 invalid settings, 3 diverged (non-finite loss; see final.json).
"""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags for every TrainConfig field, plus --config and the resume controls."""
    parser.epilog = EPILOG
    parser.add_argument("--config", metavar="YAML",
                        help="settings file (TrainConfig fields); flags override it")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        base = next((t for t in typing.get_args(FIELD_TYPES[f.name]) if t is not type(None)),
                    FIELD_TYPES[f.name])
        default = _default_text(f.name)
        # SUPPRESS: only flags actually given override the config file.
        kw = dict(dest=f.name, default=argparse.SUPPRESS,
                  help=f"{HELP[f.name]} ({default})" if default else HELP[f.name])
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            parser.add_argument(flag, type=base, choices=CHOICES.get(f.name),
                                metavar=None if f.name in CHOICES else f.name.upper(), **kw)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", dest="resume_mode", action="store_const", const="require",
                       default="auto", help="continue from RUN/last.pt and fail if there is "
                       "none (by default a run continues when last.pt exists)")
    group.add_argument("--restart", dest="resume_mode", action="store_const", const="restart",
                       help="delete the run's files in --out and train from scratch")
    parser.add_argument("--quiet", action="store_true", help="no per-step progress output")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig defaults, overridden by the --config file, overridden by the flags given."""
    values = load_config_file(args.config) if args.config else {}
    values.update({name: getattr(args, name) for name in FIELD_NAMES if hasattr(args, name)})
    return config_from_dict(values)


def run_cli(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    final = train(cfg, resume=args.resume_mode, progress=not args.quiet)
    if not is_main_process():
        return 0
    val = final["eval"].get("val", {})
    print(json.dumps({"out": cfg.out, "status": final["status"], "best_epoch": final["best_epoch"],
                      "val_acc": val.get("acc"), "val_macro_f1": val.get("macro_f1")}))
    return 0
