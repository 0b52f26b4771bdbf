"""Several jobs of a study at once (`resnorm study --jobs K`), in K worker processes: the
pool executor (resnorm.study.execution.executors)."""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from contextlib import closing
from pathlib import Path

from resnorm.rundir import LOG_FILE
from resnorm.study.execution.locks import held_by
from resnorm.study.execution.job import Job, Outcome, busy, run_job, train_locked

__all__ = ["LOG_FILE", "PoolExecutor", "job_threads", "train_jobs"]

# --- several runs at once (--jobs) ------------------------------------------------------------
# K worker processes, each taking one job at a time and calling train_locked, exactly as the
# sequential path does. A worker lives for many jobs: `import torch` and the first
# CUDA/inductor setup cost seconds, which at the demo's scale (36 jobs of a few seconds each)
# would otherwise be a third of the study. The workers are forked from a fork server
# (`_start_method`), a fresh interpreter that imports the training code once and never touches
# CUDA (importing torch does not initialise it), so a worker inits CUDA itself, as a spawned one
# does, without paying the imports again (about 5 s of CPU each); where the OS has no fork
# server (Windows), "spawn".
# Not a ProcessPoolExecutor: a worker that dies (out of memory, a segfault) breaks such a
# pool and every job still queued in it, and a pool cannot stop a running worker on Ctrl-C.
# Here a dead worker fails only the job it was training, and a fresh worker takes its place.
# Nor submitit's LocalExecutor: a fresh interpreter (and `import torch`) per job; it is the
# slower at the demo's scale (benchmarks/executor_speed.py, numbers in benchmarks/RESULTS.md).



class PoolExecutor:
    """Up to `workers` jobs at once, each in a worker process (`train_jobs`); every outcome
    goes to the recorder as the job finishes (lines in completion order)."""

    def __init__(self, recorder, workers: int, threads: int | None, progress: bool) -> None:
        self.recorder, self.workers = recorder, workers
        self.threads, self.progress = threads, progress

    def run(self, jobs: list[Job], say) -> list[Outcome]:
        tally = self.recorder.begin(jobs, say)
        # closing: whatever happens here (Ctrl-C, a full disk), the running jobs are stopped
        with closing(train_jobs(jobs, self.progress, self.workers, self.threads, say)) as done:
            for job, outcome in done:
                tally.tell(job, outcome)
        return tally.outcomes()


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

    A finished job is skipped here without a process, and so is one another study process
    holds. Each other job goes to one of up to `jobs` worker processes (`_worker_main`, with
    `job_threads` torch threads), its output appended to train.log in its folder. A
    worker that dies without reporting (killed, out of memory) fails its job (its error.txt
    says how it ended), and a new worker takes the next job. If this process is interrupted
    (Ctrl-C, an exception) the running jobs are terminated; if it is killed outright, each
    worker notices its lifeline close and exits (a job's last.pt lets a re-run resume).
    """
    from multiprocessing.connection import wait

    ctx = _start_method()
    per_job = job_threads(jobs, threads)
    say(f"jobs: up to {jobs} at once, {per_job} torch thread(s) each; each job's output "
        f"goes to {LOG_FILE} in its run folder")
    queue = []
    for job in todo:
        outcome = _without_a_process(job, progress)
        if outcome is not None:
            yield job, outcome
        else:
            queue.append(job)
    queue.reverse()  # pop() takes them in plan order
    idle: list[_Worker] = []
    busy: dict[int, _Worker] = {}  # result connection's fileno -> worker with a job
    try:
        while queue or busy:
            while queue and len(busy) < jobs:
                worker = idle.pop() if idle else _Worker(ctx, per_job)
                worker.give(queue.pop())
                busy[worker.key] = worker
            ready = wait([w.results for w in busy.values()]
                         + [w.process.sentinel for w in busy.values()])
            for worker in [w for w in busy.values()
                           if w.results in ready or w.process.sentinel in ready]:
                job = worker.job
                del busy[worker.key]
                outcome = _collect(worker, idle)
                if not queue:  # nothing left to give: idle workers free their memory now
                    while idle:
                        idle.pop().stop(kill=False)
                yield job, outcome
    finally:  # done, or interrupted (Ctrl-C, an error here, the caller stopped)
        for worker in list(busy.values()) + idle:
            worker.stop(kill=worker in busy.values())


def _collect(worker: "_Worker", idle: list["_Worker"]) -> Outcome:
    """The outcome of a worker that reported or died; a live worker goes back to `idle`."""
    outcome, job = worker.outcome(), worker.job
    if outcome is None:  # the worker died with the job: that job failed
        outcome = _died(job, worker.action, worker.process.exitcode,
                        time.perf_counter() - worker.started)
        worker.close()
        return outcome
    if outcome.status not in ("failed", "busy"):  # the job sent all but final
        outcome.final = job.final()
    worker.job = None
    idle.append(worker)
    return outcome


# What the fork server imports before it forks a worker: what every training job imports.
PRELOAD = ["resnorm.train"]


def _start_method():
    """The multiprocessing context of the workers: a fork server preloading `PRELOAD` (started
    on the first worker of this process, with this process's environment, and kept for later
    pools), else spawn."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _without_a_process(job: Job, progress: bool) -> Outcome | None:
    """The outcome of a job that needs no worker: finished already (skipped), or held by
    another study process (busy; the worker would re-check). None: it needs a worker."""
    if job.finished:
        return run_job(job, progress, lock=False)
    holder = held_by(job.dir)
    if holder is not None:
        return busy(job.label, holder)
    return None


class _Worker:
    """One worker process and its pipes: `give` it a job, read its `outcome`."""

    def __init__(self, ctx, threads: int) -> None:
        self.tasks, task_end = ctx.Pipe(duplex=False)[::-1]
        self.results, result_end = ctx.Pipe(duplex=False)
        life_end, self.lifeline = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_worker_main, name="resnorm-job", daemon=False,
                                   args=(threads, task_end, result_end, life_end, _run_job))
        self.process.start()
        for end in (task_end, result_end, life_end):  # the child's: EOF means it is gone
            end.close()
        self.key = self.results.fileno()
        self.job: Job | None = None

    def give(self, job: Job) -> None:
        self.job, self.started = job, time.perf_counter()
        self.action = ("evaluated" if job.work is not None
                       else "resumed" if job.run.resumable else "trained")
        self.tasks.send((job.cfg, job.dir, job.label, job.work))

    def outcome(self) -> Outcome | None:
        """The job's Outcome, or None when the worker died without one."""
        try:  # a few hundred bytes: fits the pipe
            if self.results.poll():
                return self.results.recv()
        except (EOFError, OSError):
            pass
        self.process.join()
        return None

    def stop(self, kill: bool) -> None:
        """End the worker: politely when idle (no more tasks), terminated when busy."""
        if kill:
            self.process.terminate()
        else:
            try:
                self.tasks.send(None)
            except OSError:
                pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.close()

    def close(self) -> None:
        for conn in (self.tasks, self.results, self.lifeline):
            conn.close()


def _died(job: Job, action: str, exitcode: int | None, seconds: float) -> Outcome:
    """The outcome of a job process that ended without reporting one."""
    how = (f"killed by signal {-exitcode}" if exitcode is not None and exitcode < 0
           else f"exit code {exitcode}")
    message = (f"the job's process ended without a result ({how}); "
               f"see {job.dir / LOG_FILE}")
    job.run.write_error(message + "\n")
    return Outcome(job.label, "failed", action, None, seconds, message)


# What a worker calls per job (passed to each worker as it starts, so a test may replace it).
_run_job = train_locked


def _worker_main(threads: int, tasks, results, lifeline, run_job) -> None:
    """A worker process: take jobs until told to stop; each job's output goes to its own log,
    complete (progress and epoch lines, as a run writes to a file) whatever the console's
    --quiet says: the log is not the console."""
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
    # to the resource tracker (a warning). This process writes only its own logs.
    tqdm.set_lock(threading.RLock())
    torch.set_num_threads(threads)
    while True:
        try:
            task = tasks.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        cfg, run_dir, label, work = task
        with _output_to(run_dir / LOG_FILE):
            print(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {label}: pid {os.getpid()}, "
                  f"{threads} torch thread(s) ===")
            outcome = (work(label, True, True) if work is not None
                       else run_job(cfg, run_dir, True, label))
        # final.json is on disk; send the rest only (a pipe blocks on large messages)
        results.send(dataclasses.replace(outcome, final=None))


class _output_to:
    """stdout and stderr (file descriptors too: C++ warnings, torch.compile's output) appended
    to `path` for the duration of a job."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = (os.dup(1), os.dup(2), sys.stdout, sys.stderr)
        self.log = open(self.path, "a", buffering=1)
        os.dup2(self.log.fileno(), 1)
        os.dup2(self.log.fileno(), 2)
        sys.stdout = sys.stderr = self.log
        return self

    def __exit__(self, *exc) -> None:
        self.log.flush()
        out, err, sys.stdout, sys.stderr = self.saved
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        self.log.close()
