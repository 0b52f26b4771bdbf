"""Data pipeline speed, measured side by side on one folder of photo-sized JPEGs.

1. Decoding the dataset once: `resnorm prepare` (Pillow draft mode + worker processes)
   against plain Pillow decode + resize (`Image.open(p).convert("RGB").resize((S, S))`),
   both in one process and over the same number of processes.
2. One training epoch of batches, no model: `BatchStream` (uint8 split on the device,
   augmentation as tensor ops) against torchvision `ImageFolder` + `DataLoader` (PIL decode +
   Resize + RandomCrop + flip + ToTensor + Normalize every epoch, workers = cores). Both are
   timed on their second epoch (DataLoader workers persistent, so no start-up cost counted).

Prints times and ratios; copy them to benchmarks/RESULTS.md with the machine, date and command.

    python benchmarks/data_pipeline.py                        # 400 images, S=256, auto device
    python benchmarks/data_pipeline.py --images 2000 --device cuda
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from resnorm.data import BatchStream, load_cache, prepare
from resnorm.data.synth import SPECIES, render_image


def make_photos(root: Path, n: int, side: tuple[int, int], classes: int = 5) -> None:
    """n photo-sized JPEGs (80 % train, 20 % valid) drawn by the synthetic generator."""
    names = sorted(SPECIES)[:classes]
    for k in range(n):
        name = names[k % classes]
        split = "valid" if (k // classes) % 5 == 4 else "train"
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        image, _, _ = render_image(name, split, k, seed=1, side_range=side, png_fraction=0.0)
        image.save(folder / f"{k:05d}.jpg", quality=90)


def plain_pil(path: str, size: int = 256) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


def time_plain_pil(files: list[str], size: int, workers: int) -> float:
    start = time.perf_counter()
    if workers == 1:
        for f in files:
            plain_pil(f, size)
    else:
        with multiprocessing.get_context().Pool(workers) as pool:
            pool.starmap(plain_pil, [(f, size) for f in files], chunksize=8)
    return time.perf_counter() - start


def time_prepare(root: Path, size: int, workers: int, out: Path) -> float:
    start = time.perf_counter()
    prepare(root, size=size, out=out, workers=workers, progress=False, force=True)
    return time.perf_counter() - start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_epochs(batches, device: torch.device, epochs: int = 2) -> float:
    """Seconds of the last of `epochs` epochs (the first warms up caches and workers)."""
    for epoch in range(epochs):
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(epoch)
        sync(device)
        start = time.perf_counter()
        for x, y in batches:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
        sync(device)
        elapsed = time.perf_counter() - start
    return elapsed


def imagefolder_loader(root: Path, size: int, batch_size: int, workers: int, mean, std,
                       device: torch.device):
    from torchvision import datasets, transforms
    transform = transforms.Compose([
        transforms.Resize((size, size)),
        transforms.RandomCrop(size, padding=size // 8, padding_mode="reflect"),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    dataset = datasets.ImageFolder(str(root / "train"), transform=transform)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0)


def decode_once(root: Path, cache: Path, files: list[str], size: int, workers: int) -> None:
    """1. the dataset decoded once: plain PIL against prepare, in 1 and `workers` processes."""
    n = len(files)
    print("\n1. decode the dataset once (images/s, higher is better)")
    pil_1 = time_plain_pil(files, size, 1)
    pil_n = time_plain_pil(files, size, workers)
    prep_1 = time_prepare(root, size, 1, cache)
    prep_n = time_prepare(root, size, workers, cache)
    for label, seconds in (("plain PIL, 1 process", pil_1),
                           (f"plain PIL, {workers} processes", pil_n),
                           ("prepare, 1 process", prep_1),
                           (f"prepare, {workers} processes", prep_n)):
        print(f"   {label:<28} {n / seconds:9.1f} img/s  ({seconds:.2f} s)")
    print(f"   prepare ({workers}) vs plain PIL (1):  {pil_1 / prep_n:6.2f}x")
    print(f"   prepare ({workers}) vs plain PIL ({workers}):  {pil_n / prep_n:6.2f}x"
          f"   (draft mode and less work per image; prepare also hashes, audits, writes)")
    print(f"   prepare (1) vs plain PIL (1):  {pil_1 / prep_1:6.2f}x")


def one_epoch(root: Path, cache: Path, args: argparse.Namespace, device) -> None:
    """2. one training epoch of batches: BatchStream against ImageFolder + DataLoader."""
    print(f"\n2. one training epoch, batch {args.batch_size}, augmentation on, no model")
    data = load_cache(cache)
    train = data.splits["train"]
    stream = BatchStream(train.images, train.labels, args.batch_size, device=device,
                         mean=data.mean, std=data.std, shuffle=True, augment=True, seed=0,
                         drop_last=True)
    t_stream = time_epochs(stream, device)
    loader = imagefolder_loader(root, args.size, args.batch_size, args.workers, data.mean,
                                data.std, device)
    t_loader = time_epochs(loader, device)
    images = len(stream) * args.batch_size
    print(f"   ImageFolder + DataLoader ({args.workers} workers) {t_loader:8.3f} s/epoch "
          f"({images / t_loader:9.1f} img/s)")
    print(f"   BatchStream (split on device: {stream.on_device})  {t_stream:8.4f} s/epoch "
          f"({images / t_stream:9.1f} img/s)")
    print(f"   BatchStream vs DataLoader:  {t_loader / t_stream:8.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--photo-side", type=int, nargs=2, default=(800, 1400),
                        metavar=("MIN", "MAX"), help="source image sides (default 800 1400)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: temp)")
    args = parser.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                          if args.device == "auto" else args.device)
    work = args.dir or Path(tempfile.mkdtemp(prefix="resnorm-bench-"))
    root, cache = work / "photos", work / "cache"
    print(f"machine: {platform.processor() or platform.machine()}, {args.workers} worker "
          f"processes, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"torch {torch.__version__}, Pillow {Image.__version__}, {args.images} JPEGs of "
          f"{args.photo_side[0]}-{args.photo_side[1]} px, S={args.size}")
    try:
        if not (root / "train").exists():
            make_photos(root, args.images, tuple(args.photo_side))
        files = sorted(str(p) for p in root.rglob("*.jpg"))
        for f in files:  # warm the page cache so that both sides read from memory
            Path(f).read_bytes()
        decode_once(root, cache, files, args.size, args.workers)
        one_epoch(root, cache, args, device)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
