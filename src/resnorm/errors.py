"""Exceptions the command line turns into exit codes (see `resnorm.cli`), and the check of a
config section's keys that raises the usage one."""
from typing import Any

EXIT_USAGE = 2      # bad usage, invalid config, missing data: one line on stderr
EXIT_DIVERGED = 3   # a training run hit a non-finite loss and stopped cleanly
EXIT_RESOURCE = 4   # out of disk space or memory, or a worker process died: one line on stderr


class UsageError(ValueError):
    """Invalid input from the user: reported as one line on stderr, exit code 2."""


class DivergedError(RuntimeError):
    """A run stopped on a non-finite loss; exit code 3."""


class ResourceError(RuntimeError):
    """The machine ran out of something a command needs (disk space, memory) or a worker
    process died: an expected fault, not a bug. One line on stderr, exit code 4; the command
    leaves no half-written file that a later run would trust."""


class DiskFullError(ResourceError):
    """A write failed for lack of space (ENOSPC or a quota); the file it was replacing is
    intact."""


def checked_mapping(value: Any, allowed: tuple[str, ...], where: str) -> dict:
    """A config section (`where`: how a message names it) as a dict whose keys are all
    `allowed`; anything else is a one-line UsageError naming the first unknown key."""
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be a mapping ({', '.join(allowed)})")
    bad = [k for k in value if k not in allowed]
    if bad:
        raise UsageError(f"{where}: unknown key '{bad[0]}' ({', '.join(allowed)})")
    return dict(value)
