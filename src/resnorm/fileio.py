"""Small file helpers shared by the run, study, report and data code (no torch import).

`atomic_write_text` is how every text file of a run, a study or a cache is written: a
reader never sees half a file. `read_json` / `read_yaml` read a file that may not exist yet.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_text", "read_json", "read_yaml"]


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file (UTF-8) atomically: temp file in the same folder + fsync + rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
