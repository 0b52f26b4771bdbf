"""Distributed training support: the torchrun environment, a differentiable all-reduce for
cross-process batch statistics, metric reduction, and the study's shard assignment.

A process launched by `torchrun --nproc_per_node=N -m resnorm train ...` finds RANK,
WORLD_SIZE and LOCAL_RANK in its environment; `init_from_env` starts the process group
(nccl on CUDA, gloo on CPU). Without those variables everything here is a no-op, so the
single-process path never touches torch.distributed.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["DistInfo", "init_from_env", "launched_world_size", "shutdown", "is_distributed",
           "is_main_process",
           "barrier", "in_turn", "broadcast_buffers_", "all_reduce_sum", "all_reduce_min",
           "differentiable_all_reduce_sum", "sync_batch_mean_var", "shard_indices",
           "contiguous_shard", "parse_shard"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and prints progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def launched_world_size() -> int:
    """The number of processes torchrun started (WORLD_SIZE), 1 outside torchrun.

    Settings that depend on the global batch (the default recipe's lr) read this before any
    process group exists, e.g. when a study checks every run's config up front.
    """
    return max(1, _env_int("WORLD_SIZE", 1))


def init_from_env(device_type: str) -> DistInfo:
    """Join the process group torchrun describes in the environment, if any.

    `device_type` is "cuda" or "cpu" (anything but cuda uses gloo). On CUDA each process
    takes the GPU of its LOCAL_RANK. Idempotent: a study trains several runs in one process,
    all in the one group, which the process leaves when it exits.
    """
    world_size = launched_world_size()
    if world_size <= 1:
        return DistInfo()
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if dist.is_initialized():
        if dist.get_backend() != backend:
            raise RuntimeError(f"the process group uses {dist.get_backend()}, but {device_type} "
                               f"training needs {backend}")
    else:
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        atexit.register(shutdown)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    """True outside a process group and on rank 0: the process that prints results."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has written a checkpoint the others read)."""
    if is_distributed():
        dist.barrier()


T = TypeVar("T")


def in_turn(info: DistInfo, build: Callable[[], T]) -> T:
    """Run `build` (which makes files or reuses them, e.g. the prepared data) on every process,
    never on two processes of one machine at once: rank 0 first, then the first process of
    every other machine (which reuses rank 0's files on a shared filesystem, or makes its own),
    then all the others, which find the files made. Without a process group: just `build()`."""
    if not info.enabled:
        return build()
    result, done = None, False
    for turn in (info.is_main, info.local_rank == 0 and not info.is_main):
        if turn:
            result, done = build(), True
        barrier()
    return result if done else build()


@torch.no_grad()
def broadcast_buffers_(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s buffers (BN running statistics) to every rank, in place.

    Without synced statistics each rank's running statistics follow its own batches; the
    model that is evaluated and saved is rank 0's, on every rank (as DDP's broadcast_buffers
    does at the start of each training forward).
    """
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer, src)


@torch.no_grad()
def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum a metric tensor (loss sums, counts, confusion matrix) over ranks, in place."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


@torch.no_grad()
def all_reduce_min(tensor: Tensor) -> Tensor:
    """The minimum over ranks, in place (e.g. the first step any rank saw a non-finite loss)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor


class _AllReduceSum(torch.autograd.Function):
    """y = sum over ranks of x, on every rank.

    Every rank's loss depends on y, so the gradient reaching x on one rank is the sum over
    ranks of the upstream gradients: the backward is an all-reduce too.
    """

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def differentiable_all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum over ranks with gradients flowing back to every rank's contribution."""
    return _AllReduceSum.apply(tensor) if is_distributed() else tensor


def sync_batch_mean_var(x: Tensor) -> tuple[Tensor, Tensor, int]:
    """Per-channel mean and biased variance of x over (N, H, W) of every rank's batch.

    Two reductions (the mean first, then squared deviations from it) rather than one pass of
    sums and sums of squares: E[x^2] - E[x]^2 cancels badly in float32 for large means.
    Ranks may hold batches of different sizes; the counts are summed too. Returns the global
    element count per channel as an int, for the unbiased running variance.
    """
    n, c, h, w = x.shape
    local_count = torch.tensor([float(n * h * w)], dtype=x.dtype, device=x.device)
    sums = differentiable_all_reduce_sum(torch.cat([x.sum(dim=(0, 2, 3)), local_count]))
    count = sums[-1]
    mean = sums[:-1] / count
    squares = (x - mean.view(1, c, 1, 1)).square().sum(dim=(0, 2, 3))
    var = differentiable_all_reduce_sum(squares) / count
    total = int(count.item())
    if total == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {list(x.shape)}"
        )
    return mean, var, total


def parse_shard(text: str) -> tuple[int, int]:
    """Parse a `--shard i/k` value (0 <= i < k)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like i/k (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {text!r}: need k >= 1 and 0 <= i < k")
    return index, count


def contiguous_shard(num_items: int, index: int, count: int) -> tuple[int, int]:
    """Rows [start, stop) of shard `index` of `count` contiguous blocks: every item in exactly
    one block, sizes differing by at most one. Evaluation shards a split this way (no padding,
    so metrics summed over ranks count each image once; a slice of a memmap is no copy)."""
    return num_items * index // count, num_items * (index + 1) // count


def shard_indices(num_items: int, index: int, count: int) -> list[int]:
    """The items of shard `index` of `count`: round-robin over the plan's order, so every
    item lands in exactly one shard, shards differ in size by at most one, and the split
    depends only on the plan."""
    return list(range(index, num_items, count))
