"""A study's jobs: each (run, seed) of the resolved runs (resnorm.study.plan.resolve) as a
TrainConfig, checked before any trains; and the share of them one --shard trains."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from resnorm.errors import UsageError
from resnorm.rundir import RunDir
from resnorm.studydir import StudyDir
from resnorm.study.datasets import data_key
from resnorm.study.plan.manifest import ResolvedRun
from resnorm.study.execution.job import Job

__all__ = ["resolved_jobs", "make_job", "shard_of"]


def resolved_jobs(runs: Iterable[ResolvedRun], data: str | Path, caches: dict, study: Path,
                  check: bool = True) -> list[Job]:
    """Each (run, seed) of the resolved runs as a Job, in plan order and then seed order
    (checked now, so a bad plan fails before training). check=False: do not compare with
    what the folders hold (a plan to be tuned: its final settings are not known yet)."""
    return [make_job(run, run.config, seed, StudyDir(study).trial(run.name, seed), run.lr_note,
                     data=data, caches=caches, check=check)
            for run in runs for seed in run.seeds]


def make_job(run, fields: dict, seed: int, folder: Path, lr_note: str, *,
             data: str | Path, caches: dict, check: bool = True) -> Job:
    """One job of `run` (anything with a name: a ResolvedRun, a tuning trial): its resolved
    fields as a TrainConfig that trains into `folder` on the data (or the cache prepared for
    its size), checked against what the folder holds. The fields are complete already: this
    fills in the job's own seed, folder and data and checks them, nothing else."""
    from resnorm.train import resolve_config

    run_data = caches.get(data_key(fields), Path(data))
    try:
        cfg = resolve_config({**fields, "seed": seed, "data": str(run_data),
                              "name": run.name, "out": str(folder)})
    except UsageError as exc:
        raise UsageError(f"plan run '{run.name}': {exc}") from None
    if check:
        check_unchanged(cfg, folder)
    return Job(run, seed, cfg, lr_note)


def check_unchanged(cfg, run_dir: Path) -> None:
    """Refuse to reuse a (run, seed) folder trained with other settings than the plan now
    gives."""
    from resnorm.train.resume import mismatches

    changed = mismatches(cfg, RunDir(run_dir).config())
    if changed:
        raise UsageError(f"{run_dir} was trained with other settings than the plan now gives "
                         f"({'; '.join(changed)}); delete that folder or use another --out")


def shard_of(todo: list[Job], shard: tuple[int, int], say) -> list[Job]:
    """The jobs shard i of k trains (round-robin in plan order), said in one line."""
    from resnorm.distributed import shard_indices

    todo = [todo[j] for j in shard_indices(len(todo), *shard)]
    say(f"shard {shard[0]}/{shard[1]}: {len(todo)} of the jobs: "
        f"{', '.join(job.label for job in todo) or 'none'}; Grad-CAM and the "
        f"report are left to `resnorm study` without --shard or `resnorm report`")
    return todo
