"""A plan's jobs: each (run, seed) with its fully resolved TrainConfig, checked before any
trains; and the share of them one --shard trains."""
from __future__ import annotations

from pathlib import Path

from resnorm.errors import UsageError
from resnorm.rundir import RunDir
from resnorm.study.plan.parse import Plan, RunSpec, resolve_fields
from resnorm.study.datasets import data_key
from resnorm.study.execution.records import trial_dir
from resnorm.study.execution.job import Job

__all__ = ["resolved_jobs", "make_job", "shard_of"]


def resolved_jobs(plan: Plan, data: str | Path, caches: dict, study: Path,
                  lr_notes: dict[str, str] | None = None, check: bool = True) -> list[Job]:
    """Each (run, seed) with its fully resolved TrainConfig, in plan order and then seed
    order (checked now, so a bad plan fails before training). `lr_notes`: how a tuning phase
    set a run's lr (resnorm.study.tuning.phase), over the plan's own note. check=False: do not
    compare with what the folders hold (a plan to be tuned: its final lrs are not known)."""
    out = []
    for spec in plan.runs:
        fields, lr_note = resolve_fields(plan, spec)
        lr_note = (lr_notes or {}).get(spec.name, lr_note)
        for seed in plan.seeds_of(spec):
            out.append(make_job(spec, fields, seed, trial_dir(study, spec.name, seed), lr_note,
                                data=data, caches=caches, check=check))
    return out


def make_job(spec: RunSpec, fields: dict, seed: int, folder: Path, lr_note: str, *,
             data: str | Path, caches: dict, check: bool = True) -> Job:
    """One job: a run's resolved fields as a TrainConfig that trains into `folder` on the
    data (or the cache prepared for its size), checked against what the folder holds."""
    from resnorm.train import resolve_config

    run_data = caches.get(data_key(fields), Path(data))
    try:
        cfg = resolve_config({**fields, "seed": seed, "data": str(run_data),
                              "name": spec.name, "out": str(folder)})
    except UsageError as exc:
        raise UsageError(f"plan run '{spec.name}': {exc}") from None
    if check:
        check_unchanged(cfg, folder)
    return Job(spec, seed, cfg, lr_note)


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
