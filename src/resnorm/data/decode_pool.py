"""Decoding every image of a dataset once, in parallel, straight into the cache's memory-
mapped uint8 image files (resnorm.data.prepare builds the cache around it).

Faults end with one line and leave the caller's staging folder to be removed: the image files
are reserved on disk up front (fallocate), so a disk that fills up anyway fails here as ENOSPC
rather than as SIGBUS in a worker; a worker that dies (killed for memory, a signal) is noticed
at once, because the pool is a `ProcessPoolExecutor`, which fails its futures when a worker
disappears (`multiprocessing.Pool` replaces the worker and waits forever for its task).
"""
from __future__ import annotations

import contextlib
import errno
import faulthandler
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from resnorm.data.console import progress_bar
from resnorm.data.decode import Decoded, decode_file
from resnorm.data.folders import Layout
from resnorm.errors import ResourceError
from resnorm.fileio import format_bytes, free_bytes, nearest_existing

__all__ = ["decode_all", "free_text"]


def free_text(out: Path) -> str:
    """How much space is free where the cache `out` goes, in words."""
    free = free_bytes(out.parent)
    where = nearest_existing(out.parent)
    return f"{format_bytes(free)} free on {where}" if free is not None else \
        f"free space on {where} unknown"


def _allocate(path: Path, nbytes: int) -> None:
    """Create `path` with `nbytes` reserved on disk, so that a disk too full for the cache
    fails here, in the parent, with ENOSPC, and never as SIGBUS in a worker writing its rows
    through the memory map. A file system that cannot reserve (some NFS, older ZFS) gets a
    sparse file; a disk that fills up then kills a worker with SIGBUS, reported as such."""
    with open(path, "wb") as f:
        if nbytes and not _reserve(f.fileno(), nbytes):
            f.truncate(nbytes)


def _reserve(fd: int, nbytes: int) -> bool:
    """fallocate(2): reserve the blocks (instant where supported). Not posix_fallocate, whose
    fallback writes a byte per block: minutes for a large cache over NFS."""
    try:
        import ctypes
        fallocate = ctypes.CDLL(None, use_errno=True).fallocate64
    except (OSError, AttributeError):  # not Linux/glibc
        return False
    fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    if fallocate(fd, 0, 0, nbytes) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(code, os.strerror(code))


def decode_all(layout: Layout, staging: Path, params: dict, workers: int,
                progress: bool, out: Path) -> dict[str, list]:
    """Decode every file into row i of its split's image file; return per-split results."""
    size = params["size"]
    row_bytes = 3 * size * size
    targets = {}
    for split, items in layout.splits.items():
        target = staging / f"{split}_images.u8"
        _allocate(target, len(items) * row_bytes)
        targets[split] = str(target)
    tasks = [(split, i, str(path)) for split, items in layout.splits.items()
             for i, (path, _) in enumerate(items)]
    config = (targets, size, params["resize"], params["max_pixels"])
    results: dict[str, list] = {split: [None] * len(items) for split, items in
                                layout.splits.items()}
    bar = progress_bar(len(tasks), progress, workers)
    chunksize = max(1, min(64, len(tasks) // (workers * 8)))
    chunks = [tasks[k:k + chunksize] for k in range(0, len(tasks), chunksize)]
    try:
        # closing(): on any error the pool is shut down here, not when the generator is freed
        with contextlib.closing(_decode_chunks(chunks, config, workers, out)) as decoded:
            for done in decoded:
                for split, i, outcome in done:
                    results[split][i] = outcome
                bar.update(len(done))
    except MemoryError as exc:
        raise ResourceError(f"out of memory decoding images for {out} (try fewer --workers "
                            f"or a smaller --size); the unfinished cache was removed") from exc
    finally:
        bar.close()
    return results


def _decode_chunks(chunks: list[list], config, workers: int, out: Path):
    """Yield the decoded chunks (in any order): in this process, or in `workers` processes."""
    if workers == 1:
        _init_worker(config)
        try:
            yield from map(_decode_chunk, chunks)
        finally:
            _WORKER_STATE.clear()  # closes the memory maps
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(),
                               initializer=_init_worker, initargs=(config, os.getpid()))
    # The worker processes, to tell how one died (the pool itself does not say). The pool
    # starts them as it needs them, so they are gathered again as the work goes on.
    processes: dict = {}

    def seen() -> list:
        processes.update(getattr(pool, "_processes", None) or {})
        return list(processes.values())
    try:
        futures = [pool.submit(_decode_chunk, chunk) for chunk in chunks]
        seen()
        for future in as_completed(futures):
            seen()
            yield future.result()
    except BrokenProcessPool:
        raise ResourceError(f"{_death_text(seen())}; {free_text(out)}; the unfinished "
                            f"cache was removed") from None
    finally:
        # On an error, drop the chunks not started (instead of decoding them all first).
        pool.shutdown(wait=True, cancel_futures=True)


def _death_text(processes: list) -> str:
    """How a decode worker died, from the exit codes of the pool's processes."""
    # The dead one has exited; the others are being stopped. The pool's own thread reaps them
    # too, and a join that loses that race sees no exit code yet: look again until all have one.
    deadline = time.monotonic() + 3
    while True:
        for p in processes:
            if p.exitcode is None:
                p.join(0.05)
        codes = [p.exitcode for p in processes]
        if None not in codes or time.monotonic() > deadline:
            break
    dead = [c for c in codes if c not in (None, 0, -signal.SIGTERM)] or \
        [c for c in codes if c not in (None, 0)]
    if not dead:
        return "a decode worker process died unexpectedly"
    code = dead[0]
    if code > 0:
        return f"a decode worker process exited with status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    why = {"SIGKILL": " (usually the kernel's out-of-memory killer, see `dmesg`; try fewer "
                      "--workers)",
           "SIGBUS": " (a write to the memory-mapped cache failed: usually a full disk)"}
    return f"a decode worker process was killed by {name}{why.get(name, '')}"


# Per-process state of a decode worker: the open memory maps and the decode parameters.
_WORKER_STATE: dict = {}


def _init_worker(config, parent: int | None = None) -> None:
    if parent is not None:  # in a worker process
        # Ctrl-C is the parent's to handle: it stops the pool and cleans up. A worker killed
        # by a signal is reported by the parent in one line, not by a stack dump from here.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        faulthandler.disable()
        _die_with_parent(parent)
    targets, size, resize, max_pixels = config
    _WORKER_STATE.update(targets=targets, size=size, resize=resize, max_pixels=max_pixels,
                         maps={})


def _die_with_parent(parent: int) -> None:
    """Linux: end this worker when the parent dies (SIGKILL, OOM) instead of leaving it
    waiting for work forever; elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent is already gone
        os._exit(1)


def _decode_chunk(tasks: list) -> list:
    return [_decode_task(task) for task in tasks]


def _decode_task(task):
    """Decode one file and write its pixels straight into the shared memory map.

    Only hashes and channel sums travel back to the parent, never pixels."""
    split, i, path = task
    state = _WORKER_STATE
    outcome = decode_file(path, state["size"], state["resize"], state["max_pixels"])
    if isinstance(outcome, Decoded):
        maps = state["maps"]
        if split not in maps:
            s = state["size"]
            maps[split] = np.memmap(state["targets"][split], dtype=np.uint8, mode="r+")\
                .reshape(-1, 3, s, s)
        maps[split][i] = outcome.pixels
        outcome.pixels = None
    return split, i, outcome
