"""The prepared-data cache on disk: layout, location, atomic publication, and loading.

A cache is one folder:

    manifest.json          written last; a folder without a complete manifest is not a cache
    train_images.u8        raw uint8 (N, 3, S, S), C order, memory-mapped when loaded
    train_labels.npy       int64 (N,)
    valid_images.u8 ...    likewise per split

It is built in a hidden sibling folder and renamed into place, so a crash or kill during
`prepare` never leaves a folder that `load_cache` would accept.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnorm.errors import UsageError
from resnorm.fileio import atomic_write_text

__all__ = ["PreparedData", "SplitData", "load_cache", "default_cache_dir", "CACHE_FORMAT",
           "CACHE_VERSION", "read_manifest"]

CACHE_FORMAT = "resnorm-cache"
CACHE_VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class SplitData:
    """One split: `images` uint8 (N, 3, S, S) memory-mapped, `labels` int64 (N,), and the
    source file of each row relative to the dataset root ('valid/Hoopoe/0001.jpg')."""

    images: np.ndarray
    labels: np.ndarray
    files: list[str]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class PreparedData:
    """A loaded cache. `mean`/`std` are per-channel statistics of the train pixels in [0, 1]."""

    path: Path
    root: Path
    classes: list[str]
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    splits: dict[str, SplitData]
    manifest: dict
    is_synthetic: bool

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def default_cache_dir(root: Path, size: int, resize: str) -> Path:
    """$RESNORM_CACHE (or ~/.cache/resnorm) / <root name>-<hash of absolute root>-<size>-<mode>."""
    base = Path(os.environ.get("RESNORM_CACHE") or Path.home() / ".cache" / "resnorm")
    key = hashlib.sha256(str(Path(root).absolute()).encode()).hexdigest()[:10]
    return base.expanduser() / f"{Path(root).name}-{key}-{size}-{resize}"


def read_manifest(path: Path) -> dict | None:
    """The manifest of a complete cache at `path`, or None if there is none (or it is not ours)."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("format") != CACHE_FORMAT or manifest.get("version") != CACHE_VERSION:
        return None
    return manifest


def load_cache(path: str | os.PathLike) -> PreparedData:
    """Open a cache written by `prepare`; images stay on disk, memory-mapped read-only."""
    path = Path(path).expanduser()
    manifest = read_manifest(path)
    if manifest is None:
        raise UsageError(f"{path} is not a complete resnorm cache (no valid {MANIFEST}); "
                         f"run `resnorm prepare` first")
    size = manifest["params"]["size"]
    splits = {}
    for name, info in manifest["splits"].items():
        n = info["count"]
        images_path, labels_path = path / info["images"], path / info["labels"]
        expected = n * 3 * size * size
        if not images_path.is_file() or images_path.stat().st_size != expected:
            raise UsageError(f"{images_path} is missing or has the wrong size "
                             f"(expected {expected:,} bytes); rebuild with `resnorm prepare`")
        images = (np.memmap(images_path, dtype=np.uint8, mode="r", shape=(n, 3, size, size))
                  if n else np.zeros((0, 3, size, size), np.uint8))
        labels = np.load(labels_path)
        splits[name] = SplitData(images, labels, [row[0] for row in manifest["sources"][name]])
    return PreparedData(
        path=path, root=Path(manifest["root"]), classes=list(manifest["classes"]), size=size,
        mean=tuple(manifest["mean"]), std=tuple(manifest["std"]), splits=splits,
        manifest=manifest, is_synthetic=bool(manifest.get("synthetic")),
    )


# --- atomic publication ------------------------------------------------------------------

def staging_dir(out: Path) -> Path:
    """A fresh hidden folder beside `out` (same filesystem, so the final rename is atomic)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))


def publish(staging: Path, out: Path) -> None:
    """Replace `out` with the complete folder `staging`.

    `out` never holds a mix of old and new files: the old folder is renamed away first, and a
    reader that looks in the instant between the two renames finds no cache (and rebuilds)."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json_atomic(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))


def _remove_stale_staging(out: Path) -> None:
    """Delete leftovers of killed runs (their process is gone) for this `out`."""
    for leftover in out.parent.glob(f".{glob.escape(out.name)}.*-*"):
        parts = leftover.name[len(out.name) + 2:].split("-")
        if len(parts) >= 2 and parts[0] in ("tmp", "old") and parts[1].isdigit() \
                and not _alive(int(parts[1])):
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers from an earlier, interrupted call
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
