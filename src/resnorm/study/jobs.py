"""Several runs of a study at once (`resnorm study --jobs K`), each in its own process."""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

from resnorm.errors import ResourceError
from resnorm.fileio import read_json
from resnorm.study.locks import held_by
from resnorm.study.training import Job, Outcome, train_locked, train_one

__all__ = ["LOG_FILE", "job_threads", "train_jobs"]

# --- several runs at once (--jobs) ------------------------------------------------------------
# Each run trains in a fresh process started with "spawn" (safe with CUDA, the same on every
# OS) that calls train_one, exactly as the sequential path does. Not a ProcessPoolExecutor: a
# worker that dies (out of memory, a segfault) breaks such a pool and every run still queued
# in it, and a pool cannot stop a running worker on Ctrl-C. One process per run costs one
# `import torch` (a second or two) per run, nothing next to training it.

LOG_FILE = "train.log"  # a job's output when it trains in its own process (--jobs > 1)


def job_threads(jobs: int, threads: int | None) -> int:
    """torch intra-op threads per job: the plan's `threads`, else the cores shared out."""
    if threads is not None:
        return threads
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // jobs)


def train_jobs(todo: list[Job], progress: bool, jobs: int, threads: int | None, say):
    """Train the jobs of `todo`, up to `jobs` at once; yield (job, Outcome) as each finishes
    (completion order).

    A finished job is skipped here without a process. Each other job trains in its own
    process (`_job_main`), with `job_threads` torch threads, its output appended to
    runs/<name>/seed-<s>/train.log. A process that dies without reporting (killed, out of
    memory) is a failed job (its error.txt says how it ended) and the others go on. If this
    process is interrupted (Ctrl-C, an exception) the running jobs are terminated; if it is
    killed outright, each job notices its lifeline close and exits (its last.pt lets a re-run
    resume).
    """
    import multiprocessing
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("spawn")
    per_job = job_threads(jobs, threads)
    say(f"jobs: up to {jobs} at once, {per_job} torch thread(s) each; each job's output "
        f"goes to runs/<name>/seed-<s>/{LOG_FILE}")
    queue = []
    for job in todo:
        holder = held_by(job.dir)
        if (job.dir / "final.json").exists():  # nothing to train: no process needed
            yield job, train_one(job.cfg, job.dir, progress, job.label)
        elif holder is not None:  # another study process trains it (the job re-checks)
            yield job, Outcome(job.label, "busy", "skipped", None, 0.0,
                               f"being trained by {holder}")
        else:
            queue.append(job)
    queue.reverse()  # pop() takes them in plan order
    running: dict[int, tuple] = {}  # sentinel -> (job, process, result conn, lifeline, ...)
    try:
        while queue or running:
            while queue and len(running) < jobs:
                job = queue.pop()
                action = "resumed" if (job.dir / "last.pt").exists() else "trained"
                result_recv, result_send = ctx.Pipe(duplex=False)
                life_recv, life_send = ctx.Pipe(duplex=False)
                process = ctx.Process(target=_job_main, name=f"resnorm-{job.label}",
                                      args=(job.cfg, job.dir, progress, per_job, job.label,
                                            result_send, life_recv))
                process.start()
                result_send.close()  # the child's ends: closed here, so EOF means it is gone
                life_recv.close()
                running[process.sentinel] = (job, process, result_recv, life_send, action,
                                             time.perf_counter())
            for sentinel in wait(list(running)):
                job, process, result_recv, life_send, action, started = running.pop(sentinel)
                process.join()
                outcome = None
                try:  # read after exit: the Outcome is a few hundred bytes (fits the pipe)
                    if result_recv.poll():
                        outcome = result_recv.recv()
                except (EOFError, OSError):
                    pass
                result_recv.close()
                life_send.close()
                if outcome is None:
                    outcome = _died(job, action, process.exitcode, time.perf_counter() - started)
                elif outcome.status != "failed":  # the job sent all but final.json
                    outcome.final = read_json(job.dir / "final.json")
                yield job, outcome
    finally:  # interrupted (Ctrl-C, an error here, the caller stopped): stop what still runs
        for job, process, result_recv, life_send, *_ in running.values():
            process.terminate()
        for job, process, result_recv, life_send, *_ in running.values():
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
            result_recv.close()
            life_send.close()


def _died(job: Job, action: str, exitcode: int | None, seconds: float) -> Outcome:
    """The outcome of a job process that ended without reporting one."""
    how = (f"killed by signal {-exitcode}" if exitcode is not None and exitcode < 0
           else f"exit code {exitcode}")
    message = (f"the job's process ended without a result ({how}); "
               f"see runs/{job.label}/{LOG_FILE}")
    job.dir.mkdir(parents=True, exist_ok=True)
    (job.dir / "error.txt").write_text(message + "\n")
    return Outcome(job.label, "failed", action, None, seconds, message)


def _job_main(cfg, run_dir: Path, progress: bool, threads: int, label: str, result,
              lifeline) -> None:
    """One job in its own process: output to the job's log, train_one, send back the Outcome
    (a full disk as a fatal one: the study process stops the study)."""
    import threading

    import torch
    from tqdm import tqdm

    def watch_parent() -> None:  # the study process is gone (killed): stop training too
        try:
            lifeline.recv()
        except (EOFError, OSError):
            pass
        os._exit(1)

    threading.Thread(target=watch_parent, daemon=True).start()
    # tqdm's default lock is a multiprocessing semaphore; a job killed mid-run would leave it
    # to the resource tracker (a warning). This process writes only its own log.
    tqdm.set_lock(threading.RLock())
    torch.set_num_threads(threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / LOG_FILE, "a", buffering=1)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log.fileno(), 1)  # file descriptors too: C++ warnings, torch.compile's output
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    print(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {label}: pid {os.getpid()}, "
          f"{threads} torch thread(s) ===")
    started = time.perf_counter()
    try:
        outcome = train_locked(cfg, run_dir, progress, label)
    except ResourceError as exc:
        print(f"{type(exc).__name__}: {exc}")
        outcome = Outcome(label, "failed", "trained", None, time.perf_counter() - started,
                          str(exc), fatal=True)
    # final.json is on disk; send the rest only (a pipe blocks on large messages)
    result.send(dataclasses.replace(outcome, final=None))
    result.close()
