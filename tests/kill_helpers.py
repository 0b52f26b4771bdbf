"""Killing a study mid-run, as a crash would: SIGKILL once a condition holds."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Callable


def epochs_logged(run: Path) -> int:
    """How many epochs a run folder's metrics.csv holds (0 before its first)."""
    try:
        return len((run / "metrics.csv").read_text().splitlines()) - 1
    except OSError:
        return 0


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 300) -> None:
    """SIGKILL `proc` (started with stderr=PIPE) as soon as `ready()` holds; fail if it ends
    first (with its stderr) or `ready` takes longer than `timeout` seconds."""
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, f"not ready to kill within {timeout:.0f} s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
