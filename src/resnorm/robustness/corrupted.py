"""The corrupted held-out images: made once per dataset and size, shared by every run and
process, in the prepared cache's own folder.

    <cache>/corrupted/<key>/
        meta.json                     the images chosen (rows, files, labels) per split, the
                                      seed, the library and its version (written first)
        <split>-<corruption>-<severity>.u8    uint8 (N, 3, S, S), as the cache's images

`key` hashes what the images depend on: the cache's fingerprint and size, the seed, the
number of images and the library's version; a rebuilt cache replaces its whole folder, so a
stale set is never read against new images. Which images: a seeded choice of `images` rows
of the split that have no exact or near copy in train (never a leaked image, whatever the
runs' keep_leaked), in the cache's row order; all of them when there are fewer.

Many processes may ask for the same set at once (the jobs of a study, several studies on one
dataset): one makes each missing file under the set's file lock, writing it beside its final
name and renaming it into place, so a reader without the lock sees a whole file or none. A
file of the right size is complete. Corruptions are added to a set as plans ask for them.
A large set is made by `workers` processes, one (split, corruption, severity) file each at a
time (the library is single-threaded numpy); each image's seed makes the pixels the same.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnorm.data.cache import load_cache
from resnorm.errors import UsageError
from resnorm.fileio import atomic_write_text, read_json, temp_path
from resnorm.robustness.corruptions import (LIBRARY, MIN_SIZE, check_library, corrupt_image,
                                            image_seed)

__all__ = ["CORRUPTED_DIR", "SET_FORMAT", "CorruptedSet", "held_out_splits", "set_key",
           "open_set", "ensure_set"]

CORRUPTED_DIR = "corrupted"  # in the prepared cache's folder
SET_FORMAT = 1
META = "meta.json"
PARALLEL_FROM = 20_000  # images to corrupt from which worker processes pay for their start


def held_out_splits(data, adapt: bool) -> tuple[str, str | None]:
    """(the split scored, the split BN adapts on or None): test where there is one, else val;
    BN adapts on val (unlabeled); without a test split adaptation and scoring share val."""
    scored = "test" if "test" in data.splits else "val"
    return scored, ("val" if adapt else None)


def set_key(data, images: int, seed: int, version: str) -> str:
    """What a corrupted set's pixels depend on, hashed."""
    params = data.manifest.get("params", {})
    words = {"fingerprint": data.manifest.get("fingerprint"), "size": data.size,
             "resize": params.get("resize"), "images": images, "seed": seed,
             "library": LIBRARY, "version": version, "format": SET_FORMAT}
    return hashlib.sha256(json.dumps(words, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class CorruptedSet:
    """An opened set: its folder and meta.json (`splits[split]`: rows, files, labels)."""

    folder: Path
    meta: dict

    @property
    def size(self) -> int:
        return int(self.meta["size"])

    def labels(self, split: str) -> np.ndarray:
        return np.asarray(self.meta["splits"][split]["labels"], dtype=np.int64)

    def files(self, split: str) -> list[str]:
        return list(self.meta["splits"][split]["files"])

    def rows(self, split: str) -> np.ndarray:
        return np.asarray(self.meta["splits"][split]["rows"], dtype=np.int64)

    def path(self, split: str, corruption: str, severity: int) -> Path:
        return self.folder / f"{split}-{corruption}-{severity}.u8"

    def has(self, split: str, corruption: str, severity: int) -> bool:
        path = self.path(split, corruption, severity)
        return path.is_file() and path.stat().st_size == self._bytes(split)

    def images(self, split: str, corruption: str, severity: int) -> np.ndarray:
        """The corrupted images (uint8 (N, 3, S, S), memory-mapped read-only)."""
        if not self.has(split, corruption, severity):
            raise UsageError(f"{self.path(split, corruption, severity)} is missing or "
                             "incomplete: run the robustness step again")
        n, s = len(self.meta["splits"][split]["rows"]), self.size
        return np.memmap(self.path(split, corruption, severity), dtype=np.uint8, mode="r",
                         shape=(n, 3, s, s))

    def _bytes(self, split: str) -> int:
        return len(self.meta["splits"][split]["rows"]) * 3 * self.size ** 2


def open_set(folder: str | os.PathLike) -> CorruptedSet:
    """A set made before (UsageError when `folder` holds none)."""
    meta = read_json(Path(folder) / META)
    if not isinstance(meta, dict) or meta.get("format") != SET_FORMAT:
        raise UsageError(f"{folder} holds no corrupted set: run the robustness step again")
    return CorruptedSet(Path(folder), meta)


def ensure_set(data, splits: list[str], corruptions: list[str], severities: list[int],
               images: int, seed: int, say=None, workers: int = 1) -> CorruptedSet:
    """The set of `data` (a PreparedData, all rows) holding every (split, corruption,
    severity) asked for: opened, completed or made (by up to `workers` processes when it is
    large), under the set's lock."""
    import filelock

    version = check_library()
    if data.size < MIN_SIZE:
        raise UsageError(f"robustness: the corruptions need images of at least {MIN_SIZE} px; "
                         f"this study's are {data.size} px")
    folder = Path(data.path) / CORRUPTED_DIR / set_key(data, images, seed, version)
    folder.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(folder / ".lock")):
        meta = read_json(folder / META)
        if not isinstance(meta, dict) or not all(s in meta.get("splits", {}) for s in splits):
            meta = _meta(data, splits, images, seed, version, meta)
            atomic_write_text(folder / META, json.dumps(meta) + "\n")
        cset = CorruptedSet(folder, meta)
        todo = [(sp, c, s) for sp in splits for c in corruptions for s in severities
                if not cset.has(sp, c, s)]
        started = time.perf_counter()
        _make_all(cset, data, todo, workers)
        if todo and say is not None:
            say(f"robustness: corrupted {len(todo)} (split, corruption, severity) sets of "
                f"{data.size}x{data.size} images in {time.perf_counter() - started:.1f} s "
                f"({folder})")
    return cset


def _meta(data, splits: list[str], images: int, seed: int, version: str,
          before: dict | None) -> dict:
    """meta.json: the images each split contributes (those of `before` kept as they are)."""
    chosen = dict((before or {}).get("splits", {}))
    for i, split in enumerate(splits):
        if split not in chosen:
            chosen[split] = _choose(data.splits[split], images, [seed, i])
    return {"format": SET_FORMAT, "library": LIBRARY, "version": version, "seed": seed,
            "images": images, "size": data.size, "cache": str(data.path),
            "fingerprint": data.manifest.get("fingerprint"), "mean": list(data.mean),
            "std": list(data.std), "classes": list(data.classes), "splits": chosen}


def _choose(split, images: int, seed: list[int]) -> dict:
    """A seeded choice of `images` rows without a copy in train, in row order."""
    clean = np.flatnonzero(~np.asarray(split.leaked, dtype=bool))
    if len(clean) > images:
        clean = np.sort(np.random.default_rng(seed).choice(clean, images, replace=False))
    return {"rows": clean.tolist(), "files": [split.files[r] for r in clean],
            "labels": np.asarray(split.labels)[clean].tolist()}


def _make_all(cset: CorruptedSet, data, todo: list[tuple[str, str, int]],
              workers: int) -> None:
    """Every (split, corruption, severity) of `todo`: here, or in `workers` processes."""
    count = sum(len(cset.rows(split)) for split, _, _ in todo)
    if workers <= 1 or len(todo) < 2 or count < PARALLEL_FROM:
        for split, corruption, severity in todo:
            _make(cset.folder, data, split, corruption, severity)
        return
    import multiprocessing

    with ProcessPoolExecutor(min(workers, len(todo)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        for done in [pool.submit(_make, cset.folder, str(data.path), *cell) for cell in todo]:
            done.result()


def _make(folder: Path, data, split: str, corruption: str, severity: int) -> None:
    """One (split, corruption, severity): every chosen image corrupted, published whole.
    `data`: the PreparedData, or (in a worker process) its cache folder."""
    cset = open_set(folder)
    data = load_cache(data) if isinstance(data, str) else data
    rows = cset.rows(split)
    source = data.splits[split].images
    out = np.empty((len(rows), 3, data.size, data.size), dtype=np.uint8)
    seed = int(cset.meta["seed"])
    for i, row in enumerate(rows):
        out[i] = corrupt_image(np.asarray(source[row]), corruption, severity,
                               image_seed(seed, split, corruption, severity, int(row)))
    path = cset.path(split, corruption, severity)
    tmp = temp_path(path)
    try:
        out.tofile(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
