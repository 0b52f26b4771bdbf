"""Decode an image-folder dataset once into a uint8 cache, with a manifest and an audit.

Every image is decoded once, in parallel over the CPU cores, straight into a memory-mapped
(N, 3, S, S) uint8 file per split; training then reads tensors, never JPEGs. Bad files are
skipped and listed in the manifest with the reason; exact and near duplicates are counted.
Re-running on an unchanged dataset reuses the cache after one `stat` per file.

Faults end the command with one line and leave nothing a later `prepare` would trust (the
unfinished folder is removed; the manifest, which marks a folder complete, is written last):
too little free space is found before decoding starts; the image files are reserved on disk
up front (fallocate), so a disk that fills up anyway fails in the parent as ENOSPC rather
than as SIGBUS in a worker; a worker that dies (killed for memory, a signal) is noticed at
once, because the pool is a `ProcessPoolExecutor`, which fails its futures when a worker
disappears (`multiprocessing.Pool` replaces the worker and waits forever for its task).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import shutil
import time
from pathlib import Path

import numpy as np

from resnorm import __version__
from resnorm.data.audit import audit, corner_audit
from resnorm.data.cache import (CACHE_FORMAT, CACHE_VERSION, MANIFEST, default_cache_dir,
                                is_older_cache, publish, read_manifest, staging_dir,
                                write_json_atomic)
from resnorm.data.console import counts_text, print_summary, silent
from resnorm.data.decode import MAX_PIXELS, RESIZE_MODES, Decoded
from resnorm.data.decode_pool import decode_all, free_text
from resnorm.data.folders import Layout, discover
from resnorm.errors import DiskFullError, UsageError
from resnorm.fileio import format_bytes, free_bytes, is_disk_full, nearest_existing

__all__ = ["prepare", "configure_parser", "run_cli"]

SYNTHETIC_MARKER = "SYNTHETIC.txt"
MIN_FILES_PER_WORKER = 32  # below this a worker process costs more than it saves
# Free space asked for beyond the cache's own size (file-system blocks, the manifest's temp
# copy, other writers): 1 MiB plus 1 %.
SPACE_MARGIN_BYTES = 1 << 20
SPACE_MARGIN_FRACTION = 0.01


def prepare(root: str | os.PathLike, size: int = 256, out: str | os.PathLike | None = None,
            resize: str = "squash", workers: int | None = None, progress: bool = True, *,
            force: bool = False, max_pixels: int = MAX_PIXELS) -> Path:
    """Build (or reuse) the cache of dataset `root` at `size` x `size`; return its folder.

    `out=None` puts it under $RESNORM_CACHE (default ~/.cache/resnorm), keyed by the absolute
    root, size and resize mode. An existing cache is reused when its parameters match and the
    files are unchanged (same paths, sizes and mtimes; failing that, same content hashes);
    `force=True` rebuilds regardless. `progress` prints a progress bar and a summary.
    """
    if not isinstance(size, int) or size < 8 or size % 4:
        raise UsageError(f"size must be an integer >= 8 divisible by 4, got {size!r}")
    if resize not in RESIZE_MODES:
        raise UsageError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    layout = discover(root)
    out = Path(out).expanduser() if out is not None else default_cache_dir(layout.root, size,
                                                                         resize)
    params = {"size": size, "resize": resize, "max_pixels": int(max_pixels)}
    say = print if progress else silent

    existing = read_manifest(out)
    if existing is None and out.exists() and (not out.is_dir() or any(out.iterdir())) \
            and not is_older_cache(out):
        raise UsageError(f"{out} exists and is not a resnorm cache; refusing to overwrite it")
    fingerprint = layout.fingerprint()
    if existing is not None and not force and _reusable(existing, out, layout, params,
                                                        fingerprint):
        say(f"prepare: reusing {out} ({counts_text(existing)}; inputs unchanged)")
        return out

    manifest = _build(layout, out, params, fingerprint, _worker_count(workers, layout), progress)
    print_summary(manifest, out, say)
    return out


# --- reuse --------------------------------------------------------------------------------

def _reusable(manifest: dict, out: Path, layout: Layout, params: dict, fingerprint: str) -> bool:
    if manifest.get("params") != params or manifest.get("classes") != layout.classes:
        return False
    if not _image_files_complete(manifest, out):
        return False
    if manifest.get("fingerprint") == fingerprint and manifest.get("root") == str(layout.root):
        return True
    # Sizes or mtimes changed (a copy, a touch, a moved folder): compare contents before
    # deciding to decode everything again, and remember the new fingerprint.
    if _recorded_hashes(manifest) != _current_hashes(layout):
        return False
    manifest.update(fingerprint=fingerprint, root=str(layout.root))
    write_json_atomic(out / MANIFEST, manifest)
    return True


def _image_files_complete(manifest: dict, out: Path) -> bool:
    size = manifest["params"]["size"]
    for info in manifest["splits"].values():
        path = out / info["images"]
        if not path.is_file() or path.stat().st_size != info["count"] * 3 * size * size:
            return False
        if not (out / info["labels"]).is_file():
            return False
    return True


def _recorded_hashes(manifest: dict) -> dict[str, str | None]:
    recorded = {f: sha for rows in manifest["sources"].values() for f, sha in rows}
    recorded.update({s["file"]: s["sha256"] for s in manifest["skipped"]})
    return recorded


def _current_hashes(layout: Layout) -> dict[str, str | None]:
    hashes = {}
    for _, path, _ in layout.files():
        try:
            hashes[layout.relpath(path)] = _sha256_file(path)
        except OSError:
            hashes[layout.relpath(path)] = None
    return hashes


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- build --------------------------------------------------------------------------------

def _worker_count(workers: int | None, layout: Layout) -> int:
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count() or 1
    if workers < 1:
        raise UsageError(f"workers must be >= 1, got {workers}")
    total = sum(len(items) for items in layout.splits.values())
    return max(1, min(workers, total // MIN_FILES_PER_WORKER))


def cache_bytes(layout: Layout, size: int) -> int:
    """The bytes the cache of `layout` at `size` takes on disk, estimated on the high side
    before decoding: the image rows (N x 3 x S x S; skipped files only make it smaller), the
    labels, and the manifest (a source path and hash per file, the audit)."""
    total = 0
    for items in layout.splits.values():
        total += len(items) * (3 * size * size + 8) + 4096  # images + int64 labels (+ header)
        total += sum(2 * (len(layout.relpath(path)) + 96) for path, _ in items)  # manifest
    return total + 64 * 1024


def _check_space(layout: Layout, out: Path, size: int) -> int:
    """The bytes the cache needs; UsageError when its file system has less free (one line)."""
    need = cache_bytes(layout, size)
    need += int(need * SPACE_MARGIN_FRACTION) + SPACE_MARGIN_BYTES
    free = free_bytes(out.parent)
    if free is not None and free < need:
        raise UsageError(f"not enough disk space for the cache: it needs {format_bytes(need)} "
                         f"({sum(len(i) for i in layout.splits.values()):,} images at "
                         f"{size}x{size}), {format_bytes(free)} is free on the file system of "
                         f"{nearest_existing(out.parent)}; put the cache elsewhere (--out, "
                         f"--cache or $RESNORM_CACHE) or free some space")
    return need


def _build(layout: Layout, out: Path, params: dict, fingerprint: str, workers: int,
           progress: bool) -> dict:
    start = time.perf_counter()
    need = _check_space(layout, out, params["size"])
    staging = staging_dir(out)
    try:
        files = {split: [layout.relpath(p) for p, _ in items]
                 for split, items in layout.splits.items()}
        results = decode_all(layout, staging, params, workers, progress, out)
        decode_seconds = time.perf_counter() - start
        manifest = _assemble(layout, staging, params, files, results)
        manifest["fingerprint"] = fingerprint
        manifest["seconds"] = {"decode": round(decode_seconds, 2),
                               "total": round(time.perf_counter() - start, 2)}
        manifest["workers"] = workers
        write_json_atomic(staging / MANIFEST, manifest)  # last: it marks the folder complete
        publish(staging, out)
    except BaseException as exc:  # interrupted or failed: leave nothing behind
        shutil.rmtree(staging, ignore_errors=True)
        if is_disk_full(exc):
            raise DiskFullError(f"the disk filled up while writing the cache {out}: "
                                f"{free_text(out)} (it needs about {format_bytes(need)}); "
                                f"the unfinished cache was removed") from exc
        raise
    return manifest


def _assemble(layout: Layout, staging: Path, params: dict, files: dict[str, list[str]],
              results: dict[str, list]) -> dict:
    """Compact the image files over skipped rows, save labels, compute stats and the audit."""
    size = params["size"]
    manifest = {
        "format": CACHE_FORMAT, "version": CACHE_VERSION, "resnorm_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "root": str(layout.root), "params": params, "classes": layout.classes,
        **_synthetic_info(layout.root),
        "splits": {}, "counts": {}, "sources": {}, "skipped": [],
        "ignored": [layout.relpath(p) for p in layout.ignored],
    }
    used: list[tuple[str, str, Decoded]] = []  # (split, file, image) of every decoded image
    for split, items in layout.splits.items():
        outcomes = results[split]
        kept = [i for i, r in enumerate(outcomes) if isinstance(r, Decoded)]
        manifest["skipped"] += [{"file": files[split][i], "reason": r.reason, "sha256": r.sha256}
                                for i, r in enumerate(outcomes) if not isinstance(r, Decoded)]
        if not kept:
            raise UsageError(f"no usable image in {split}: all {len(items)} files were skipped "
                             f"(first: {files[split][0]}: {outcomes[0].reason})")
        _compact(staging / f"{split}_images.u8", kept, 3 * size * size)
        labels = np.array([items[i][1] for i in kept], dtype=np.int64)
        np.save(staging / f"{split}_labels.npy", labels)
        counts = np.bincount(labels, minlength=len(layout.classes))
        manifest["splits"][split] = {"count": len(kept), "images": f"{split}_images.u8",
                                     "labels": f"{split}_labels.npy",
                                     "folder": layout.split_dirs[split].name}
        manifest["counts"][split] = dict(zip(layout.classes, counts.tolist()))
        manifest["sources"][split] = [[files[split][i], outcomes[i].sha256] for i in kept]
        used += [(split, files[split][i], outcomes[i]) for i in kept]
    manifest["mean"], manifest["std"] = _channel_stats(
        [d for d in results["train"] if isinstance(d, Decoded)], size)
    manifest["audit"] = audit([f for _, f, _ in used], [s for s, _, _ in used],
                              [d.sha256 for *_, d in used], [d.dhash for *_, d in used],
                              np.stack([d.thumb for *_, d in used]))
    manifest["audit"]["black_corners"] = corner_audit(
        {split: np.memmap(staging / f"{split}_images.u8", dtype=np.uint8, mode="r").reshape(
            -1, 3, size, size) for split in manifest["splits"]})
    return manifest


def _compact(path: Path, kept: list[int], row_bytes: int) -> None:
    """Move the kept rows to the front (in order) and cut the file to their length."""
    if kept != list(range(len(kept))):
        rows = np.memmap(path, dtype=np.uint8, mode="r+").reshape(-1, row_bytes)
        for dst, src in enumerate(kept):
            if dst != src:
                rows[dst] = rows[src]
        rows.flush()
        del rows
    with open(path, "r+b") as f:
        f.truncate(len(kept) * row_bytes)
        os.fsync(f.fileno())


def _channel_stats(decoded: list[Decoded], size: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of train pixels in [0, 1], from exact integer sums."""
    count = len(decoded) * size * size
    total = np.sum([d.channel_sum for d in decoded], axis=0, dtype=np.float64)
    total_sq = np.sum([d.channel_sumsq for d in decoded], axis=0, dtype=np.float64)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return [round(float(m) / 255, 6) for m in mean], [round(float(s) / 255, 6) for s in std]


def _synthetic_info(root: Path) -> dict:
    marker = root / SYNTHETIC_MARKER
    if not marker.is_file():
        return {"synthetic": False}
    return {"synthetic": True, "synthetic_marker": marker.read_text(errors="replace")}


# --- command line -------------------------------------------------------------------------

def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA", help="dataset root with train/<Class>/* and "
                        "valid/<Class>/* (val/ and test/ also accepted)")
    parser.add_argument("--size", type=int, default=256, help="image side S (default 256)")
    parser.add_argument("--out", metavar="CACHE", default=None,
                        help="cache folder (default: $RESNORM_CACHE or ~/.cache/resnorm, "
                        "keyed by root, size and resize mode)")
    parser.add_argument("--resize", choices=RESIZE_MODES, default="squash",
                        help="squash: whole image to SxS (default); crop: keep the aspect "
                        "ratio, centre crop")
    parser.add_argument("--workers", type=int, default=None,
                        help="decode processes (default: all CPU cores)")
    parser.add_argument("--force", action="store_true", help="rebuild even if unchanged")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    parser.epilog = (
        "example:\n"
        "  resnorm prepare data/birds --size 256 --out cache/birds-256\n\n"
        "Writes <split>_images.u8 (uint8 N x 3 x S x S), <split>_labels.npy and manifest.json\n"
        "(classes, counts, train mean/std, source file + sha256 per row, skipped files with\n"
        "the reason, duplicate audit). Unusable files are skipped, listed, and do not fail\n"
        "the command. Re-running with unchanged inputs reuses the cache."
    )


def run_cli(args: argparse.Namespace) -> int:
    out = prepare(args.data, size=args.size, out=args.out, resize=args.resize,
                  workers=args.workers, progress=not args.quiet, force=args.force)
    print(out)
    return 0
