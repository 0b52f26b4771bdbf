"""What SLURM's queue says about a study's tasks: `squeue`, not `sacct` (clusters without an
accounting database have no sacct), and each task's result file (resnorm.study.execution.slurm waits
with these)."""
from __future__ import annotations

import subprocess

from resnorm.errors import UsageError

__all__ = ["PENDING", "RUNNING", "QueueUnknown", "squeue", "squeue_live", "squeue_states",
           "submitit_states"]

PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT"}
RUNNING = {"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING",
           "STAGE_OUT", "RESIZING"}


def squeue_live(ids: list[str]) -> dict[str, str]:
    """SLURM job ids (an array task's "12_3" or its own id) still queued or running -> state.
    Asked before submitting: without an answer, nothing can be submitted safely."""
    try:
        return {i: s for i, s in squeue(ids).items() if s in PENDING | RUNNING}
    except QueueUnknown as exc:
        raise UsageError(f"slurm: squeue does not answer ({exc}); try again later") from None


def squeue(ids: list[str]) -> dict[str, str]:
    """squeue's state of each job id it knows (ended ones for a few minutes), both as
    "<array>_<task>" and as the task's own job id; {} when it knows none of them."""
    if not ids:
        return {}
    try:
        run = subprocess.run(["squeue", "-h", "-r", "--states=all", "-o", "%i|%A|%T",
                              "-j", ",".join(sorted(set(ids)))], capture_output=True,
                             text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        raise QueueUnknown(str(exc)) from None
    if run.returncode != 0:
        if "Invalid job id" in run.stderr:  # none of them is known any more
            return {}
        raise QueueUnknown(run.stderr.strip())
    states = {}
    for line in run.stdout.splitlines():
        array_id, own_id, state = (line.split("|") + ["", ""])[:3]
        states[array_id] = states[own_id] = state
    return states


class QueueUnknown(RuntimeError):
    """squeue did not answer (the controller busy or restarting): look again later."""


def squeue_states(tasks: list) -> dict[str, str]:
    """Each task's state for `wait_for`: "done" (its result is written), "running",
    "pending", "ended:<STATE>" (squeue still shows it: CANCELLED, FAILED, ...); a task squeue
    does not know is missing (ended too). When squeue does not answer, all count as pending."""
    for folder in {t.paths.folder for t in tasks}:
        try:  # refresh a network filesystem's view of the folder (as submitit does)
            folder.chmod(folder.stat().st_mode)
        except OSError:
            pass
    states = {t.job_id: "done" for t in tasks if t.paths.result_pickle.exists()}
    try:
        queued = squeue([t.job_id for t in tasks if t.job_id not in states])
    except QueueUnknown:
        return {t.job_id: states.get(t.job_id, "pending") for t in tasks}
    for task in tasks:
        state = queued.get(task.job_id)
        if task.job_id in states or state is None:
            continue
        states[task.job_id] = ("running" if state in RUNNING else "pending" if state in PENDING
                               else f"ended:{state}")
    return states


def submitit_states(tasks: list) -> dict[str, str]:
    """`squeue_states` for submitit's local and debug executors (tests): submitit knows."""
    states = {}
    for task in tasks:
        if task.done():
            states[task.job_id] = "done"
        else:
            states[task.job_id] = "running" if task.state == "RUNNING" else "pending"
    return states
