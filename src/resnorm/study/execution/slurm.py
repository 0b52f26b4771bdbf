"""`resnorm study --executor slurm`: a study's (run, seed) jobs as one SLURM job array.

On the login node (the `resnorm study` process): the runner prepares the data once into a cache
on shared storage and resolves the jobs; `SlurmExecutor.run` then submits one array (submitit),
one task per unfinished job, waits for it with a progress line, records each outcome as its
task ends (the study's OutcomeRecorder) and hands the outcomes back; the orchestrator then runs
Grad-CAM and writes the report as the local path does. `--no-wait` submits a job after the
array (afterany) that does that last part (`FinishStudy`, with the orchestrator's `finish`).

On a compute node, each task (`TrainTask`) trains its job with `train_locked`, exactly as a
local study does: same run folder, resume from last.pt, the run's lock held meanwhile. Tasks are
submitit Checkpointables: at the time limit or on preemption (SIGUSR2 from SLURM) submitit
requeues the task, and the requeued task resumes from last.pt. The lock stays the safety net:
a requeued task that overlaps a lost original finds the run "busy" instead of training it twice.

Task states come from `squeue` and each task's result file (resnorm.study.execution.slurm_queue), not
from `sacct`: clusters without an accounting database have no sacct. `STUDY/slurm/` holds
submitit's files and each task's log (`<array>_<task>_0_log.out/.err`); `STUDY/slurm/tasks.json`
names the task of each job, so that re-running the command waits for tasks still queued
instead of submitting them twice.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from resnorm.errors import ResourceError, UsageError
from resnorm.fileio import atomic_write_text, read_json
from resnorm.study.execution.locks import CLAIM_FILE, held_by
from resnorm.study.plan.parse import parse_time_limit
from resnorm.study.execution.slurm_queue import squeue_live, squeue_states, submitit_states
from resnorm.study.execution.job import Job, Outcome, busy, run_job
from resnorm.studydir import StudyDir

__all__ = ["TASKS_FILE", "SlurmSettings", "slurm_settings", "SlurmExecutor",
           "TrainTask", "FinishStudy"]

TASKS_FILE = StudyDir.SLURM_TASKS  # in the log folder: job label -> the task training it
MAX_REQUEUES = 50  # time limits a task may hit, each resumed from last.pt, before it fails


@dataclasses.dataclass
class SlurmSettings:
    """What each task asks of SLURM, and how this command waits (see `slurm_settings`)."""

    partition: str | None = None       # None: the cluster's default partition
    time: int | None = None            # minutes; None: the partition's time limit
    gpus_per_task: int | None = None   # None: 1, or 0 when every run trains on the CPU
    cpus_per_task: int | None = None   # None: the plan's `threads`, else 4
    mem_gb: float | None = None        # None: the partition's default
    array_parallelism: int | None = None  # tasks running at once (None: as many as fit)
    sbatch: dict = dataclasses.field(default_factory=dict)  # extra sbatch settings
    setup: list = dataclasses.field(default_factory=list)   # shell lines before each task
    wait: bool = True                  # False (--no-wait): a dependent job finishes the study
    poll_s: float = 10.0               # seconds between looks at the queue
    cluster: str = "slurm"             # submitit's executor: "local" or "debug" in tests


def slurm_settings(plan_section: dict, overrides: dict) -> SlurmSettings:
    """The plan's `slurm:` section with the command line's options over it (None: not given);
    `sbatch` settings are merged, the command line's winning."""
    merged = {**plan_section, **{k: v for k, v in overrides.items() if v is not None}}
    merged["sbatch"] = {**plan_section.get("sbatch", {}), **(overrides.get("sbatch") or {})}
    fields = {f.name for f in dataclasses.fields(SlurmSettings)}
    unknown = sorted(set(merged) - fields)
    if unknown:
        raise UsageError(f"slurm: unknown setting '{unknown[0]}'")
    return SlurmSettings(**merged)


# --- on a compute node ------------------------------------------------------------------------

class TrainTask:
    """One array task: train one job exactly as a local study does (`train_locked`).

    A submitit Checkpointable (see `checkpoint`): when SLURM signals the time limit or a
    preemption, submitit requeues the task with the same job, which resumes from last.pt.
    """

    def __init__(self, threads: int | None) -> None:
        self.threads = threads

    def __call__(self, job: Job) -> Outcome:
        import torch

        threads = self.threads or int(os.environ.get("SLURM_CPUS_PER_TASK", "0") or 0)
        if threads:
            torch.set_num_threads(threads)
        print(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {job.label}: SLURM job "
              f"{os.environ.get('SLURM_JOB_ID', '?')} on {os.uname().nodename}, pid "
              f"{os.getpid()}, {torch.get_num_threads()} torch thread(s) ===", flush=True)
        # the task's log is not the console: complete (progress, epoch lines) whatever --quiet
        outcome = run_job(job, True)
        return dataclasses.replace(outcome, final=None)  # final.json is on the shared disk

    def checkpoint(self, job: Job):
        """Called by submitit before it requeues the task: the same job again; the run's
        last.pt (written every epoch) is its checkpoint."""
        from submitit.helpers import DelayedSubmission

        print(f"{job.label}: requeued; it resumes from its last.pt", flush=True)
        return DelayedSubmission(self, job)


class FinishStudy:
    """The job `--no-wait` submits after the array (afterany): records each task's outcome
    (the recorder: study.json and a line each), then `finish(jobs, outcomes)`: the study's
    last steps (the orchestrator's: Grad-CAM and the report)."""

    def __init__(self, todo: list[Job], tasks: dict[str, str], folder: Path, recorder,
                 finish: Callable) -> None:
        self.todo, self.tasks, self.folder = todo, tasks, folder
        self.recorder, self.finish = recorder, finish

    def __call__(self) -> str:
        import submitit

        tally = self.recorder.begin(self.todo, lambda line: print(line, flush=True),
                                    stop_on_fatal=False)  # every task has ended: record all
        for job in self.todo:
            task_id = self.tasks.get(job.label)
            if task_id is None:  # finished before the array, or held by another process
                outcome = run_job(job, False, lock=False)
            else:  # afterany: every task has ended, with a result or without
                task = submitit.SlurmJob(self.folder, task_id)
                ended = "done" if task.paths.result_pickle.exists() else "ended"
                outcome = outcome_of(job, task, ended)
            tally.tell(job, outcome)
        result = self.finish(self.todo, tally.outcomes())
        return f"{len(result.failed)} job(s) failed" if result.failed else "study complete"


# --- on the login node ------------------------------------------------------------------------

class SlurmExecutor:
    """Every job as a task of one SLURM array (the executor `--executor slurm` makes; see
    resnorm.study.execution.executors); each outcome recorded as its task ends. `finish`: what the job
    after a --no-wait array runs (settings.wait False), a picklable callable."""

    def __init__(self, recorder, settings: SlurmSettings, folder: Path, threads: int | None,
                 finish: Callable | None = None) -> None:
        self.recorder, self.settings, self.folder = recorder, settings, folder
        self.threads, self.finish = threads, finish

    def run(self, jobs: list[Job], say) -> list[Outcome] | None:
        """The outcomes in job order; None when it does not wait (a `FinishStudy` job after
        the array records them and finishes the study)."""
        settings, folder = self.settings, self.folder
        tally = self.recorder.begin(jobs, say)
        tracked, to_submit = sort_jobs(jobs, folder, settings, say, tally.tell)
        executor = submitit_executor(folder, settings, jobs, self.threads)
        tracked.update(submit(executor, to_submit, TrainTask(self.threads), folder, say))
        if not settings.wait and tracked:  # (nothing to wait for: finish here and now)
            if self.finish is None:
                raise ValueError("a SLURM executor that does not wait needs a finish")
            submit_finish(executor, jobs, tracked, folder,
                          FinishStudy(jobs, task_ids(tracked), folder, self.recorder,
                                      self.finish), say)
            return None
        queue = squeue_states if settings.cluster == "slurm" else submitit_states
        try:
            for job, outcome in wait_for(tracked, {j.label: j for j in jobs}, queue,
                                         settings, say):
                tally.tell(job, outcome)  # a full disk: ResourceError
        except ResourceError:  # the other tasks would fail too
            for task in tracked.values():
                task.cancel(check=False)
            raise
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C, SIGTERM, a closed terminal
            ids = sorted({task.job_id.split("_")[0] for task in tracked.values()})
            say(f"slurm: stopped waiting; the tasks go on (squeue -j {','.join(ids)}); re-run "
                f"the same command to wait for them, or scancel {' '.join(ids)} to stop them")
            raise
        return tally.outcomes()


def task_ids(tracked: dict[str, Any]) -> dict[str, str]:
    """Job label -> the SLURM id of the task training it."""
    return {label: task.job_id for label, task in tracked.items()}


def sort_jobs(todo: list[Job], folder: Path, settings: SlurmSettings, say, tell
              ) -> tuple[dict[str, Any], list[Job]]:
    """Which jobs need a task: not those finished (told as skipped), nor those whose task of an
    earlier submission is still queued or running (tracked), nor those another process holds
    (told as busy). A claim left by a SLURM task that no longer runs is removed."""
    import submitit

    earlier = read_json(folder / TASKS_FILE) if (folder / TASKS_FILE).exists() else {}
    live = squeue_live(list(earlier.values())) if settings.cluster == "slurm" else {}
    tracked, to_submit = {}, []
    for job in todo:
        holder = held_by(job.dir)
        if job.finished:
            tell(job, run_job(job, False, lock=False))
        elif earlier.get(job.label) in live:
            task = earlier[job.label]
            say(f"{job.label}: already queued as SLURM task {task} ({live[task]}); waiting "
                "for it")
            tracked[job.label] = submitit.SlurmJob(folder, task)
        elif holder is not None and holder.slurm_job and settings.cluster == "slurm" \
                and holder.slurm_job not in squeue_live([holder.slurm_job]):
            say(f"{job.label}: SLURM job {holder.slurm_job}, which held it, has ended; "
                "its claim is removed and the run resumes")
            (job.dir / CLAIM_FILE).unlink(missing_ok=True)
            to_submit.append(job)
        elif holder is not None:
            tell(job, busy(job.label, holder))
        else:
            to_submit.append(job)
    return tracked, to_submit


def submitit_executor(folder: Path, settings: SlurmSettings, todo: list[Job], threads):
    """submitit's executor with what each task asks of SLURM."""
    import submitit

    on_cpu = all(job.cfg.device == "cpu" for job in todo)
    gpus = settings.gpus_per_task if settings.gpus_per_task is not None else int(not on_cpu)
    cpus = settings.cpus_per_task or threads or 4
    minutes = settings.time or partition_time_limit(settings.partition, settings.cluster)
    executor = submitit.AutoExecutor(folder=folder, cluster=settings.cluster,
                                     slurm_max_num_timeout=MAX_REQUEUES)
    params: dict[str, Any] = dict(timeout_min=minutes, cpus_per_task=cpus,
                                  name=f"resnorm-{folder.parent.name}")
    if gpus:  # not "--gpus-per-node=0": clusters without GPUs may know no gres at all
        params["gpus_per_node"] = gpus
    if settings.mem_gb:
        params["mem_gb"] = settings.mem_gb
    if settings.partition:
        params["slurm_partition"] = settings.partition
    if settings.array_parallelism:
        params["slurm_array_parallelism"] = settings.array_parallelism
    if settings.sbatch:
        params["slurm_additional_parameters"] = dict(settings.sbatch)
    if settings.setup:
        params["slurm_setup"] = list(settings.setup)
    executor.update_parameters(**params)
    return executor


def partition_time_limit(partition: str | None, cluster: str) -> int:
    """The partition's time limit in minutes (sinfo), 0 when it has none: what a task asks
    for when the plan and the command line give no time."""
    if cluster != "slurm":
        return 24 * 60
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P %l"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        raise UsageError("sinfo does not answer: --executor slurm runs on a SLURM login node "
                         "(see docs/distributed.md)") from None
    for line in out.splitlines():
        name, _, limit = line.partition(" ")
        if name.rstrip("*") == partition or (partition is None and name.endswith("*")):
            limit = limit.strip()
            return 0 if limit in ("infinite", "UNLIMITED") else parse_time_limit(limit, "sinfo")
    raise UsageError(f"SLURM has no partition {partition!r}" if partition else
                     "SLURM has no default partition: give one with --partition")


def submit(executor, jobs: list[Job], task: TrainTask, folder: Path, say) -> dict[str, Any]:
    """One array, one task per job; tasks.json records which task trains which job."""
    if not jobs:
        return {}
    from submitit.core.utils import FailedJobError

    try:
        tasks = executor.map_array(task, jobs)
    except (FailedJobError, OSError) as exc:
        first = (str(exc).strip().splitlines() or ["?"])[-1]
        raise UsageError(f"slurm: the array was not submitted: {first}") from None
    tracked = {job.label: t for job, t in zip(jobs, tasks)}
    folder.mkdir(parents=True, exist_ok=True)
    ids = {**(read_json(folder / TASKS_FILE) if (folder / TASKS_FILE).exists() else {}),
           **{label: t.job_id for label, t in tracked.items()}}
    atomic_write_text(folder / TASKS_FILE, json.dumps(ids, indent=1) + "\n")
    say(f"slurm: submitted array {tasks[0].job_id.split('_')[0]}: {len(jobs)} task(s), one per "
        f"job; logs in {folder}/")
    return tracked


def submit_finish(executor, todo: list[Job], tracked: dict[str, Any], folder: Path,
                  finish_job: FinishStudy, say) -> None:
    """--no-wait: a job after the array's tasks (afterany: however they end) that records the
    study, runs Grad-CAM and writes the report (`finish_job`)."""
    from submitit.core.utils import FailedJobError

    arrays = sorted({task_id.split("_")[0] for task_id in task_ids(tracked).values()})
    if arrays:
        executor.update_parameters(slurm_dependency="afterany:" + ":".join(arrays))
    try:
        job = executor.submit(finish_job)
    except (FailedJobError, OSError) as exc:
        first = (str(exc).strip().splitlines() or ["?"])[-1]
        raise UsageError(f"slurm: the finishing job was not submitted: {first}") from None
    say(f"slurm: submitted job {job.job_id} to run after array {', '.join(arrays) or '-'} "
        f"(afterany): it records the study, runs Grad-CAM and writes the report; follow with "
        f"squeue -j {','.join(arrays + [job.job_id])}; its log: {job.paths.stdout}")


def wait_for(tracked: dict[str, Any], jobs: dict[str, Job], queue: Callable, settings,
             say) -> Iterator[tuple[Job, Outcome]]:
    """Yield (job, outcome) as each task ends; a progress line whenever the counts change.
    A task that left the queue without a result fails once two looks in a row agree (its
    result file may lag a moment behind on a network filesystem)."""
    pending, failed, last = dict(tracked), 0, None
    gone: dict[str, str] = {}  # label -> how it ended, at the first look that missed it
    started = time.monotonic()
    while pending:
        states = queue(list(pending.values()))
        for label, task in list(pending.items()):
            state = states.get(task.job_id) or "ended"
            if state == "done" or (state.startswith("ended") and label in gone):
                del pending[label]
                how = state if state == "done" or ":" in state else gone[label]
                outcome = outcome_of(jobs[label], task, how)
                failed += outcome.status == "failed"
                yield jobs[label], outcome
            elif state.startswith("ended"):
                gone[label] = state
            else:
                gone.pop(label, None)
        counts = [sum(states.get(t.job_id) == s for t in pending.values())
                  for s in ("running", "pending")]
        line = (len(tracked) - len(pending) - failed, *counts, failed)
        if line != last:
            say("slurm: {} done, {} running, {} pending, {} failed".format(*line))
            last = line
        if pending:  # every second at first, then less often: squeue is shared by all users
            time.sleep(min(settings.poll_s, max(1.0, (time.monotonic() - started) / 20)))


def outcome_of(job: Job, task, state: str) -> Outcome:
    """A finished task's Outcome (its final.json read from the shared disk), or a failed one
    naming its log when the task raised or ended without a result (`state` "ended[:HOW]":
    cancelled, killed, its node lost)."""
    log = task.paths.stderr
    if state.startswith("ended"):
        how = f" ({state.partition(':')[2]})" if ":" in state else ""
        return Outcome(job.label, "failed", "trained", None, 0.0,
                       f"SLURM task {task.job_id} ended{how} without a result; log: {log}")
    try:
        outcome = task.result()
    except Exception as exc:  # noqa: BLE001 - the task raised; its traceback is in its log
        return Outcome(job.label, "failed", "trained", None, 0.0,
                       f"SLURM task {task.job_id} failed: {last_error_line(exc)}; log: {log}")
    if outcome.status not in ("failed", "busy"):
        outcome.final = job.final()  # from the shared disk (None if it has none)
    return outcome


def last_error_line(exc: BaseException) -> str:
    """The exception line of a task's traceback as submitit reports it (else the message)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    rules = [i for i, line in enumerate(lines) if set(line) == {"-"}]
    if len(rules) >= 2 and rules[1] > rules[0] + 1:  # "... trace:\n----\n<trace>\n----\n..."
        return lines[rules[1] - 1]
    return lines[0] if lines else type(exc).__name__
