"""Which local executor trains a study's jobs faster: the pool (`--jobs K`: K worker
processes that live for many jobs) or submitit's LocalExecutor (a fresh process per job).

A tiny study: `--runs` jobs (4 norms x seeds) of a 2-epoch run at 32x32 (ResNet n=1, batch
16, CPU, one torch thread per job) on a small synthetic dataset, K (`--workers`) at once.
Each executor trains the same jobs, with the same `train_locked`, into fresh folders; the
time is from the first job handed out to the last outcome in (worker start-up included: it
is what a user waits for). The in-process executor (--jobs 1, in this already warm process)
is printed beside them for reference. `--rounds R` alternates the order (ABBA) and reports
medians.

    python benchmarks/executor_speed.py                   # 8 jobs, 2 at once
    python benchmarks/executor_speed.py --rounds 2

Setup (the synthetic images, the 32x32 cache) is made before any timing, in --work.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

NORMS = ("bn", "gn", "ln", "in")


def setup(work: Path) -> Path:
    from resnorm.data import make_synthetic, prepare

    root = make_synthetic(work / "synth", num_classes=5, train_per_class=32, val_per_class=8,
                          seed=0, side_range=(32, 64))
    return prepare(root, size=32, out=work / "cache32", workers=1, progress=False)


def jobs_in(study: Path, cache: Path, count: int) -> list:
    """`count` jobs (norms x seeds) of the tiny study, resolved into `study`."""
    from resnorm.study.plan.parse import parse_plan
    from resnorm.study.plan.resolve import resolve_runs
    from resnorm.study.execution.make_jobs import resolved_jobs

    plan = parse_plan({"threads": 1, "seeds": -(-count // len(NORMS)),
                       "defaults": {"size": 32, "n": 1, "epochs": 2, "batch_size": 16,
                                    "device": "cpu"},
                       "runs": [{"name": norm, "norm": norm} for norm in NORMS]})
    return resolved_jobs(resolve_runs(plan).values(), cache, {}, study)[:count]


def run_pool(jobs: list, workers: int) -> list:
    from resnorm.study.execution.executors import make_executor
    from resnorm.study.execution.state import OutcomeRecorder

    executor = make_executor("pool", jobs=workers, threads=1, progress=False,
                             recorder=OutcomeRecorder(None))
    return executor.run(jobs, lambda line: None)


def run_submitit(jobs: list, workers: int, folder: Path) -> list:
    """submitit's LocalExecutor, `workers` jobs at once (it has no array limit of its own:
    a new job is submitted as one ends)."""
    import submitit

    from resnorm.study.execution.slurm import TrainTask

    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=60)
    queue, running, outcomes = list(jobs), [], []
    while queue or running:
        while queue and len(running) < workers:
            running.append(executor.submit(TrainTask(threads=1), queue.pop(0)))
        time.sleep(0.05)
        for task in [task for task in running if task.done()]:
            running.remove(task)
            outcomes.append(task.result())
    return outcomes


def run_inprocess(jobs: list) -> list:
    from resnorm.study.execution.executors import make_executor
    from resnorm.study.execution.state import OutcomeRecorder

    quiet = io.StringIO()  # each run's closing line, as in a log
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        return make_executor("inprocess", recorder=OutcomeRecorder(None),
                             progress=False).run(jobs, lambda line: None)


def timed(name: str, fn, jobs: list) -> float:
    started = time.perf_counter()
    outcomes = fn(jobs)
    seconds = time.perf_counter() - started
    bad = [o for o in outcomes if o.status != "completed" or o.action != "trained"]
    if bad or len(outcomes) != len(jobs):
        sys.exit(f"{name}: not every job trained: {bad or outcomes}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="jobs in the study (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="jobs at once (default 2)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="executor-speed-"))
    try:
        return compare(args, work)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def compare(args: argparse.Namespace, work: Path) -> int:
    cache = setup(work)
    contenders = {
        "pool (--jobs K)": lambda jobs: run_pool(jobs, args.workers),
        "submitit LocalExecutor": lambda jobs: run_submitit(jobs, args.workers,
                                                            work / f"submitit-{time.time_ns()}"),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(args.rounds):
        order = list(contenders) if r % 2 == 0 else list(contenders)[::-1]
        for name in order:
            jobs = jobs_in(work / f"r{r}-{name.split()[0]}", cache, args.runs)
            times[name].append(timed(name, contenders[name], jobs))
            print(f"round {r}: {name}: {times[name][-1]:.1f} s", flush=True)
    reference = timed("in-process", run_inprocess, jobs_in(work / "inprocess", cache, args.runs))
    pool, other = (statistics.median(times[name]) for name in contenders)
    print(f"\n{args.runs} jobs (2 epochs, 32x32, n=1, CPU, 1 thread each), "
          f"{args.workers} at once, median of {args.rounds} round(s):")
    print(f"  pool (--jobs {args.workers}):          {pool:7.1f} s")
    print(f"  submitit LocalExecutor:    {other:7.1f} s")
    print(f"  submitit / pool:           {other / pool:7.2f}x")
    print(f"  (in-process, one at a time: {reference:.1f} s)")
    print("  rounds: " + "; ".join(f"{name}: " + ", ".join(f"{t:.1f}" for t in ts)
                                  for name, ts in times.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
