"""Run a whole study plan: prepare the data once, train every run, then Grad-CAM and the report.

Each run trains once per seed of the plan, into STUDY/runs/<name>/seed-<s>/; each (run, seed)
is a job of its own for skipping, resuming, --jobs and --shard. Re-running the same command
finishes an interrupted study: finished jobs are skipped, an interrupted one resumes from its
last checkpoint, and one that failed before is tried again. A job that diverges or fails is
recorded and the study goes on; a full disk stops it (exit 4). `--jobs K` trains up to K at
once, each in its own process (resnorm.study.jobs).

example:
  resnorm study --synthetic data/synth-demo --plan configs/demo.yaml --out studies/demo
"""
from __future__ import annotations

import functools
import os
import traceback
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from resnorm.errors import ResourceError, UsageError
from resnorm.fileio import atomic_write_text, read_yaml
from resnorm.study.jobs import train_jobs
from resnorm.study.plan import Plan, load_plan, parse_seeds, resolve_fields, train_default
from resnorm.study.records import PLAN_FILE, STATE_FILE, read_state, trial_dir, write_state
from resnorm.study.training import Job, Outcome, summary_line, train_locked
from resnorm.study.tuning import TrialLog, apply_choices, tune_phase

__all__ = ["run_study", "StudyResult", "StudyState", "prepare_data", "resolved_jobs",
           "torch_threads", "make_demo_data"]


class StudyState:
    """STUDY/study.json: what the study did to each run (kept across re-runs)."""

    def __init__(self, study: Path, plan: Plan, data: str, write: bool = True) -> None:
        self.path, self.write = study / STATE_FILE, write  # write: False on ranks other than 0
        self.data = read_state(study)
        self.data.update({"data": data, "lr_rule": plan.lr_rule,
                          "base_batch_size": plan.base_batch_size,
                          "lr_rule_text": plan.lr_rule_text()})
        self.data.setdefault("runs", {})

    def record(self, name: str, **entry: Any) -> None:
        # Several processes (--shard, or the same study started K times) record their runs
        # into one file: under a lock, start from what is on disk now, so the entries the
        # others wrote meanwhile are kept.
        with self._lock():
            self.data["runs"] = {**read_state(self.path.parent).get("runs", {}), name: entry}
            self._save()

    def _lock(self):
        import filelock

        return filelock.FileLock(str(self.path.with_name(".study.json.lock")), timeout=60)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self._save()

    def _save(self) -> None:
        if self.write:
            write_state(self.path.parent, self.data)


@dataclass
class StudyResult:
    study: Path
    outcomes: list[Outcome]
    gradcam_error: str | None = None
    submitted: bool = False  # --executor slurm --no-wait: the study goes on in SLURM

    @property
    def failed(self) -> list[str]:
        return [o.name for o in self.outcomes if o.status == "failed"]


def _data_key(fields: dict[str, Any]) -> tuple[int, str]:
    """The (size, resize) a run's images are prepared at: which cache it trains on."""
    return (int(fields.get("size", train_default("size"))),
            str(fields.get("resize", train_default("resize"))))


def prepare_data(data: str | Path, plan: Plan, cache: str | None, progress: bool
                 ) -> dict[tuple[int, str], Path]:
    """Decode the dataset once per distinct (size, resize) of the plan's runs; return the caches."""
    from resnorm.data import prepare
    from resnorm.data.cache import default_cache_dir, read_manifest

    wanted = []
    for spec in plan.runs:
        key = _data_key({**plan.defaults, **spec.overrides})
        if key not in wanted:
            wanted.append(key)
    manifest = read_manifest(Path(data))
    if manifest is not None:  # --data is already a prepared cache: it must fit every run
        have = (manifest["params"]["size"], manifest["params"]["resize"])
        other = [k for k in wanted if k != have]
        if other:
            raise UsageError(f"{data} is a cache of {have[0]}px images ({have[1]}), but the "
                             f"plan has runs at {other[0][0]}px ({other[0][1]}); point --data "
                             "at the dataset folder instead")
        return {}
    caches = {}
    for size, resize in wanted:
        out = None
        if cache is not None:  # under --cache, named as prepare names its default caches
            out = Path(cache) / default_cache_dir(Path(data).resolve(), size, resize).name
        caches[(size, resize)] = prepare(data, size=size, out=out, resize=resize,
                                         progress=progress)
    return caches


def check_scored_data(todo: list[Job], say) -> None:
    """Load each cache the jobs train on, as they will score it (leaked val/test images left
    out unless keep_leaked): a validation split too small for that fails the study now, in
    one line, not in every job; say once what is left out."""
    from resnorm.data import load_cache

    notes = []
    for data, keep in dict.fromkeys((job.cfg.data, job.cfg.keep_leaked) for job in todo):
        note = load_cache(data).scored(keep).leak_note()
        if note and note not in notes:
            notes.append(note)
            say(f"warning: {note}")


def resolved_jobs(plan: Plan, data: str | Path, caches: dict, study: Path,
                  lr_notes: dict[str, str] | None = None) -> list[Job]:
    """Each (run, seed) with its fully resolved TrainConfig, in plan order and then seed
    order (checked now, so a bad plan fails before training). `lr_notes`: how the tuning
    phase set a run's lr."""
    out = []
    for spec in plan.runs:
        fields, lr_note = resolve_fields(plan, spec)
        lr_note = (lr_notes or {}).get(spec.name, lr_note)
        for seed in plan.seeds_of(spec):
            out.append(make_job(spec, fields, seed, trial_dir(study, spec.name, seed),
                                lr_note, data=data, caches=caches))
    return out


def make_job(spec, fields: dict, seed: int, folder: Path, lr_note: str, *,
             data: str | Path, caches: dict) -> Job:
    """One job: the run's fields resolved into a TrainConfig training into `folder`."""
    from resnorm.train import resolve_config

    run_data = caches.get(_data_key(fields), Path(data))
    try:
        cfg = resolve_config({**fields, "seed": seed, "data": str(run_data),
                              "name": spec.name, "out": str(folder)})
    except UsageError as exc:
        raise UsageError(f"plan run '{spec.name}': {exc}") from None
    _check_unchanged(cfg, folder)
    return Job(spec, seed, cfg, lr_note)


def _check_unchanged(cfg, run_dir: Path) -> None:
    """Refuse to reuse a (run, seed) folder trained with other settings than the plan now
    gives."""
    from resnorm.train.resume import mismatches

    changed = mismatches(cfg, read_yaml(run_dir / "config.yaml"))
    if changed:
        raise UsageError(f"{run_dir} was trained with other settings than the plan now gives "
                         f"({'; '.join(changed)}); delete that folder or use another --out")


def run_study(plan_path: str | Path, out: str | Path, *, data: str | Path | None = None,
              synthetic: str | Path | None = None, cache: str | None = None,
              progress: bool = True, gradcam: bool = True, report: bool = True,
              say=print, shard: tuple[int, int] | None = None, jobs: int | str = 1,
              seeds: int | list[int] | None = None, keep_leaked: bool = False,
              executor: str = "local", slurm: dict | None = None) -> "StudyResult":
    """The whole study: data once, every run in order, then Grad-CAM and the report.

    `shard=(i, k)` trains only the runs `shard_indices` gives shard i of k (round-robin in
    plan order) and leaves Grad-CAM and the report to an unsharded run or `resnorm report`.
    Under torchrun every run trains on all processes; rank 0 alone writes the study's files.
    `jobs=K`: up to K runs at once in separate processes (`train_jobs`; "auto": as many as fit).
    `seeds` (--seeds) overrides the plan's `seeds:`; `keep_leaked` its defaults' keep_leaked.
    `executor="slurm"`: each job a task of one SLURM array (resnorm.study.slurm), `slurm` the
    command line's settings over the plan's `slurm:` section.
    """
    from resnorm.distributed import DistInfo, in_turn, init_from_env, launched_world_size
    from resnorm.train import device_type

    plan = load_plan(plan_path)
    if seeds is not None:
        plan.seeds = parse_seeds(seeds, "--seeds")
    if keep_leaked:  # --keep-leaked: as if the plan's defaults said keep_leaked: true
        plan.defaults["keep_leaked"] = True
    study = Path(out)
    jobs = _check_options(data, synthetic, jobs, executor, shard)
    info = DistInfo()
    if launched_world_size() > 1:  # under torchrun: join the group every run trains in
        info = init_from_env(device_type(str(plan.defaults.get("device", "auto"))))
    if not info.is_main:
        progress, say = False, lambda *args, **kwargs: None
        gradcam = report = False
    if synthetic is not None:
        data = in_turn(info, lambda: make_demo_data(synthetic, plan, progress))
    elif not Path(data).exists():
        raise UsageError(f"data folder {data} does not exist")
    if executor == "slurm" and cache is None and not os.environ.get("RESNORM_CACHE"):
        cache = str(study / "cache")  # where every node can read it: beside the runs

    with torch_threads(plan.threads):
        caches = in_turn(info, lambda: prepare_data(data, plan, cache, progress))
        todo = _tuned_jobs(plan, study, data, caches, progress, say, jobs, executor, slurm)
        check_scored_data(todo, say)
        (study / "runs").mkdir(parents=True, exist_ok=True)
        if info.is_main:
            _write_plan_copy(plan, study)
        state = StudyState(study, plan, str(data), write=info.is_main)
        seeds_text = ", ".join(map(str, plan.seeds_of(plan.runs[0])))
        say(f"study {study}: {len(plan.runs)} runs x {len(todo) // len(plan.runs)} seed(s) "
            f"({seeds_text}) = {len(todo)} jobs; lr across batch sizes: {plan.lr_rule_text()}")
        if shard is not None:
            todo = _shard_of(todo, shard, say)
            gradcam = report = False
        finish = functools.partial(finish_study, study, plan, state, gradcam=gradcam,
                                   report=report)
        outcomes = _train(todo, state, plan, progress, say, jobs=jobs, executor=executor,
                          slurm=slurm, finish=finish)
        if outcomes is None:  # --no-wait: a job after the SLURM array finishes the study
            return StudyResult(study, [], submitted=True)
        return finish(todo, outcomes, say=say)


def _tuned_jobs(plan: Plan, study: Path, data, caches: dict, progress: bool, say,
                jobs: int | str, executor: str, slurm: dict | None) -> list[Job]:
    """The final jobs (all checked before training), after the lr search of the plan's
    `tune:` (resnorm.study.tuning) when it has one: its trials train as the final jobs will,
    and the chosen lrs go into the runs."""
    def execute(trials: list[Job], say) -> list[Outcome]:  # (-> the executor's run)
        return _train(trials, TrialLog(study), plan, progress, say, jobs=jobs,
                      executor=executor, slurm={**(slurm or {}), "wait": True}, finish=None)

    tuned_plan, lr_notes = apply_choices(plan, tune_phase(
        plan, study, functools.partial(make_job, data=data, caches=caches), execute, say))
    return resolved_jobs(tuned_plan, data, caches, study, lr_notes)


def _train(todo: list[Job], state: "StudyState", plan: Plan, progress: bool, say, *,
           jobs: int | str, executor: str, slurm: dict | None, finish) -> list[Outcome] | None:
    """Every job, here (`train_all`) or as SLURM tasks (resnorm.study.slurm)."""
    if executor == "slurm":
        from resnorm.study.slurm import slurm_settings, train_on_slurm

        return train_on_slurm(todo, state, slurm_settings(plan.slurm, slurm or {}),
                              threads=plan.threads, say=say, finish=finish)
    return train_all(todo, state, progress, say, threads=plan.threads,
                     jobs=_jobs_that_fit(todo, jobs, plan.threads, say))


def _check_options(data, synthetic, jobs, executor: str, shard) -> int | str:
    """The options that cannot go together, each refused in one line; returns --jobs."""
    from resnorm.distributed import launched_world_size

    if (data is None) == (synthetic is None):
        raise UsageError("give exactly one of --data DATA or --synthetic DIR")
    if executor not in ("local", "slurm"):
        raise UsageError(f"--executor must be local or slurm, got {executor!r}")
    if executor == "slurm" and (launched_world_size() > 1 or shard is not None
                                or jobs not in (1, "auto")):
        raise UsageError("--executor slurm runs each job as its own SLURM task: it does not "
                         "combine with --jobs, --shard or torchrun (docs/distributed.md)")
    if jobs == "auto" and (launched_world_size() > 1 or executor == "slurm"):
        jobs = 1  # under torchrun every process of the group trains each run
    if jobs != "auto" and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise UsageError(f"--jobs must be a positive integer or auto, got {jobs!r}")
    if jobs != "auto" and jobs > 1 and launched_world_size() > 1:
        raise UsageError("--jobs > 1 cannot be combined with torchrun (every process of the "
                         "group trains each run); use --jobs 1, or --shard per machine")
    return jobs


def _shard_of(todo: list[Job], shard: tuple[int, int], say) -> list[Job]:
    from resnorm.distributed import shard_indices

    todo = [todo[j] for j in shard_indices(len(todo), *shard)]
    say(f"shard {shard[0]}/{shard[1]}: {len(todo)} of the jobs: "
        f"{', '.join(job.label for job in todo) or 'none'}; Grad-CAM and the "
        f"report are left to `resnorm study` without --shard or `resnorm report`")
    return todo


def finish_study(study: Path, plan: Plan, state: "StudyState", todo: list[Job],
                 outcomes: list[Outcome], *, gradcam: bool, report: bool,
                 say=print) -> "StudyResult":
    """After the training: Grad-CAM and the report, unless other processes still train jobs
    of the plan (the last one to finish writes them). Also what the job after a SLURM array
    runs (`--executor slurm --no-wait`)."""
    result = StudyResult(study, outcomes)
    if (gradcam or report) and _in_progress(todo, say):
        gradcam = report = False
    if gradcam and not _study_gradcam_step(study, plan, state, say):
        result.gradcam_error = state.data["gradcam_error"]
    if report:
        from resnorm.report import write_report

        html_path, _ = write_report(study)
        say(f"report: {html_path}")
    return result


def train_all(todo: list[Job], state: "StudyState", progress: bool, say, *,
              jobs: int = 1, threads: int | None = None) -> list[Outcome]:
    """Every job; each outcome is recorded in study.json (by this process alone) and gets its
    summary line as soon as it is known. jobs=1: in plan order, in this process; jobs>1: see
    `train_jobs` (lines in completion order, numbered as they finish). Returns the outcomes in
    plan order. A full disk (ResourceError) is recorded, then raised: it stops the study. A
    job another study process holds (its lock) is skipped with a line saying who."""
    from resnorm.distributed import launched_world_size

    width = max((len(job.label) for job in todo), default=0)
    done: dict[str, Outcome] = {}
    if jobs > 1:
        outcomes = train_jobs(todo, progress, jobs, threads, say)
    else:
        lock = launched_world_size() == 1  # under torchrun the ranks train every job together
        outcomes = ((job, train_locked(job.cfg, job.dir, progress, job.label, lock))
                    for job in todo)
    with closing(outcomes):  # whatever happens here, running jobs are stopped
        for job, outcome in outcomes:
            if outcome.status != "busy":  # the other process records it
                state.record(job.label, status=outcome.status, action=outcome.action,
                             seconds=round(outcome.seconds, 3), error=outcome.error,
                             lr=job.cfg.lr, lr_note=job.lr_note)
            done[job.label] = outcome
            say(summary_line(len(done), len(todo), outcome, width))
            if outcome.fatal:
                raise ResourceError(outcome.error)
    return [done[job.label] for job in todo]


def _jobs_that_fit(todo: list[Job], jobs: int | str, threads: int | None, say) -> int:
    """--jobs auto: as many as the device (GPU memory and SMs, or CPU cores) holds; --jobs K
    on a GPU: refused up front, in one line, when K jobs cannot fit (resnorm.study.capacity)."""
    from resnorm.study.capacity import auto_jobs, check_jobs_fit

    pending = [job.cfg for job in todo if not (job.dir / "final.json").exists()]
    if jobs == "auto":
        if not pending:
            return 1
        jobs, why = auto_jobs(pending, threads=threads)
        say(why)
    elif jobs > 1 and pending:
        note = check_jobs_fit(pending, jobs)
        if note:
            say(note)
    return jobs


def _in_progress(todo: list[Job], say) -> bool:
    """Whether other study processes still train jobs of this plan (their locks); if so, say
    which: the last process to finish writes Grad-CAM and the report."""
    from resnorm.study.locks import held_by

    busy = [(job, held_by(job.dir)) for job in todo if not (job.dir / "final.json").exists()]
    busy = [(job, holder) for job, holder in busy if holder is not None]
    if busy:
        say(f"study: {len(busy)} job(s) still being trained by other processes: "
            f"{', '.join(f'{job.label} by {holder}' for job, holder in busy)}; the last "
            "process to finish writes Grad-CAM and the report")
    return bool(busy)


@contextmanager
def torch_threads(threads: int | None):
    """Run with `threads` intra-op threads (the plan's `threads`), restored afterwards.

    Small models on a CPU spend more time synchronising threads than computing, and on a
    shared machine idle threads spin; the demo plan asks for one thread.
    """
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_demo_data(directory: str | Path, plan: Plan, progress: bool) -> Path:
    """The synthetic dataset in `directory`: generated when missing (plan's `synthetic:` sizes)."""
    from resnorm.data import make_synthetic
    from resnorm.data.synth import read_marker

    directory = Path(directory)
    params = dict(plan.synthetic)
    if read_marker(directory) is not None and not params:
        return directory  # already there, and the plan does not ask for particular sizes
    return make_synthetic(directory, progress=progress, **params)


def _write_plan_copy(plan: Plan, study: Path) -> None:
    atomic_write_text(study / PLAN_FILE, yaml.safe_dump(plan.to_yaml_dict(), sort_keys=False))


def _study_gradcam_step(study: Path, plan: Plan, state: "StudyState", say) -> bool:
    """Grad-CAM of the best run. A failure is printed with its traceback and kept in
    study.json, and the report is still written; the study then exits 1. Returns success."""
    from resnorm.gradcam import format_summary, study_gradcam

    try:
        summary = study_gradcam(study, study / "gradcam", **plan.gradcam)
    except UsageError as exc:  # e.g. no finished run: nothing to explain, not an error
        say(f"gradcam: skipped: {exc}")
        state.set("gradcam_error", None)
        return True
    except Exception as exc:  # noqa: BLE001 - reported in full, reflected in the exit code
        traceback.print_exc()
        state.set("gradcam_error", f"{type(exc).__name__}: {exc}".splitlines()[0])
        return False
    state.set("gradcam_error", None)
    say(format_summary(summary, study / "gradcam"))
    return True
