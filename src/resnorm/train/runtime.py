"""Where and how a run computes: device, autocast, memory format, compilation, processes,
and the prepared data as batches on the device.

Compilation: `--compile` compiles the model in place (`nn.Module.compile`, mode
--compile-mode), so training, evaluation and checkpoints all use the one module. "default"
compiles with Inductor; "reduce-overhead" also records CUDA graphs, which replay a whole
step's kernels with one launch: that helps the launch-bound small-batch runs (batch 8) on a
GPU and does nothing on a CPU; "max-autotune" searches kernel configurations (long first
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
"""
from __future__ import annotations

import contextlib
import datetime as dt
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from resnorm import __version__
from resnorm.cpu_memory import keep_freed_memory
from resnorm.data import BatchStream, load_cache, prepare
from resnorm.data.cache import read_manifest
from resnorm.distributed import DistInfo, contiguous_shard
from resnorm.errors import UsageError
from resnorm.norms import enable_sync_, get_norm
from resnorm.train.config import TrainConfig, device_type


def select_device(name: str) -> torch.device:
    """The device `device_type(name)` names; for CUDA the current GPU (under torchrun
    `init_from_env` has made it the process's LOCAL_RANK)."""
    name = device_type(name)
    # With an index ("cuda:0", not "cuda"): it compares equal to the device of a tensor on it.
    if name == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name, 0) if name == "mps" else torch.device(name)


# bf16 runs natively (tensor cores, full speed) from compute capability 8.0 (Ampere: A100,
# RTX 30xx) on; older GPUs (V100 sm_70, T4 sm_75) emulate it, slower than float32.
NATIVE_BF16_CAPABILITY = (8, 0)


def choose_amp(amp: str, device: torch.device) -> tuple[torch.dtype | None, str, str | None]:
    """(autocast dtype or None for float32, the reason in words, a warning line or None).

    auto: on CUDA bf16 where the GPU has it natively (compute capability >= 8.0), else fp16,
    whose narrow range needs the GradScaler (train.run enables it for fp16 only); elsewhere
    off (autocast is for CUDA here). Explicit bf16 on a GPU without native bf16 is allowed
    (same numerics as on a newer GPU, e.g. to compare with one) with a warning: it is slow.
    """
    sm = None
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        sm = f"sm_{major}{minor}"
        native_bf16 = (major, minor) >= NATIVE_BF16_CAPABILITY
    if amp == "auto":
        if device.type != "cuda":
            return None, f"off: amp auto uses autocast on CUDA only (device {device.type})", None
        if native_bf16:
            return torch.bfloat16, f"bf16: {sm} has native bf16", None
        return torch.float16, f"fp16 with GradScaler: {sm} has no native bf16", None
    if amp == "fp16" and device.type != "cuda":
        raise UsageError("amp fp16 needs a CUDA device (use bf16 or off)")
    if amp == "bf16" and device.type == "mps":
        raise UsageError("amp bf16 is not supported on mps (use off)")
    if amp not in ("bf16", "fp16", "off"):
        raise UsageError(f"amp must be auto, bf16, fp16 or off, got {amp!r}")
    if amp == "bf16" and sm is not None and not native_bf16:
        return (torch.bfloat16, f"bf16: --amp bf16 ({sm} has no native bf16: emulated, slow)",
                f"--amp bf16 on {sm}, which has no native bf16: autocast emulates it, slower "
                f"than float32; --amp auto picks fp16 with loss scaling here")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]
    return dtype, f"{amp}{' with GradScaler' if amp == 'fp16' else ''}: --amp {amp}", None


@dataclass(frozen=True)
class Runtime:
    """Where a run computes and in what numerics."""

    device: torch.device
    amp: torch.dtype | None          # autocast dtype; None: plain float32
    channels_last: bool
    keeps_freed_memory: bool = False  # CPU: malloc keeps freed memory (resnorm.cpu_memory)
    amp_reason: str = ""             # why this amp (choose_amp), for config.yaml
    amp_warning: str | None = None   # a line for the user (explicit bf16 without native bf16)

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
        amp, reason, warning = choose_amp(cfg.amp, device)
        return cls(device, amp, channels_last, kept, reason, warning)

    def autocast(self):
        """A fresh autocast context (a no-op without amp)."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)


def load_data(cfg: TrainConfig, progress: bool):
    """The prepared dataset as the run scores it: `cfg.data` is a cache folder, or a dataset
    prepared on the fly; val and test without their images that have a copy in train unless
    `cfg.keep_leaked` (PreparedData.scored)."""
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
    if "val" not in data.splits:
        raise UsageError(f"the dataset at {data.root} has no validation split (valid/, val/ or "
                         f"test/)")
    return data.scored(cfg.keep_leaked)


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
    if not get_norm(cfg.norm).batch_stats:
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


def prepare_model(model: nn.Module, cfg: TrainConfig, rt: Runtime,
                  info: DistInfo = DistInfo()) -> tuple[nn.Module, nn.Module]:
    """(the model, what training calls): the model on the run's device and memory format, its
    BN statistics synced across ranks with `cfg.sync_bn`, compiled in place with `cfg.compile`
    (torch.compile with --compile-mode: "reduce-overhead" adds CUDA graphs, one launch per step
    for the launch-bound batch-8 runs on a GPU; "max-autotune" also tunes kernels); training
    goes through DistributedDataParallel under torchrun, which averages the gradients over
    ranks. Evaluation calls the model itself: each rank evaluates its own block of a split,
    with no collective inside (DDP would broadcast buffers on every forward)."""
    model = model.to(rt.device)
    if cfg.sync_bn:  # batch statistics over every rank's batch (a no-op in one process)
        model = sync_batch_norms(model)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.compile:  # in place: the same module (and state_dict keys) compiled
        model.compile(mode=cfg.compile_mode)
    if not info.enabled:
        return model, model
    # (DDP also sends rank 0's buffers to every rank before each training forward, so
    # per-rank running statistics restart from rank 0's at every step.)
    device_ids = [rt.device.index] if rt.device.type == "cuda" else None
    return model, DistributedDataParallel(model, device_ids=device_ids)


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
        "amp_reason": rt.amp_reason,
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
