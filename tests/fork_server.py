"""The start method for the processes a test starts to compute something (the ranks of a
process group): "forkserver", the server the study's pool forks its workers from, which
imports the training code once (resnorm.study.execution.pool.PRELOAD), instead of "spawn",
a fresh interpreter per process that imports torch and torchmetrics again (about 5 s of CPU
each). The processes compute the same: the start method is not what these tests check."""
from __future__ import annotations

import multiprocessing

from resnorm.study.execution.pool import PRELOAD


def fork_server() -> str:
    """The start method to pass to torch.multiprocessing.start_processes."""
    multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD)
    return "forkserver"
