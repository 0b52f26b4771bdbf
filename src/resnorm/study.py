"""Run a whole study plan: prepare the data once, train every run, then Grad-CAM and the report.

A plan is YAML with shared `defaults:` (any TrainConfig field) and a list of `runs:` (a
`name` plus overrides); see configs/demo.yaml and docs/architecture.md. Each run trains into
STUDY/runs/<name>/. Re-running the same command finishes an interrupted study: completed runs
are skipped, an interrupted run resumes from its last checkpoint, and a run that failed before
is tried again. A run that diverges or fails is recorded and the study goes on.

`--jobs K` trains up to K runs at once, each in its own process (see `train_jobs`).

example:
  resnorm study --synthetic data/synth-demo --plan configs/demo.yaml --out studies/demo
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import traceback
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from resnorm.errors import DivergedError, UsageError
from resnorm.fileio import atomic_write_text, read_json, read_yaml

__all__ = [
    "Plan",
    "RunSpec",
    "load_plan",
    "parse_plan",
    "RunRecord",
    "collect_runs",
    "best_run",
    "run_study",
    "study_gradcam",
    "configure_parser",
    "run_cli",
]

PLAN_FILE = "plan.yaml"      # the study's copy of its plan
STATE_FILE = "study.json"    # per-run outcome as the study saw it (failures, lr applied)
PLAN_KEYS = ("description", "lr_rule", "base_batch_size", "sanity_tolerance", "threads",
             "synthetic", "gradcam", "defaults", "runs")
# TrainConfig fields a plan may not set: the study decides where data and runs live.
STUDY_OWNED_FIELDS = ("data", "cache", "out", "name")
# How the learning rate follows the batch size B, relative to the plan's base batch size B0.
LR_RULES = {
    "linear": lambda ratio: ratio,          # lr = base_lr * B / B0 (Goyal et al. 2017)
    "sqrt": lambda ratio: math.sqrt(ratio),  # lr = base_lr * sqrt(B / B0)
    "none": lambda ratio: 1.0,               # the same lr at every batch size
}
GRADCAM_KEYS = ("classes", "per_class", "seed")
# make_synthetic's settings a plan may give for `resnorm study --synthetic DIR`.
SYNTHETIC_KEYS = ("num_classes", "class_names", "train_per_class", "val_per_class", "seed",
                  "side_range", "png_fraction")
# Sanity check (PyTorch BN vs own BN): largest allowed difference between their curves over all
# epochs (metric: accuracy/F1, absolute; loss: relative) and after the first epoch, before
# rounding differences have compounded (first_epoch: both kinds).
DEFAULT_TOLERANCE = {"metric": 0.02, "loss": 0.05, "first_epoch": 0.01}
OK_STATUSES = ("completed", "early_stopped")


# --- the plan ---------------------------------------------------------------------------------

@dataclass
class RunSpec:
    """One run of a plan: its name and the fields it sets beyond the defaults."""

    name: str
    overrides: dict[str, Any]


@dataclass
class Plan:
    description: str
    defaults: dict[str, Any]
    runs: list[RunSpec]
    lr_rule: str = "none"
    base_batch_size: int = 32
    sanity_tolerance: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TOLERANCE))
    gradcam: dict[str, Any] = field(default_factory=dict)
    synthetic: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None  # torch intra-op threads while the study runs (None: torch's)

    def lr_rule_text(self) -> str:
        """The learning-rate rule across batch sizes in words (the report repeats it)."""
        if self.lr_rule == "linear":
            return (f"linear scaling: lr = base lr x batch size / {self.base_batch_size} "
                    "for runs that do not set their own lr")
        if self.lr_rule == "sqrt":
            return (f"square-root scaling: lr = base lr x sqrt(batch size / "
                    f"{self.base_batch_size}) for runs that do not set their own lr")
        return "none: every batch size uses the recipe's lr unchanged"

    def to_yaml_dict(self) -> dict:
        return {"description": self.description, "lr_rule": self.lr_rule,
                "base_batch_size": self.base_batch_size,
                "sanity_tolerance": self.sanity_tolerance, "threads": self.threads,
                "synthetic": self.synthetic,
                "gradcam": self.gradcam,
                "defaults": self.defaults,
                "runs": [{"name": r.name, **r.overrides} for r in self.runs]}


def _train_fields() -> dict[str, dataclasses.Field]:
    from resnorm.train import TrainConfig

    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def _check_fields(where: str, values: dict, allowed: dict[str, Any]) -> None:
    for key in values:
        if key in STUDY_OWNED_FIELDS:
            raise UsageError(f"{where}: '{key}' is set by the study, not the plan "
                             "(use --data/--out)")
        if key not in allowed:
            raise UsageError(f"{where}: unknown field '{key}' (TrainConfig fields: "
                             f"{', '.join(k for k in allowed if k not in STUDY_OWNED_FIELDS)})")


def parse_plan(raw: Any, source: str = "plan") -> Plan:
    """Validate a plan's parsed YAML; every problem is a one-line UsageError."""
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: a plan is a mapping with 'defaults:' and 'runs:'")
    unknown = [k for k in raw if k not in PLAN_KEYS]
    if unknown:
        raise UsageError(f"{source}: unknown key '{unknown[0]}' "
                         f"(plan keys: {', '.join(PLAN_KEYS)})")
    allowed = _train_fields()
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise UsageError(f"{source}: 'defaults' must be a mapping of TrainConfig fields")
    _check_fields(f"{source}: defaults", defaults, allowed)
    runs_raw = raw.get("runs")
    if not isinstance(runs_raw, list) or not runs_raw:
        raise UsageError(f"{source}: 'runs' must be a non-empty list of runs (each with a name)")
    runs, seen = [], set()
    for i, entry in enumerate(runs_raw, 1):
        if not isinstance(entry, dict) or not entry.get("name"):
            raise UsageError(f"{source}: run #{i} must be a mapping with a 'name'")
        name = str(entry["name"])
        if name in seen:
            raise UsageError(f"{source}: two runs are named '{name}'")
        if name in (".", "..") or "/" in name or "\\" in name:
            raise UsageError(f"{source}: run name '{name}' must be a plain folder name")
        seen.add(name)
        overrides = {k: v for k, v in entry.items() if k != "name"}
        _check_fields(f"{source}: run '{name}'", overrides, allowed)
        runs.append(RunSpec(name, overrides))
    plan = Plan(description=str(raw.get("description") or ""), defaults=dict(defaults), runs=runs)
    plan.lr_rule = str(raw.get("lr_rule", "none"))
    if plan.lr_rule not in LR_RULES:
        raise UsageError(f"{source}: lr_rule '{plan.lr_rule}' is not one of {', '.join(LR_RULES)}")
    plan.base_batch_size = _positive_int(raw.get("base_batch_size", 32),
                                         f"{source}: base_batch_size")
    plan.sanity_tolerance = _tolerance(raw.get("sanity_tolerance"), source)
    if raw.get("threads") is not None:
        plan.threads = _positive_int(raw["threads"], f"{source}: threads")
    plan.gradcam = _sub_mapping(raw, "gradcam", GRADCAM_KEYS, source)
    plan.synthetic = _sub_mapping(raw, "synthetic", SYNTHETIC_KEYS, source)
    return plan


def _sub_mapping(raw: dict, key: str, allowed: tuple[str, ...], source: str) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise UsageError(f"{source}: '{key}' must be a mapping ({', '.join(allowed)})")
    bad = [k for k in value if k not in allowed]
    if bad:
        raise UsageError(f"{source}: {key}: unknown key '{bad[0]}' ({', '.join(allowed)})")
    return dict(value)


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{where} must be a positive integer, got {value!r}")
    return value


def _tolerance(value: Any, source: str) -> dict[str, float]:
    """`sanity_tolerance`: a number (for accuracy/F1) or {metric:, loss:, first_epoch:}."""
    tol = dict(DEFAULT_TOLERANCE)
    if value is None:
        return tol
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = {"metric": value}
    if not isinstance(value, dict) or any(k not in tol for k in value):
        raise UsageError(f"{source}: sanity_tolerance must be a number or a mapping with "
                         f"'metric' (absolute, accuracy/F1), 'loss' (relative) and "
                         f"'first_epoch' (both, after epoch 1)")
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise UsageError(f"{source}: sanity_tolerance.{k} must be a number >= 0")
        tol[k] = float(v)
    return tol


def load_plan(path: str | os.PathLike) -> Plan:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"plan {path} does not exist") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UsageError(f"plan {path} is not valid YAML{where}: "
                         f"{getattr(exc, 'problem', None) or exc}") from None
    return parse_plan(raw, str(path))


# --- resolving a run's configuration ----------------------------------------------------------

def resolve_fields(plan: Plan, spec: RunSpec) -> tuple[dict[str, Any], str]:
    """The TrainConfig fields of one run (defaults + overrides + lr rule), and how lr was set.

    A run that sets `lr` itself keeps it. Otherwise the base lr (the defaults' `lr`, else the
    recipe's lr at the plan's base batch size) is scaled by the plan's rule to the run's batch
    size, and written into the run's config explicitly, so config.yaml shows the lr used.
    """
    fields = {**plan.defaults, **spec.overrides}
    if "lr" in spec.overrides:
        return fields, "set by the run"
    base_lr, source = fields.get("lr"), "plan default"
    if base_lr is None:
        recipe = fields.get("recipe", _train_default("recipe"))
        base_lr = _recipe_lr(fields, plan.base_batch_size)
        source = f"{recipe} recipe at batch {plan.base_batch_size}"
    from resnorm.distributed import launched_world_size

    # under torchrun a step takes batch_size images on each process: the rule scales the lr
    # with that global batch
    batch = int(fields.get("batch_size", _train_default("batch_size"))) * launched_world_size()
    factor = LR_RULES[plan.lr_rule](batch / plan.base_batch_size)
    fields["lr"] = float(base_lr) * factor
    note = f"{float(base_lr):g} ({source})"
    if factor != 1.0:
        note += f" x {factor:g} ({plan.lr_rule} rule, batch {batch})"
    return fields, note


def _train_default(name: str) -> Any:
    f = _train_fields()[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _recipe_lr(fields: dict[str, Any], base_batch_size: int) -> float:
    """The lr the run's recipe gives at the plan's base batch size (the base of the lr rule)."""
    from resnorm.train import resolve_config

    probe = {**fields, "batch_size": base_batch_size, "lr": None, "data": "-", "out": "-"}
    try:
        return float(resolve_config(probe, world_size=1).lr)
    except UsageError as exc:
        raise UsageError(f"run settings {fields}: {exc}") from None


# --- reading a study folder -------------------------------------------------------------------

@dataclass
class RunRecord:
    """What a study folder holds about one run (whatever state it is in)."""

    name: str
    dir: Path
    status: str  # completed | early_stopped | diverged | failed | interrupted | not started
    config: dict
    final: dict | None
    rows: list[dict]
    error: str | None = None
    in_plan: bool = True

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES and self.final is not None

    def evaluation(self, split: str) -> dict:
        """The best checkpoint's eval pass on 'train', 'val' (alias 'valid') or 'test'."""
        ev = (self.final or {}).get("eval") or {}
        alias = {"val": "valid", "valid": "val"}.get(split)
        return ev.get(split) or (ev.get(alias) if alias else None) or {}

    def score(self, split: str, key: str) -> float | None:
        """One metric of `evaluation(split)`, or None."""
        try:
            return float(self.evaluation(split)[key])
        except (TypeError, KeyError, ValueError):
            return None


def read_state(study: Path) -> dict:
    return read_json(study / STATE_FILE) or {"runs": {}}


def collect_runs(study: str | os.PathLike) -> list[RunRecord]:
    """Every run of a study: the plan's runs in plan order, then any other run folders."""
    from resnorm.metrics import read_metrics_csv

    study = Path(study)
    plan_raw = read_yaml(study / PLAN_FILE)
    planned = [str(r["name"]) for r in plan_raw.get("runs", [])
               if isinstance(r, dict) and "name" in r]
    found = sorted(p.name for p in (study / "runs").glob("*") if p.is_dir())
    state = read_state(study).get("runs", {})
    records = []
    for name in planned + [n for n in found if n not in planned]:
        run_dir = study / "runs" / name
        final = read_json(run_dir / "final.json")
        csv_path = run_dir / "metrics.csv"
        rows = read_metrics_csv(csv_path) if csv_path.exists() else []
        entry = state.get(name, {})
        if final is not None:
            status = final.get("status", "completed")
        elif entry.get("status") == "failed":
            status = "failed"
        elif (run_dir / "last.pt").exists():
            status = "interrupted"
        else:
            status = "not started"
        records.append(RunRecord(name, run_dir, status, read_yaml(run_dir / "config.yaml"), final,
                                 rows, entry.get("error") if status == "failed" else None,
                                 name in planned))
    return records


def best_run(records: list[RunRecord]) -> RunRecord | None:
    """The finished run with the highest val accuracy of its best checkpoint (first on ties)."""
    scored = [r for r in records if r.ok and r.score("val", "acc") is not None]
    return max(scored, key=lambda r: r.score("val", "acc"), default=None)


# --- running a study --------------------------------------------------------------------------


def _write_json_atomic(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


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
        # Shards of a study (--shard) record their runs into one file: start from what is on
        # disk now, so the entries other shards wrote meanwhile are kept.
        self.data["runs"] = {**read_state(self.path.parent).get("runs", {}), name: entry}
        self._save()

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self._save()

    def _save(self) -> None:
        if self.write:
            _write_json_atomic(self.path, self.data)


@dataclass
class Outcome:
    """How one run went in this invocation of the study."""

    name: str
    status: str            # completed | early_stopped | diverged | failed
    action: str            # trained | resumed | skipped
    final: dict | None
    seconds: float
    error: str | None = None


@dataclass
class StudyResult:
    study: Path
    outcomes: list[Outcome]
    gradcam_error: str | None = None

    @property
    def failed(self) -> list[str]:
        return [o.name for o in self.outcomes if o.status == "failed"]


def _data_key(fields: dict[str, Any]) -> tuple[int, str]:
    """The (size, resize) a run's images are prepared at: which cache it trains on."""
    return (int(fields.get("size", _train_default("size"))),
            str(fields.get("resize", _train_default("resize"))))


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


def resolved_configs(plan: Plan, data: str | Path, caches: dict, study: Path):
    """Each run's fully resolved TrainConfig (checked now, so a bad plan fails before training)."""
    from resnorm.train import resolve_config

    out = []
    for spec in plan.runs:
        fields, lr_note = resolve_fields(plan, spec)
        run_data = caches.get(_data_key(fields), Path(data))
        try:
            cfg = resolve_config({**fields, "data": str(run_data), "name": spec.name,
                                  "out": str(study / "runs" / spec.name)})
        except UsageError as exc:
            raise UsageError(f"plan run '{spec.name}': {exc}") from None
        _check_unchanged(cfg, study / "runs" / spec.name)
        out.append((spec, cfg, lr_note))
    return out


def _check_unchanged(cfg, run_dir: Path) -> None:
    """Refuse to reuse a run folder trained with other settings than the plan now gives."""
    from resnorm.train import RESUMABLE_CHANGES

    saved = read_yaml(run_dir / "config.yaml")
    if not saved:
        return
    changed = [f"{k}: {saved[k]!r} -> {getattr(cfg, k)!r}"
               for k in dataclasses.asdict(cfg)
               if k not in RESUMABLE_CHANGES and k != "num_classes" and k in saved
               and saved[k] != getattr(cfg, k)]
    if changed:
        raise UsageError(f"{run_dir} was trained with other settings than the plan now gives "
                         f"({'; '.join(changed)}); delete that folder or use another --out")


def train_one(cfg, run_dir: Path, progress: bool) -> Outcome:
    """Train (or resume, or skip) one run; a failure is returned, not raised."""
    from resnorm.train import train

    name = cfg.name
    if (run_dir / "final.json").exists():
        final = read_json(run_dir / "final.json")
        return Outcome(name, final.get("status", "completed"), "skipped", final, 0.0)
    action = "resumed" if (run_dir / "last.pt").exists() else "trained"
    started = time.perf_counter()
    try:
        final = train(cfg, resume="auto", progress=progress)
    except DivergedError:
        # train() wrote final.json (status diverged) before raising: the run is recorded.
        final = read_json(run_dir / "final.json")
        return Outcome(name, "diverged", action, final, time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - one broken run must not stop the study
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(traceback.format_exc())
        message = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return Outcome(name, "failed", action, None, time.perf_counter() - started, message)
    return Outcome(name, final["status"], action, final, time.perf_counter() - started)


def summary_line(i: int, total: int, o: Outcome, name_width: int = 14) -> str:
    """One line per run, aligned across the study: '[ 3/12] bn   completed  val acc ...'."""
    head = f"[{i:>{len(str(total))}}/{total}] {o.name:<{name_width}} {o.status:<13}"
    if o.status == "failed":
        return f"{head} {o.error}"
    ev = (o.final or {}).get("eval") or {}
    val = ev.get("val") or ev.get("valid") or {}
    scores = (f"val acc {val['acc']:.3f}  macro F1 {val['macro_f1']:.3f}" if "acc" in val
              else "no checkpoint to evaluate")
    at = (o.final or {}).get("diverged_at")
    if o.status == "diverged" and isinstance(at, dict):
        scores += f"  (non-finite loss at epoch {at.get('epoch')}, step {at.get('step')})"
    epochs = (o.final or {}).get("epochs_run", "?")
    when = "(already done)" if o.action == "skipped" else f"{o.action} in {o.seconds:.1f} s"
    return f"{head} {scores}  {epochs} epochs  {when}"


def run_study(plan_path: str | Path, out: str | Path, *, data: str | Path | None = None,
              synthetic: str | Path | None = None, cache: str | None = None,
              progress: bool = True, gradcam: bool = True, report: bool = True,
              say=print, shard: tuple[int, int] | None = None, jobs: int = 1) -> "StudyResult":
    """The whole study: data once, every run in order, then Grad-CAM and the report.

    `shard=(i, k)` trains only the runs `shard_indices` gives shard i of k (round-robin in
    plan order) and leaves Grad-CAM and the report to an unsharded run or `resnorm report`.
    Under torchrun every run trains on all processes; rank 0 alone writes the study's files.
    `jobs=K` trains up to K runs (of the shard) at once in separate processes (`train_jobs`);
    not under torchrun.
    """
    from resnorm.distributed import (DistInfo, in_turn, init_from_env, launched_world_size,
                                     shard_indices)
    from resnorm.train import device_type

    plan = load_plan(plan_path)
    study = Path(out)
    if (data is None) == (synthetic is None):
        raise UsageError("give exactly one of --data DATA or --synthetic DIR")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UsageError(f"--jobs must be a positive integer, got {jobs!r}")
    if jobs > 1 and launched_world_size() > 1:
        raise UsageError("--jobs > 1 cannot be combined with torchrun (every process of the "
                         "group trains each run); use --jobs 1, or --shard per machine")
    info = DistInfo()
    if launched_world_size() > 1:  # under torchrun: join the group every run trains in
        info = init_from_env(device_type(str(plan.defaults.get("device", "auto"))))
    if not info.is_main:
        progress, say = False, lambda *args, **kwargs: None
    if synthetic is not None:
        data = in_turn(info, lambda: make_demo_data(synthetic, plan, progress))
    elif not Path(data).exists():
        raise UsageError(f"data folder {data} does not exist")

    with torch_threads(plan.threads):
        caches = in_turn(info, lambda: prepare_data(data, plan, cache, progress))
        configs = resolved_configs(plan, data, caches, study)  # all checked before any training
        (study / "runs").mkdir(parents=True, exist_ok=True)
        if info.is_main:
            _write_plan_copy(plan, study)
        state = StudyState(study, plan, str(data), write=info.is_main)
        say(f"study {study}: {len(configs)} runs; lr across batch sizes: {plan.lr_rule_text()}")
        if shard is not None:
            configs = [configs[j] for j in shard_indices(len(configs), *shard)]
            say(f"shard {shard[0]}/{shard[1]}: {len(configs)} of the runs: "
                f"{', '.join(spec.name for spec, _, _ in configs) or 'none'}; Grad-CAM and the "
                f"report are left to `resnorm study` without --shard or `resnorm report`")
            gradcam = report = False
        if not info.is_main:
            gradcam = report = False
        result = StudyResult(study, train_all(configs, study, state, progress, say,
                                              jobs=jobs, threads=plan.threads))
        if gradcam and not _study_gradcam_step(study, plan, state, say):
            result.gradcam_error = state.data["gradcam_error"]
        if report:
            from resnorm.report import write_report

            html_path, _ = write_report(study)
            say(f"report: {html_path}")
    return result


def train_all(configs, study: Path, state: "StudyState", progress: bool, say, *,
              jobs: int = 1, threads: int | None = None) -> list[Outcome]:
    """Every run; each outcome is recorded in study.json (by this process alone) and gets its
    summary line as soon as it is known. jobs=1: in plan order, in this process; jobs>1: see
    `train_jobs` (lines in completion order, numbered as they finish). Returns the outcomes in
    plan order."""
    width = max((len(spec.name) for spec, _, _ in configs), default=0)
    done: dict[str, Outcome] = {}
    if jobs > 1:
        outcomes = train_jobs(configs, study, progress, jobs, threads, say)
    else:
        outcomes = ((spec, train_one(cfg, study / "runs" / spec.name, progress))
                    for spec, cfg, _ in configs)
    notes = {spec.name: (cfg.lr, lr_note) for spec, cfg, lr_note in configs}
    with closing(outcomes):  # whatever happens here, running jobs are stopped
        for spec, outcome in outcomes:
            lr, lr_note = notes[spec.name]
            state.record(spec.name, status=outcome.status, action=outcome.action,
                         seconds=round(outcome.seconds, 3), error=outcome.error,
                         lr=lr, lr_note=lr_note)
            done[spec.name] = outcome
            say(summary_line(len(done), len(configs), outcome, width))
    return [done[spec.name] for spec, _, _ in configs]


# --- several runs at once (--jobs) ------------------------------------------------------------
# Each run trains in a fresh process started with "spawn" (safe with CUDA, the same on every
# OS) that calls train_one, exactly as the sequential path does. Not a ProcessPoolExecutor: a
# worker that dies (out of memory, a segfault) breaks such a pool and every run still queued
# in it, and a pool cannot stop a running worker on Ctrl-C. One process per run costs one
# `import torch` (a second or two) per run, nothing next to training it.

LOG_FILE = "train.log"  # a run's output when it trains in its own process (--jobs > 1)


def job_threads(jobs: int, threads: int | None) -> int:
    """torch intra-op threads per job: the plan's `threads`, else the cores shared out."""
    if threads is not None:
        return threads
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // jobs)


def train_jobs(configs, study: Path, progress: bool, jobs: int, threads: int | None, say):
    """Train the runs of `configs` with up to `jobs` at once; yield (spec, Outcome) as each
    finishes (completion order).

    A finished run is skipped here without a process. Each other run trains in its own
    process (`_job_main`), with `job_threads` torch threads, its output appended to
    runs/<name>/train.log. A process that dies without reporting (killed, out of memory) is
    a failed run (its error.txt says how it ended) and the others go on. If this process is
    interrupted (Ctrl-C, an exception) the running jobs are terminated; if it is killed
    outright, each job notices its lifeline close and exits (its last.pt lets a re-run resume).
    """
    import multiprocessing
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("spawn")
    per_job = job_threads(jobs, threads)
    say(f"jobs: up to {jobs} runs at once, {per_job} torch thread(s) each; each run's output "
        f"goes to runs/<name>/{LOG_FILE}")
    queue = []
    for spec, cfg, _ in configs:
        run_dir = study / "runs" / spec.name
        if (run_dir / "final.json").exists():  # nothing to train: no process needed
            yield spec, train_one(cfg, run_dir, progress)
        else:
            queue.append((spec, cfg))
    queue.reverse()  # pop() takes them in plan order
    running: dict[int, tuple] = {}  # sentinel -> (spec, process, result conn, lifeline, ...)
    try:
        while queue or running:
            while queue and len(running) < jobs:
                spec, cfg = queue.pop()
                run_dir = study / "runs" / spec.name
                action = "resumed" if (run_dir / "last.pt").exists() else "trained"
                result_recv, result_send = ctx.Pipe(duplex=False)
                life_recv, life_send = ctx.Pipe(duplex=False)
                process = ctx.Process(target=_job_main, name=f"resnorm-{spec.name}",
                                      args=(cfg, run_dir, progress, per_job, result_send,
                                            life_recv))
                process.start()
                result_send.close()  # the child's ends: closed here, so EOF means it is gone
                life_recv.close()
                running[process.sentinel] = (spec, process, result_recv, life_send, action,
                                             time.perf_counter())
            for sentinel in wait(list(running)):
                spec, process, result_recv, life_send, action, started = running.pop(sentinel)
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
                    outcome = _died(spec.name, study / "runs" / spec.name, action,
                                    process.exitcode, time.perf_counter() - started)
                elif outcome.status != "failed":  # the job sent all but final.json
                    outcome.final = read_json(study / "runs" / spec.name / "final.json")
                yield spec, outcome
    finally:  # interrupted (Ctrl-C, an error here, the caller stopped): stop what still runs
        for spec, process, result_recv, life_send, *_ in running.values():
            process.terminate()
        for spec, process, result_recv, life_send, *_ in running.values():
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
            result_recv.close()
            life_send.close()


def _died(name: str, run_dir: Path, action: str, exitcode: int | None, seconds: float
          ) -> Outcome:
    """The outcome of a job process that ended without reporting one."""
    how = (f"killed by signal {-exitcode}" if exitcode is not None and exitcode < 0
           else f"exit code {exitcode}")
    message = (f"the run's process ended without a result ({how}); "
               f"see runs/{name}/{LOG_FILE}")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "error.txt").write_text(message + "\n")
    return Outcome(name, "failed", action, None, seconds, message)


def _job_main(cfg, run_dir: Path, progress: bool, threads: int, result, lifeline) -> None:
    """One run in a job process: output to the run's log, train_one, send back the Outcome."""
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
    print(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {cfg.name}: pid {os.getpid()}, "
          f"{threads} torch thread(s) ===")
    outcome = train_one(cfg, run_dir, progress)
    # final.json is on disk; send the rest only (a pipe blocks on large messages)
    result.send(dataclasses.replace(outcome, final=None))
    result.close()


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
    from resnorm.gradcam import format_summary

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


def study_gradcam(study: str | Path, out: str | Path, *, classes=None, per_class: int = 5,
                  seed: int = 0, device: str = "auto") -> dict:
    """Grad-CAM galleries of the study's best run, pointing-game scores of every finished run."""
    from resnorm.gradcam import run_gradcam

    study = Path(study)
    records = collect_runs(study)
    best = best_run(records)
    if best is None:
        raise UsageError(f"{study} has no finished run to explain yet")
    others = {r.name: r.dir for r in records if r.ok and (r.dir / "best.pt").exists()}
    summary = run_gradcam(best.dir, out, classes=classes, per_class=per_class, seed=seed,
                          score_runs=others, device=device)
    state = read_state(study)
    if state.get("gradcam_error"):  # an earlier failure is superseded
        state["gradcam_error"] = None
        _write_json_atomic(study / STATE_FILE, state)
    return summary


# --- command line -----------------------------------------------------------------------------

def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "examples:\n"
        "  resnorm study --synthetic data/synth-demo --plan configs/demo.yaml --out studies/demo\n"
        "  resnorm study --data data/birds --plan configs/assignment.yaml --out studies/birds\n"
        "  resnorm study --data data/birds --plan configs/assignment.yaml --out studies/birds "
        "--jobs 4\n\n"
        "Re-running the same command finishes an interrupted study: finished runs are skipped,\n"
        "an interrupted run resumes from its last.pt. A diverged or failed run is recorded and\n"
        "the study goes on. Exit code 0 when every run finished (diverged counts: it is a\n"
        "result), 1 when a run failed, 2 for a bad plan or data.\n\n"
        "Several runs at once on one machine: --jobs K (one small ResNet does not fill a big\n"
        "GPU, nor many CPU cores). Each run trains in its own process with the same skip/\n"
        "resume/failure bookkeeping; its output goes to runs/<name>/train.log and this command\n"
        "prints one line per run as it finishes (completion order, numbered as they finish).\n"
        "Each job holds its own copy of the data on the device. Ctrl-C or killing the study\n"
        "stops its jobs; re-running resumes them. Works with --shard (K jobs within the\n"
        "shard); not with torchrun.\n\n"
        "Several machines: --shard I/K on each (same --out on a shared filesystem), then\n"
        "`resnorm report STUDY`; several GPUs per run: torchrun --nproc_per_node=N -m resnorm\n"
        "-- study ... (see docs/distributed.md)."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path,
                        help="dataset folder (train/ valid/) or a prepared cache")
    source.add_argument("--synthetic", type=Path, metavar="DIR",
                        help="use the synthetic dataset in DIR, generating it first if missing")
    parser.add_argument("--plan", type=Path, required=True, help="study plan (YAML)")
    parser.add_argument("--out", type=Path, required=True, help="study folder")
    parser.add_argument("--cache", help="folder for prepared-data caches "
                        "(default: $RESNORM_CACHE or ~/.cache/resnorm)")
    parser.add_argument("--no-gradcam", action="store_true", help="skip the Grad-CAM step")
    parser.add_argument("--no-report", action="store_true", help="skip the report")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress output")
    parser.add_argument("--jobs", type=int, default=1, metavar="K",
                        help="train up to K runs at once, each in its own process sharing the "
                        "device or the CPU cores; torch threads per job: the plan's `threads`, "
                        "else cores // K; each run's output goes to runs/<name>/train.log "
                        "(default: 1, one run after another in this process)")
    parser.add_argument("--shard", metavar="I/K", help="train only shard I of K of the plan's "
                        "runs (round-robin in plan order; 0 <= I < K) into the same --out, e.g. "
                        "one per machine or SLURM array task; no Grad-CAM or report "
                        "(docs/distributed.md)")


def run_cli(args: argparse.Namespace) -> int:
    from resnorm.distributed import is_main_process, parse_shard

    try:
        shard = parse_shard(args.shard) if args.shard is not None else None
    except ValueError as exc:
        raise UsageError(f"--shard: {exc}") from None
    result = run_study(args.plan, args.out, data=args.data, synthetic=args.synthetic,
                       cache=args.cache, progress=not args.quiet,
                       gradcam=not args.no_gradcam, report=not args.no_report, shard=shard,
                       jobs=args.jobs)
    if not is_main_process():
        return 0
    status = 0
    if result.failed:
        print(f"resnorm study: {len(result.failed)} run(s) failed: {', '.join(result.failed)} "
              f"(see runs/<name>/error.txt; re-run to retry them)", file=sys.stderr)
        status = 1
    if result.gradcam_error:
        print(f"resnorm study: Grad-CAM failed: {result.gradcam_error}", file=sys.stderr)
        status = 1
    return status
