"""Batches straight from a uint8 image tensor on the device (the airbench way).

No worker processes and no per-epoch decoding: the whole split sits on the device as uint8
(or, when it does not fit, in host memory and is copied per batch), and shuffling, float
conversion, normalisation and augmentation are batched tensor ops on the device.

Determinism: the order and augmentation of epoch e depend only on (seed, epoch, rank) and are
drawn on the CPU, so the same batches come out on any device and after a resume.

Last batch: with drop_last=True (training) the trailing partial batch is dropped, so every
batch has exactly batch_size images and BN never sees a batch of one; with drop_last=False
(evaluation) every image is yielded once, in order, the last batch possibly smaller.
"""
from __future__ import annotations

import math
import warnings
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from resnorm.errors import UsageError

__all__ = ["BatchStream", "random_crop_flip", "PAD_MODES"]

PAD_MODES = ("reflect", "zeros")
_DEVICE_MEMORY_FRACTION = 0.6  # at most this share of the free GPU memory goes to one split
_COPY_ROWS = 1024              # rows per host-to-device copy while uploading a split


class BatchStream:
    """Iterate over (x float32 (B, 3, S, S) normalised, y int64 (B,)) batches on `device`.

    `images` is uint8 (N, 3, S, S), a numpy array (a memmap is fine) or a torch tensor;
    `labels` is integer (N,). Call `set_epoch(e)` before each epoch. With `world_size > 1`
    each rank gets a disjoint share of each epoch's permutation and the same number of batches
    (evaluation pads the order by wrapping around, like torch's DistributedSampler).
    Augmentation: random S x S crop of the image padded by S // 8 on each side (reflect, or
    zeros = black pixels as in torchvision's RandomCrop) and a horizontal flip, p = 0.5.
    """

    def __init__(self, images, labels, batch_size: int, *, device, mean: Sequence[float],
                 std: Sequence[float], shuffle: bool = False, augment: bool = False,
                 seed: int = 0, drop_last: bool = False, rank: int = 0, world_size: int = 1,
                 channels_last: bool = False, pad_mode: str = "reflect") -> None:
        images, labels = _as_tensor(images, torch.uint8, "images"), _as_labels(labels)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, S, S) uint8, got {tuple(images.shape)}")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if not (0 <= rank < world_size):
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, "
                             f"world_size={world_size}")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = _resolve(torch.device(device))
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.seed, self.drop_last, self.rank, self.world_size = seed, drop_last, rank, world_size
        self.channels_last, self.pad_mode = channels_last, pad_mode
        self.pad = images.shape[-1] // 8
        self.epoch = 0

        self.images = _place(images, self.device)
        self.labels = labels.to(self.device)
        # x_normalised = (x_uint8 - 255 mean) / (255 std) = x_uint8 * inv_scale + bias
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        if mean_t.numel() != 3 or (std_t <= 0).any():
            raise ValueError(f"mean and std need 3 values each, std > 0; got {mean}, {std}")
        self._inv_scale = (1.0 / (255.0 * std_t)).to(self.device)
        self._bias = (-mean_t / std_t).to(self.device)

        n = len(self.labels)
        per_rank = n // world_size if drop_last else math.ceil(n / world_size)
        self.num_batches = per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)
        self.num_samples = min(per_rank, self.num_batches * batch_size)
        if drop_last and self.num_batches == 0:
            raise UsageError(f"{n} images are fewer than one batch of {batch_size}"
                             f"{f' per rank of {world_size}' if world_size > 1 else ''}; "
                             f"use a smaller batch size")

    @property
    def on_device(self) -> bool:
        """True when the whole split lives on `device` (no per-batch host copies)."""
        return self.images.device == self.device

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration produces."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self._order()
        gen = _generator(self.seed, self.epoch, self.rank, purpose=1)
        for b in range(self.num_batches):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = self._gather(idx)
            y = self.labels[idx.to(self.labels.device)]
            if self.augment:
                x = self._augment(x, gen)
            x = torch.addcmul(self._bias, x.float(), self._inv_scale)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y

    def _order(self) -> Tensor:
        """This rank's indices for the current epoch (CPU, int64)."""
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=_generator(self.seed, self.epoch, 0, purpose=0))
        else:
            order = torch.arange(n)
        if self.drop_last:
            order = order[:(n // self.world_size) * self.world_size]
        elif len(order) % self.world_size:
            extra = self.world_size - len(order) % self.world_size
            order = torch.cat([order, order.repeat(math.ceil(extra / n))[:extra]])
        return order[self.rank::self.world_size][:self.num_samples]

    def _gather(self, idx: Tensor) -> Tensor:
        if self.on_device:
            return self.images[idx.to(self.device, non_blocking=True)]
        batch = self.images[idx]  # gathered on the host (reads the memmap pages it needs)
        if self.device.type == "cuda":
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch.to(self.device)

    def _augment(self, x: Tensor, gen: torch.Generator) -> Tensor:
        n = len(x)
        offsets = torch.randint(0, 2 * self.pad + 1, (n, 2), generator=gen)
        flips = torch.rand(n, generator=gen) < 0.5
        return random_crop_flip(x, offsets.to(x.device, non_blocking=True),
                                flips.to(x.device, non_blocking=True), self.pad, self.pad_mode)


def random_crop_flip(x: Tensor, offsets: Tensor, flips: Tensor, pad: int,
                     pad_mode: str = "reflect") -> Tensor:
    """Crop image i of `x` at (dy, dx) = offsets[i] from its `pad`-padded version, mirrored
    where flips[i]; any dtype (uint8 here, so it moves 4x fewer bytes than on floats).

    The padding is never built: each output pixel's source index is computed (reflected at
    the border, or marked outside for zero padding) and one gather does the whole batch, with
    the flip folded into the column index."""
    b, c, h, w = x.shape
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = offsets[:, 0:1] - pad + ar_h                                           # (B, H)
    cols = offsets[:, 1:2] - pad + torch.where(flips[:, None], w - 1 - ar_w, ar_w)  # (B, W)
    index = _reflect(rows, h)[:, :, None] * w + _reflect(cols, w)[:, None, :]     # (B, H, W)
    out = x.reshape(b, c, h * w).gather(2, index.view(b, 1, h * w).expand(b, c, h * w))
    out = out.view(b, c, h, w)
    if pad_mode == "zeros":
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        out = out.masked_fill(~inside[:, None], 0)
    return out


def _reflect(index: Tensor, n: int) -> Tensor:
    """Map indices in [-n+1, 2n-2] into [0, n-1] as F.pad(mode="reflect") does."""
    index = index.abs()
    return torch.where(index > n - 1, 2 * (n - 1) - index, index)


def _generator(seed: int, epoch: int, rank: int, purpose: int) -> torch.Generator:
    """A CPU generator for (seed, epoch, rank, purpose): independent streams, same on every
    device. `purpose` 0 = permutation (shared by all ranks), 1 = augmentation."""
    words = [seed, epoch, purpose] + ([rank] if purpose else [])
    state = np.random.SeedSequence(words).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _as_tensor(array, dtype: torch.dtype, name: str) -> Tensor:
    if isinstance(array, Tensor):
        tensor = array
    else:
        array = np.asarray(array)
        with warnings.catch_warnings():  # read-only memmaps: we never write to them
            warnings.filterwarnings("ignore", message=".*not writable.*")
            tensor = torch.from_numpy(array)
    if tensor.dtype != dtype:
        raise ValueError(f"{name} must be {dtype}, got {tensor.dtype}")
    return tensor


def _as_labels(labels) -> Tensor:
    if isinstance(labels, Tensor):
        return labels.long()
    return torch.from_numpy(np.asarray(labels).astype(np.int64, copy=False))


def _resolve(device: torch.device) -> torch.device:
    """'cuda' -> 'cuda:<current>', so that it compares equal to a tensor's device."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _place(images: Tensor, device: torch.device) -> Tensor:
    """The split on `device` if it fits there; otherwise left in host memory."""
    if images.device == device:
        return images  # on CPU: no copy at all, a memmap is used in place
    if device.type == "cpu":
        return images.cpu()
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if images.nbytes > _DEVICE_MEMORY_FRACTION * free:
            return images
    try:
        placed = torch.empty(images.shape, dtype=images.dtype, device=device)
    except RuntimeError:  # out of memory (torch.OutOfMemoryError is a RuntimeError)
        return images
    for start in range(0, len(images), _COPY_ROWS):  # chunks: no full-size host copy
        placed[start:start + _COPY_ROWS].copy_(images[start:start + _COPY_ROWS])
    return placed
