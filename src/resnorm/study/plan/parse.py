"""A study plan: the YAML that lists a study's runs, parsed, validated and expanded.

A plan has shared `defaults:` (any TrainConfig field) and a list of `runs:` (a `name` plus
overrides); see configs/demo.yaml and docs/architecture.md. `seeds:` (a count K, or a list)
trains every run once per seed; `comparisons:` names pairs of runs to compare beyond those the
report finds itself; `primary:` names the pairs of the study's primary family (the report's
default: the norm variants pairwise); `tune:` an lr search before the final runs
(resnorm.study.plan.tune_settings, resnorm.study.tuning.phase). `load_plan(path)` gives a `Plan`;
each run is resolved once from it (resnorm.study.plan.resolve); `plan.seeds_of(spec)` gives
a run's seeds. Every problem is a one-line UsageError.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from resnorm.errors import UsageError, checked_mapping
from resnorm.study.plan.robustness_settings import RobustnessSettings, parse_robustness
from resnorm.study.plan.tune_settings import TuneSettings, parse_tune

__all__ = ["Plan", "RunSpec", "load_plan", "parse_plan", "parse_seeds",
           "parse_time_limit", "DEFAULT_TOLERANCE", "SLURM_KEYS", "train_default"]

PLAN_KEYS = ("description", "lr_rule", "base_batch_size", "sanity_tolerance", "threads",
             "seeds", "comparisons", "design", "primary", "synthetic", "gradcam", "slurm",
             "tune", "robustness",
             "defaults", "runs")
# TrainConfig fields a plan may not set: the study decides where data and runs live.
STUDY_OWNED_FIELDS = ("data", "cache", "out", "name")
GRADCAM_KEYS = ("classes", "per_class", "seed", "runs")  # runs: best | all | [names]
# make_synthetic's settings a plan may give for `resnorm study --synthetic DIR`.
# `slurm:` (resnorm study --executor slurm; the command line's options override them): what
# each array task asks of SLURM. `time`: minutes or SLURM's [D-]HH:MM[:SS]; `sbatch`: extra
# sbatch settings ({mail-type: END}); `setup`: shell lines run before each task (module load).
SLURM_KEYS = ("partition", "time", "gpus_per_task", "cpus_per_task", "mem_gb",
              "array_parallelism", "sbatch", "setup")
SYNTHETIC_KEYS = ("num_classes", "class_names", "train_per_class", "val_per_class",
                  "test_per_class", "seed", "side_range", "png_fraction")
# Sanity check (PyTorch BN vs own BN): largest allowed difference between their curves over all
# epochs (metric: accuracy/F1, absolute; loss: relative) and after the first epoch, before
# rounding differences have compounded (first_epoch: both kinds).
DEFAULT_TOLERANCE = {"metric": 0.02, "loss": 0.05, "first_epoch": 0.01}


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
    # K (seeds seed, seed+1, ..., seed+K-1 from each run's `seed`) or an explicit list
    seeds: int | list[int] = 1
    comparisons: list[tuple[str, str]] = field(default_factory=list)  # extra pairs to compare
    slurm: dict[str, Any] = field(default_factory=dict)  # SLURM_KEYS, checked (--executor slurm)
    # the plan's `design:` as declared (resnorm.study.plan.design; None: the assignment's, derived)
    design: dict[str, Any] | None = None
    source: str = "plan"  # where it was read from, for messages
    tune: TuneSettings | None = None  # the lr search before the final runs (study.tuning)
    robustness: RobustnessSettings | None = None  # corrupted held-out images after training

    def seeds_of(self, spec: RunSpec) -> list[int]:
        """The seeds run `spec` trains with."""
        if isinstance(self.seeds, list):
            return list(self.seeds)
        base = int({**self.defaults, **spec.overrides}.get("seed", train_default("seed")))
        return [base + i for i in range(self.seeds)]

    @property
    def rule(self):
        """The plan's lr rule (resnorm.train.lr_rule.LrRule: the one rule of the code)."""
        from resnorm.train.lr_rule import LrRule

        return LrRule(self.lr_rule, self.base_batch_size)

    def lr_rule_text(self) -> str:
        """The learning-rate rule across batch sizes in words (the report repeats it)."""
        if self.lr_rule == "none":
            return "none: every batch size uses the recipe's lr unchanged"
        name = "linear scaling" if self.lr_rule == "linear" else "square-root scaling"
        return f"{name}: {self.rule.text()} for runs that do not set their own lr"

    def to_yaml_dict(self) -> dict:
        return {"description": self.description, "lr_rule": self.lr_rule,
                "base_batch_size": self.base_batch_size,
                "sanity_tolerance": self.sanity_tolerance, "threads": self.threads,
                "seeds": self.seeds, "comparisons": [list(c) for c in self.comparisons],
                "design": _design_yaml(self.design),
                "synthetic": self.synthetic,
                "gradcam": self.gradcam, "slurm": self.slurm,
                **({"tune": self.tune.to_yaml_dict()} if self.tune else {}),
                **({"robustness": self.robustness.to_yaml_dict()} if self.robustness else {}),
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
    runs = _run_specs(raw.get("runs"), allowed, source)
    seen = {r.name for r in runs}
    plan = Plan(description=str(raw.get("description") or ""), defaults=dict(defaults), runs=runs,
                source=source)
    from resnorm.train.lr_rule import LR_RULES

    plan.lr_rule = str(raw.get("lr_rule", "none"))
    if plan.lr_rule not in LR_RULES:
        raise UsageError(f"{source}: lr_rule '{plan.lr_rule}' is not one of {', '.join(LR_RULES)}")
    plan.base_batch_size = _positive_int(raw.get("base_batch_size", 32),
                                         f"{source}: base_batch_size")
    plan.sanity_tolerance = _tolerance(raw.get("sanity_tolerance"), source)
    if raw.get("threads") is not None:
        plan.threads = _positive_int(raw["threads"], f"{source}: threads")
    plan.seeds = parse_seeds(raw.get("seeds", 1), f"{source}: seeds")
    if isinstance(plan.seeds, list) and any("seed" in r.overrides for r in runs):
        raise UsageError(f"{source}: a run sets 'seed' while 'seeds' lists the seeds of every "
                         "run; give 'seeds' as a count instead (seeds counted from each run's "
                         "seed)")
    plan.comparisons = _comparisons(raw.get("comparisons"), seen, source)
    plan.design = _design(raw, list(seen), source)
    plan.gradcam = _sub_mapping(raw, "gradcam", GRADCAM_KEYS, source)
    _check_gradcam_runs(plan.gradcam.get("runs", "best"), [r.name for r in plan.runs], source)
    plan.synthetic = _sub_mapping(raw, "synthetic", SYNTHETIC_KEYS, source)
    plan.slurm = _slurm_section(_sub_mapping(raw, "slurm", SLURM_KEYS, source), f"{source}: slurm")
    plan.tune = parse_tune(raw.get("tune"), [r.name for r in runs], source)
    plan.robustness = parse_robustness(raw.get("robustness"), source)
    return plan


def _run_specs(runs_raw: Any, allowed: dict[str, Any], source: str) -> list[RunSpec]:
    """The plan's `runs:`, each a uniquely named plain folder with valid TrainConfig fields."""
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
    return runs


def _design(raw: dict, names: list[str], source: str) -> dict[str, Any] | None:
    """`design:`; a plan written before it had `primary:` at the top, read as design.primary."""
    from resnorm.study.plan.design import parse_design

    value = raw.get("design")
    if raw.get("primary"):
        if isinstance(value, dict) and "primary" in value:
            raise UsageError(f"{source}: 'primary' is given twice: keep design.primary only")
        value = {**(value if isinstance(value, dict) else {}), "primary": raw["primary"]}
    return parse_design(value, names, source)


def _design_yaml(design: dict[str, Any] | None) -> dict[str, Any] | None:
    """The declared design as plain YAML (pairs as lists)."""
    if design is None:
        return None
    return {k: ({g: list(r) for g, r in v.items()} if isinstance(v, dict) else
                [list(x) if isinstance(x, tuple) else x for x in v] if isinstance(v, list) else
                list(v) if isinstance(v, tuple) else v)
            for k, v in design.items()}


def parse_seeds(value: Any, where: str) -> int | list[int]:
    """`seeds:` (or --seeds): a count K >= 1, or a non-empty list of distinct integers."""
    if isinstance(value, list):
        if (not value or any(isinstance(v, bool) or not isinstance(v, int) for v in value)
                or len(set(value)) != len(value)):
            raise UsageError(f"{where} must be a count or a list of distinct integers, "
                             f"got {value!r}")
        return list(value)
    return _positive_int(value, where)


def _comparisons(value: Any, names: set[str], source: str,
                 key: str = "comparisons") -> list[tuple[str, str]]:
    if value is None:
        return []
    pairs = []
    if not isinstance(value, list):
        raise UsageError(f"{source}: {key} must be a list of [run_a, run_b] pairs")
    for pair in value:
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2 or pair[0] == pair[1]
                or any(str(x) not in names for x in pair)):
            raise UsageError(f"{source}: {key}: {pair!r} is not a pair of two different "
                             f"runs of the plan")
        pairs.append((str(pair[0]), str(pair[1])))
    return pairs


def _check_gradcam_runs(value: Any, names: list[str], source: str) -> None:
    """`gradcam: runs:` is best, all, or a list of the plan's run names."""
    if value in ("best", "all") or (isinstance(value, list) and value
                                    and all(v in names for v in value)):
        return
    raise UsageError(f"{source}: gradcam: runs must be best, all or a list of the plan's run "
                     f"names, got {value!r}")


def _sub_mapping(raw: dict, key: str, allowed: tuple[str, ...], source: str) -> dict:
    return checked_mapping(raw.get(key) or {}, allowed, f"{source}: {key}")


def _slurm_section(value: dict, where: str) -> dict:
    """`slurm:`, each value checked (the keys already are): a bad one is a one-line error."""
    out = dict(value)
    for key in ("cpus_per_task", "array_parallelism"):
        if key in out:
            _positive_int(out[key], f"{where}.{key}")
    if "gpus_per_task" in out and (isinstance(out["gpus_per_task"], bool)
                                   or not isinstance(out["gpus_per_task"], int)
                                   or out["gpus_per_task"] < 0):
        raise UsageError(f"{where}.gpus_per_task must be an integer >= 0, "
                         f"got {out['gpus_per_task']!r}")
    if "mem_gb" in out and (isinstance(out["mem_gb"], bool)
                            or not isinstance(out["mem_gb"], (int, float)) or out["mem_gb"] <= 0):
        raise UsageError(f"{where}.mem_gb must be a number of GB > 0, got {out['mem_gb']!r}")
    if "partition" in out and not isinstance(out["partition"], str):
        raise UsageError(f"{where}.partition must be a partition name, got {out['partition']!r}")
    if "time" in out:
        out["time"] = parse_time_limit(out["time"], f"{where}.time")
    if "sbatch" in out and (not isinstance(out["sbatch"], dict) or any(
            isinstance(v, (dict, list)) for v in out["sbatch"].values())):
        raise UsageError(f"{where}.sbatch must map sbatch options to values, e.g. "
                         "{mail-type: END}")
    if "setup" in out and (not isinstance(out["setup"], list)
                           or not all(isinstance(line, str) for line in out["setup"])):
        raise UsageError(f"{where}.setup must be a list of shell lines")
    return out


def parse_time_limit(value: Any, where: str) -> int:
    """A SLURM time limit in minutes, from a count of minutes or any form sbatch --time reads:
    MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS (seconds round up to a minute)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    text = str(value).strip()
    days, dash, clock = text.partition("-")
    if not dash:
        days, clock = "0", text
    parts = clock.split(":")
    if (isinstance(value, bool) or not days.isdigit() or not 1 <= len(parts) <= 3
            or not all(p.isdigit() for p in parts)):
        raise UsageError(f"{where} must be minutes or a SLURM time such as 2:00:00 or 1-12:00, "
                         f"got {value!r}")
    numbers = [int(x) for x in parts]
    if dash:  # D-HH[:MM[:SS]]
        h, m, sec = (numbers + [0, 0])[:3]
    elif len(numbers) == 3:  # HH:MM:SS
        h, m, sec = numbers
    else:  # MM[:SS]
        h, (m, sec) = 0, (numbers + [0])[:2]
    minutes = int(days) * 1440 + h * 60 + m + (1 if sec else 0)
    if minutes < 1:
        raise UsageError(f"{where} must be at least a minute, got {value!r}")
    return minutes


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


def train_default(name: str) -> Any:
    f = _train_fields()[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]
