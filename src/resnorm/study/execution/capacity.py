"""How many runs of a study fit on this machine at once: `resnorm study --jobs auto`, and the
up-front check of an explicit `--jobs K` on a GPU.

    auto_jobs(configs) -> (K, one line saying why)
    check_jobs_fit(configs, k) -> one line (or UsageError, one line: needed vs free)

GPU (CUDA). Each job is its own process (study.execution.pool) and holds on the GPU:
- a CUDA context: CUDA_CONTEXT_BYTES (about 0.5 GB; the driver's, not torch's allocator);
- its model's peak memory, `estimate_peak_bytes(cfg)`: activations from the ResNet's shape,
  worked out below, times SAFETY;
- its own copy of the uint8 dataset cache, train + val (N x 3 x S x S bytes each), when
  it fits (BatchStream puts a split on the device when it takes at most 60 % of the free
  memory, else streams its batches from host memory: slower, not wrong).
K = min(jobs whose needs fit in USABLE_FRACTION of the free memory, the GPU's SMs //
SMS_PER_JOB, the CPU cores (one each to launch its kernels), the runs). With the data on
the device if at least one job fits so, else streamed. The jobs do not all need the most:
the memory bound takes the K largest needs among the runs, whichever K run together.

One dataset copy per job, not one per GPU. PyTorch can share a CUDA tensor between
processes (torch.multiprocessing sends a CUDA IPC handle), but only while the process that
allocated it keeps it alive and the consumers stay in step with it; here the jobs are
independent processes that start, fail and resume on their own, and the parent
would have to hold the data on the GPU for the whole study (one more CUDA context) and
outlive every job. The per-job copy keeps a job self-contained; its cost is in the estimate
(7.4 GB per job for the 37,500 birds images at 256 px, 0.46 GB at 64 px). On the CPU there is
nothing to copy: every job reads the same memory-mapped cache (the page cache holds it once).

SMs: without MPS, the kernels of separate processes take turns on the GPU rather than run
side by side; what K jobs buy is one job's kernels filling another's host-side gaps (Python,
launches, evaluation, checkpoints), which matter more the faster the GPU: the bigger the GPU,
the more jobs pay. SMS_PER_JOB = 16 is a heuristic, not a measurement: 8 jobs on an H100 or
H200 (132 SMs), 6 on an A100 (108), 2 on a T4 (40).

CPU. K = min(cores // threads per job, jobs whose activations fit in the available host
memory, the runs); threads per job: the plan's `threads`, else 1 (runs in separate
processes scale across cores better than one run's intra-op threads; study.execution.pool then hands
cores // K threads to each job).

The activation estimate. The network (resnorm.model) is a 3x3 conv stem with 16 filters at
S x S, then 2n convs at each of 16, 32, 64 filters at S, S/2, S/4: per image
(16 + 2n (16 + 32/4 + 64/16)) S^2 = (16 + 56 n) S^2 conv outputs (shortcut B adds two
1x1-conv outputs: 12 S^2). Training saves about two tensors of each for the backward: the
conv's output (the norm's input) and the norm/ReLU output (the next conv's input), in the
autocast dtype (2 bytes; 4 without amp). Measured on the CPU with saved-tensor hooks
(tests/test_jobs_auto.py): 2.07 to 2.20 such tensors with every norm, float32 and bf16, n = 1
and 2, 32 and 64 px (nn, without norms: 1.07 to 1.19); SAVED_TENSORS = 2.5 covers it.
Besides those, a few tensors of the largest activation (16 S^2 per image) live at once: the
float32 input and its autocast copy, a conv's output, the norm's output, the block's input
for the residual, and a float32 copy for the statistics (or the backward's gradients):
(3 x 2 x 4 + 16 x (3 e + 4)) S^2 bytes per image, e the activation's bytes per element.
Evaluation (eval_batch_size, no graph) holds only the live tensors; at batch 256 it can need
more than training at batch 32. Peak = SAFETY x max(train, eval) + parameters, gradients and
two optimizer states; SAFETY = 1.5 covers the caching allocator's fragmentation and cuDNN's
workspaces. Not measured on a GPU yet: benchmarks/gpu_check can compare it with
torch.cuda.max_memory_reserved.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from resnorm.data.cache import read_manifest
from resnorm.errors import UsageError

__all__ = ["DeviceInfo", "probe_device", "estimate_peak_bytes", "dataset_bytes", "job_need",
           "auto_jobs", "check_jobs_fit", "jobs_that_fit"]

CUDA_CONTEXT_BYTES = 512 * 2 ** 20  # a CUDA context per process (driver, kernels, cuBLAS)
SAVED_TENSORS = 2.5                 # activations saved for backward, per conv output
SAFETY = 1.5                        # allocator fragmentation, cuDNN workspaces, the unforeseen
USABLE_FRACTION = 0.9               # of the free memory, for the jobs all together
SMS_PER_JOB = 16                    # GPU: one job per this many SMs (module docstring)
ELEMENTS_PER_S2 = {"A": lambda n: 16 + 56 * n, "B": lambda n: 16 + 56 * n + 12}
GB = 1e9


@dataclass(frozen=True)
class DeviceInfo:
    """What the estimate needs to know about the machine (probe_device, or given in tests)."""

    kind: str                   # "cuda" or "cpu"
    name: str
    free_bytes: int | None      # cuda: free GPU memory; cpu: available host memory (None: unknown)
    total_bytes: int | None
    sm_count: int | None        # cuda: streaming multiprocessors
    cores: int                  # CPU cores this process may use


def probe_device(kind: str) -> DeviceInfo:
    """The current GPU (kind "cuda": torch.cuda.mem_get_info, get_device_properties) or this
    machine's CPU. Asking CUDA for its free memory creates this process's CUDA context, so the
    free memory reported already leaves it out."""
    import torch

    cores = _cores()
    if kind == "cuda":
        index = torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        props = torch.cuda.get_device_properties(index)
        return DeviceInfo("cuda", props.name, int(free), int(total),
                          int(props.multi_processor_count), cores)
    available, total = _host_memory()
    return DeviceInfo("cpu", "cpu", available, total, None, cores)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _host_memory() -> tuple[int | None, int | None]:
    """(MemAvailable, MemTotal) in bytes from /proc/meminfo, or (None, None)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text()
                      .splitlines() if ":" in line)
        return (int(fields["MemAvailable"].split()[0]) * 1024,
                int(fields["MemTotal"].split()[0]) * 1024)
    except (OSError, KeyError, ValueError):
        return None, None


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    return cfg.get(name, default) if isinstance(cfg, Mapping) else getattr(cfg, name, default)


def _device_kind(cfg: Any) -> str:
    from resnorm.train.config import device_type

    kind = device_type(str(_get(cfg, "device", "auto")))
    return "cuda" if kind == "cuda" else "cpu"  # mps: shares the host's memory and cores


def _activation_bytes(cfg: Any, kind: str) -> int:
    """Bytes per activation element: 2 under autocast (bf16 or fp16), else 4."""
    amp = str(_get(cfg, "amp", "auto"))
    half = amp in ("bf16", "fp16") or (amp == "auto" and kind == "cuda")
    return 2 if half else 4


def saved_activation_bytes(n: int, size: int, batch: int, elem_bytes: int,
                           shortcut: str = "A") -> float:
    """Training: the activations one step saves for its backward (module docstring)."""
    return SAVED_TENSORS * ELEMENTS_PER_S2[shortcut](n) * size ** 2 * batch * elem_bytes


def live_activation_bytes(size: int, batch: int, elem_bytes: int) -> float:
    """The few largest tensors alive at once besides the saved ones (module docstring)."""
    return (3 * 2 * 4 + 16 * (3 * elem_bytes + 4)) * size ** 2 * batch


def estimate_peak_bytes(cfg: Any, kind: str | None = None) -> int:
    """Peak memory of one run's model (training step or evaluation, whichever is larger) on
    a device of `kind` ("cuda"/"cpu"; default: the run's own), with SAFETY; no CUDA context,
    no data. `cfg`: a TrainConfig or a mapping of its fields."""
    kind = kind or _device_kind(cfg)
    e = _activation_bytes(cfg, kind)
    n, size = int(_get(cfg, "n", 2)), int(_get(cfg, "size", 256))
    batch, eval_batch = int(_get(cfg, "batch_size", 32)), int(_get(cfg, "eval_batch_size", 256))
    train = (saved_activation_bytes(n, size, batch, e, str(_get(cfg, "shortcut", "A")))
             + live_activation_bytes(size, batch, e))
    evaluation = live_activation_bytes(size, eval_batch, e)
    # Parameters, gradients and two optimizer states in float32 (Adam; SGD keeps one): about
    # 9 x (16^2 + 32^2 + 64^2) weights per pair of blocks, 2n blocks per stage.
    parameters = 9 * 2 * n * (16 ** 2 + 32 ** 2 + 64 ** 2) + 64 * 1000
    return int(SAFETY * max(train, evaluation) + 4 * 4 * parameters)


def dataset_bytes(cfg: Any) -> int:
    """The uint8 cache of a run's train and val splits (N x 3 x S x S each), from the
    manifest of its data (a cache folder, as in a study); 0 when that is no cache."""
    manifest = read_manifest(Path(str(_get(cfg, "data", ""))).expanduser())
    if manifest is None:
        return 0
    size = int(manifest.get("params", {}).get("size", _get(cfg, "size", 256)))
    splits = manifest.get("splits", {})
    return sum(int(splits[name]["count"]) * 3 * size * size
               for name in ("train", "val") if name in splits)


@dataclass(frozen=True)
class JobNeed:
    """One job's memory on its device, in bytes."""

    context: int
    model: int
    data: int

    @property
    def streamed(self) -> int:  # its data streamed from host memory
        return self.context + self.model

    @property
    def resident(self) -> int:  # its data on the device
        return self.context + self.model + self.data


def job_need(cfg: Any, kind: str) -> JobNeed:
    """What one job of `cfg` holds on a device of `kind` (on the CPU: its activations; the
    memory-mapped data is shared by all jobs and no context is needed)."""
    if kind == "cuda":
        return JobNeed(CUDA_CONTEXT_BYTES, estimate_peak_bytes(cfg, kind), dataset_bytes(cfg))
    return JobNeed(0, estimate_peak_bytes(cfg, kind), 0)


def _fitting(needs: Sequence[int], budget: float) -> int:
    """The largest k whose k largest needs fit in `budget` together."""
    total, k = 0, 0
    for need in sorted(needs, reverse=True):
        if total + need > budget:
            break
        total, k = total + need, k + 1
    return k


def _gb(nbytes: float) -> str:
    return f"{nbytes / GB:.1f} GB"


def _kind_of(configs: Sequence[Any]) -> str:
    return "cuda" if any(_device_kind(cfg) == "cuda" for cfg in configs) else "cpu"


def _one_job_text(need: JobNeed, cfg: Any, with_data: bool) -> str:
    data = f" + {_gb(need.data)} data" if with_data else " (data streamed from host memory)"
    return (f"{_gb(need.context)} CUDA context + {_gb(need.model)} model at batch "
            f"{_get(cfg, 'batch_size')}, eval batch {_get(cfg, 'eval_batch_size')}, "
            f"{_get(cfg, 'size')}px{data}")


def auto_jobs(configs: Sequence[Any], device_info: DeviceInfo | None = None, *,
              threads: int | None = None) -> tuple[int, str]:
    """How many of `configs` (resolved TrainConfigs of the runs still to train) to run at
    once, and one line saying why. `threads`: the plan's torch threads per job (CPU).
    Raises UsageError (one line) when not even one job fits in the GPU's free memory."""
    runs = len(configs)
    if runs == 0:
        return 1, "--jobs auto: 1 (no run to train)"
    info = device_info or probe_device(_kind_of(configs))
    if info.kind != "cuda":
        per_job = max(1, threads or 1)
        bounds = {"cores": max(1, info.cores // per_job), "runs": runs}
        if info.free_bytes is not None:
            needs = [job_need(cfg, "cpu").model for cfg in configs]
            bounds["memory"] = max(1, _fitting(needs, USABLE_FRACTION * info.free_bytes))
        k = min(bounds.values())
        why = ", ".join(f"{name} {value}" for name, value in bounds.items())
        return k, (f"--jobs auto: {k} on the CPU ({info.cores} cores, {per_job} thread(s) per "
                   f"job; bounds: {why})")

    usable = USABLE_FRACTION * (info.free_bytes or 0)
    needs = [(job_need(cfg, "cuda"), cfg) for cfg in configs]
    resident = _fitting([need.resident for need, _ in needs], usable)
    streamed = _fitting([need.streamed for need, _ in needs], usable)
    if streamed == 0:
        biggest, biggest_cfg = max(needs, key=lambda item: item[0].streamed)
        raise UsageError(f"--jobs auto: one job needs about {_gb(biggest.streamed)} of GPU "
                         f"memory ({_one_job_text(biggest, biggest_cfg, False)}) but "
                         f"{info.name} has {_gb(info.free_bytes or 0)} free; lower "
                         f"batch_size, eval_batch_size or size, or train on --device cpu")
    on_device = resident >= 1
    bounds = {"memory": resident if on_device else streamed,
              "SMs": max(1, (info.sm_count or SMS_PER_JOB) // SMS_PER_JOB),
              "cores": max(1, info.cores), "runs": runs}
    k = min(bounds.values())
    limit = min(bounds, key=lambda name: bounds[name])
    per_job = max(need.resident if on_device else need.streamed for need, _ in needs)
    data = (f"each job's data on the GPU (up to {_gb(max(need.data for need, _ in needs))})"
            if on_device else "the largest jobs' data streamed from host memory (it does "
            "not fit beside their model)")
    return k, (f"--jobs auto: {k} on {info.name}, limited by {limit} (memory allows "
               f"{bounds['memory']}: up to {_gb(per_job)} per job of {_gb(usable)} usable; "
               f"{info.sm_count} SMs // {SMS_PER_JOB}; {info.cores} cores; {runs} runs); {data}")


def check_jobs_fit(configs: Sequence[Any], k: int,
                   device_info: DeviceInfo | None = None) -> str:
    """For an explicit `--jobs k` on a GPU: one line on how they fit, or UsageError (one line:
    the memory needed and free, and the most that fit) when k jobs cannot fit even with their
    data streamed from host memory. No check on the CPU (returns "")."""
    if not configs or (device_info.kind if device_info else _kind_of(configs)) != "cuda":
        return ""
    info = device_info or probe_device("cuda")
    usable = USABLE_FRACTION * (info.free_bytes or 0)
    needs = [job_need(cfg, "cuda") for cfg in configs]
    at_once = min(k, len(configs))  # never more at once than there are runs
    top = sorted(needs, key=lambda need: need.streamed, reverse=True)[:at_once]
    streamed = sum(need.streamed for need in top)
    free = _gb(info.free_bytes or 0)
    if streamed > usable:
        most = _fitting([need.streamed for need in needs], usable)
        advice = ("train on --device cpu or lower batch_size, eval_batch_size or size"
                  if most == 0 else f"use --jobs {most}{' or fewer' if most > 1 else ''}")
        raise UsageError(f"--jobs {k}: {at_once} job(s) at once need about {_gb(streamed)} "
                         f"of GPU memory (a CUDA context and a model each, data streamed from "
                         f"host memory) but {info.name} has {free} free; {advice}")
    resident = sum(sorted((need.resident for need in needs), reverse=True)[:at_once])
    if resident > usable:
        return (f"--jobs {k}: about {_gb(streamed)} of {free} free on {info.name}, data "
                f"streamed from host memory for the largest jobs (all on the GPU would need "
                f"{_gb(resident)}; slower, not wrong)")
    return f"--jobs {k}: about {_gb(resident)} of {free} free on {info.name}, data on the GPU"


def jobs_that_fit(todo: Sequence[Any], jobs: int | str, threads: int | None, say) -> int:
    """--jobs K settled for the jobs of `todo` (resnorm.study.execution.job.Job) still to train:
    auto: as many as the device (GPU memory and SMs, or CPU cores) holds, said in a line; a K
    that cannot fit on a GPU is refused up front, in one line."""
    pending = [job.cfg for job in todo if not job.finished]
    if jobs == "auto":
        if not pending:
            return 1
        jobs, why = auto_jobs(pending, threads=threads)
        say(why)
    elif jobs > 1 and pending:
        note = check_jobs_fit(pending, jobs)
        if note:
            say(note)
    return jobs
