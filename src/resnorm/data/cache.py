"""The prepared-data cache on disk: layout, location, atomic publication, and loading.

A cache is one folder:

    manifest.json          written last; a folder without a complete manifest is not a cache
    train_images.u8        raw uint8 (N, 3, S, S), C order, memory-mapped when loaded
    train_labels.npy       int64 (N,)
    val_images.u8 ...      likewise per split ("train", "val", "test": split names, whatever
                           folder each came from: manifest `splits[name].folder`)

It is built in a hidden sibling folder and renamed into place, so a crash or kill during
`prepare` never leaves a folder that `load_cache` would accept.

Leaked images: an image of val or test with an exact or near copy in train (the manifest's
audit lists them) would be scored on what the model trained on. `PreparedData.scored()` is the
data as runs use it: those rows left out of val and test, so no score, best epoch or early
stop rests on them; `keep_leaked=True` keeps them (scores then inflated, and labelled so).
"""
from __future__ import annotations

import dataclasses
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
           "CACHE_VERSION", "read_manifest", "is_older_cache", "split_label",
           "MIN_SCORED_PER_CLASS"]

CACHE_FORMAT = "resnorm-cache"
# 2: the audit lists the leaked files per split (`audit.leaked`); 3: the validation split is
# keyed "val" (was "valid") in the manifest, its file names and the audit
CACHE_VERSION = 3
MANIFEST = "manifest.json"
# Fewest images per class a validation split must keep once its leaked images are left out:
# below this, choosing epochs (and early stopping) on it is mostly noise.
MIN_SCORED_PER_CLASS = 5


@dataclass
class SplitData:
    """One split: `images` uint8 (N, 3, S, S) memory-mapped, `labels` int64 (N,), the source
    file of each row relative to the dataset root (its folder's name: 'valid/Hoopoe/0001.jpg'
    in split "val"), and which rows have an exact or near copy in train (`leaked`; all False
    for train). `left_out`: leaked rows that `without_leaked` removed."""

    images: np.ndarray
    labels: np.ndarray
    files: list[str]
    leaked: np.ndarray | None = None
    left_out: int = 0

    def __post_init__(self) -> None:
        if self.leaked is None:
            self.leaked = np.zeros(len(self.labels), dtype=bool)

    def __len__(self) -> int:
        return len(self.labels)

    def without_leaked(self) -> "SplitData":
        """The split without its leaked rows (the kept rows are read into memory)."""
        if not self.leaked.any():
            return self
        keep = np.flatnonzero(~self.leaked)
        return SplitData(np.ascontiguousarray(self.images[keep]), self.labels[keep],
                         [self.files[i] for i in keep], np.zeros(len(keep), dtype=bool),
                         self.left_out + int(self.leaked.sum()))


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

    def scored(self, keep_leaked: bool = False) -> "PreparedData":
        """The data as runs score it: val and test without their leaked images, unless
        `keep_leaked`. Raises UsageError when val keeps too few images per class to choose
        epochs on (MIN_SCORED_PER_CLASS), saying what to do instead."""
        if keep_leaked:
            return self
        splits = {name: split if name == "train" else split.without_leaked()
                  for name, split in self.splits.items()}
        short = _short_classes(self.splits["val"], splits["val"], self.classes) \
            if "val" in splits else []
        if short:
            left_out = splits["val"].left_out
            raise UsageError(
                f"{split_label(self.manifest, 'val')} keeps fewer than {MIN_SCORED_PER_CLASS} "
                f"images without a copy in train for {len(short)} of {len(self.classes)} "
                f"classes (e.g. {short[0]}; {left_out:,} of "
                f"{left_out + len(splits['val']):,} are copies), too few to choose epochs on: "
                "prepare the dataset without val/ so that test/ serves as the validation split, "
                "or keep the copies with --keep-leaked (scores then inflated)")
        return dataclasses.replace(self, splits=splits)

    def split_counts(self) -> dict[str, dict[str, int]]:
        """Per evaluated split ('val', 'test'): images in the split, images scored, images with
        a copy in train (left out, or kept and scored)."""
        out = {}
        for name, split in self.splits.items():
            if name != "train":
                out[name] = {
                    "images": len(split) + split.left_out, "scored": len(split),
                    "leaked": split.left_out + int(split.leaked.sum())}
        return out


    def leak_note(self) -> str | None:
        """One line on the images of val and test that have a copy in train and what runs do
        with them (this data as `scored` returned it), or None when there are none."""
        counts = {s: c for s, c in self.split_counts().items() if c["leaked"]}
        if not counts:
            return None
        parts = " and ".join(f"{c['leaked']:,} of {c['images']:,} {s}" for s, c in counts.items())
        if all(c["scored"] == c["images"] for c in counts.values()):
            return (f"{parts} images have an exact or near copy in train and are KEPT "
                    "(--keep-leaked): their scores are inflated")
        return (f"{parts} images have an exact or near copy in train: left out of every score "
                "and of choosing epochs (--keep-leaked keeps them)")


def _short_classes(before: SplitData, after: SplitData, classes: list[str]) -> list[str]:
    """Classes that leaving out the leaked images took below MIN_SCORED_PER_CLASS (a split
    that was small to begin with is the user's choice, not a leak)."""
    kept = np.bincount(after.labels, minlength=len(classes))
    lost = np.bincount(before.labels[before.leaked], minlength=len(classes))
    return [c for c, k, n in zip(classes, kept, lost) if n and k < MIN_SCORED_PER_CLASS]


def split_label(manifest: dict, split: str) -> str:
    """How reports and messages name a split: its name, and for val the folder it came from
    when that is test/ ('val (folder test/)': test/ is the validation split)."""
    if split != "val":
        return split
    folder = (manifest.get("splits", {}).get(split) or {}).get("folder")
    return "val (folder test/)" if folder == "test" else "val"


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


def is_older_cache(path: Path) -> bool:
    """Whether `path` holds a cache written by an older resnorm (rebuilt, never refused)."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(manifest, dict) and manifest.get("format") == CACHE_FORMAT
            and isinstance(manifest.get("version"), int) and manifest["version"] < CACHE_VERSION)


def load_cache(path: str | os.PathLike) -> PreparedData:
    """Open a cache written by `prepare`; images stay on disk, memory-mapped read-only."""
    path = Path(path).expanduser()
    manifest = read_manifest(path)
    if manifest is None and is_older_cache(path):
        raise UsageError(f"{path} is a cache made by an older resnorm; run `resnorm prepare` "
                         f"on the dataset again (or point --data at the dataset)")
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
        files = [row[0] for row in manifest["sources"][name]]
        leaked = set(manifest["audit"]["leaked"].get(name, []))
        splits[name] = SplitData(images, labels, files,
                                 np.array([f in leaked for f in files], dtype=bool))
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
