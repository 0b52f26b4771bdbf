"""Small file helpers shared by the run, study, report and data code (no torch import).

`atomic_write_text` / `atomic_write_bytes` are how every file of a run, a study or a cache is
written: a reader never sees half a file, and a write that fails (a full disk) leaves the
previous file as it was and no temp file behind. `read_json` / `read_yaml` read a file that
may not exist yet. `is_disk_full`, `free_bytes` and `format_bytes` help the callers word the
one-line error of a full disk (`resnorm.errors.DiskFullError`, raised by the layers above:
this module imports nothing of resnorm).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_text", "atomic_write_bytes", "temp_path", "read_json", "read_yaml",
           "is_disk_full", "free_bytes", "nearest_existing", "format_bytes", "format_duration"]

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def temp_path(path: str | os.PathLike) -> Path:
    """The temp file `path` is written to before the rename: hidden, same folder, per process."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Write a file atomically: temp file in the same folder + fsync + rename.

    If the write fails (a full disk: OSError ENOSPC, see `is_disk_full`), the temp file is
    removed, `path` is left as it was, and the error is raised as it came."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file (UTF-8) atomically, as `atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` says a device or a quota is full (OSError ENOSPC, EDQUOT)."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes free to this user on the filesystem holding `path` (or its nearest existing
    parent), or None when it cannot be asked."""
    try:
        return shutil.disk_usage(nearest_existing(path)).free
    except OSError:
        return None


def nearest_existing(path: str | os.PathLike) -> Path:
    """`path` (absolute) if it exists, else its nearest parent that does."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def format_bytes(n: int | float) -> str:
    """1536 -> '1.5 KiB'; 3_000_000_000 -> '2.8 GiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's contents, or None when the file does not exist."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def read_yaml(path: str | os.PathLike) -> Any:
    """A YAML file's contents ({} when the file does not exist or is empty)."""
    import yaml  # not at the top: the data layer imports this module in its worker processes

    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        return {}


def format_duration(seconds: float) -> str:
    """42s, 4m10s, 2h05m (progress lines of prepare and training)."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
