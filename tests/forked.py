"""Processes a test starts, forked from the fork server the study's pool forks its workers
from (resnorm.study.execution.pool), which imported the training code once, instead of fresh
interpreters that import torch and torchmetrics again (about 5 s of CPU each). What they
compute is the same: the start method is not what these tests check (tests/test_cli.py and
tests/test_ddp_train.py run `python -m resnorm` and `torchrun -m resnorm` themselves).

    fork_server()          the start method for torch.multiprocessing.start_processes
    Forked(target, *args)  target(*args) in a process of its own, stdout and stderr piped:
                           the part of subprocess.Popen a test uses to race or kill it
    resnorm(*argv)         `resnorm ARGV` so (resnorm.cli.main; its return is the exit code)
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading

from resnorm.study.execution.pool import PRELOAD


def fork_server() -> str:
    """The fork server's start method, its server importing what the study's pool preloads."""
    multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD)
    return "forkserver"


class Forked:
    """target(*args) with 1 torch thread in a forked process. Its exit code: the int that
    target returns (or sys.exit gives), minus the signal's number if one ended it."""

    def __init__(self, target, *args, text: bool = False, stdout: bool = True) -> None:
        ctx = multiprocessing.get_context(fork_server())
        out, err = ctx.Pipe(duplex=False), ctx.Pipe(duplex=False)  # (read end, write end)
        self.process = ctx.Process(target=_child, args=(target, args, out[1] if stdout else None,
                                                        err[1]))
        self.process.start()
        self.pid = self.process.pid
        mode = "r" if text else "rb"
        self.stdout, self.stderr = (os.fdopen(os.dup(r.fileno()), mode) for r, _ in (out, err))
        for end in (*out, *err):  # the child's write ends too: EOF once it is gone
            end.close()

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def poll(self) -> int | None:
        return self.process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(f"forked {self.pid}", timeout)
        return self.process.exitcode

    def send_signal(self, sig: int) -> None:
        if self.process.exitcode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:  # ended just now
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple:
        """(stdout, stderr) read to their ends, once the process has ended."""
        read = {}
        readers = [threading.Thread(target=lambda s=s: read.__setitem__(s, s.read()), daemon=True)
                   for s in (self.stdout, self.stderr)]
        for reader in readers:
            reader.start()
        self.wait(timeout)
        for reader in readers:
            reader.join(timeout)
        return read.get(self.stdout), read.get(self.stderr)


def resnorm(*argv: str) -> int:
    """`resnorm ARGV` (a target for Forked)."""
    from resnorm import cli

    return cli.main(list(argv))


def _child(target, args, out, err) -> None:
    import torch

    torch.set_num_threads(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    for conn, fd in ((out, 1), (err, 2)):
        os.dup2(conn.fileno() if conn is not None else devnull, fd)
    for conn in (out, err):
        if conn is not None:
            conn.close()
    os.close(devnull)
    sys.exit(target(*args))
