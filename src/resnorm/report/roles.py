"""Reading the study's runs: which run plays which role in its design, and lookups in a run's
records. The design itself is declared (or derived once) at plan time and read from the study
manifest (resnorm.study.plan.manifest); nothing here infers it from configs."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnorm.norms import split_kind
from resnorm.study.plan.manifest import Design, ResolvedRun, read_manifest
from resnorm.study.execution.records import RunRecord


def norm_kind(run: RunRecord) -> str:
    """The norm's base kind ('gn' for 'gn:8')."""
    return split_kind(str(run.config.get("norm", "?")))[0]


def mean_of(run, column: str) -> float | None:
    """The mean of a metrics.csv column over one trial's (or representative's) epochs."""
    values = [r[column] for r in run.rows if column in r and math.isfinite(r[column])]
    return sum(values) / len(values) if values else None


def seeds_mean_of(run: RunRecord, column: str) -> float | None:
    """`mean_of` averaged over the run's finished seeds."""
    values = [v for v in (mean_of(t, column) for t in run.done) if v is not None]
    return sum(values) / len(values) if values else None


def val_count(run: RunRecord) -> int | None:
    """Validation images behind a run's val accuracy (the sum of its confusion matrix)."""
    confusion = run.evaluation("val").get("confusion")
    return int(sum(map(sum, confusion))) if confusion else None


@dataclass
class Roles:
    """The design's runs as records: `variants` are the runs shown side by side (the sanity
    reference first, then the compared variants), `sanity` (reference, candidate), `batch`
    (group -> runs by increasing batch size), `literal` (literal-recipe run, its twin);
    `resolved`: each run's resolved record (its settings, lr, global batch: `setting`)."""

    design: Design
    variants: list[RunRecord]
    sanity: tuple[RunRecord, RunRecord] | None
    batch: dict[str, list[RunRecord]]
    literal: list[tuple[RunRecord, RunRecord | None]]
    resolved: dict[str, ResolvedRun] = field(default_factory=dict)

    def setting(self, run: RunRecord | str, key: str) -> Any:
        """A run's setting as the study resolved it (lr: the lr it trained at; batch_size:
        the global batch), None for a run without a record."""
        r = self.resolved.get(run if isinstance(run, str) else run.name)
        if r is None:
            return None
        return {"lr": r.lr, "batch_size": r.batch}.get(key, r.config.get(key))


def resolved_runs(study: Path, runs: list[RunRecord]) -> dict[str, ResolvedRun]:
    """Each run's resolved record from the study manifest; for a folder of runs without a
    plan (no manifest), from the representative seed's config.yaml (all such a folder says).
    A study written before manifests is refused before this (StudyDir.check_current)."""
    manifest = read_manifest(study)
    if manifest is not None:
        return manifest.resolved()
    return {r.name: ResolvedRun.from_dict(r.name, {"config": r.config, "seeds": r.seeds})
            for r in runs if r.config}


def study_roles(design: Design, runs: list[RunRecord],
                resolved: dict[str, ResolvedRun] | None = None) -> Roles:
    """The records of the runs `design` names (runs the study folder lacks are left out)."""
    by_name = {r.name: r for r in runs}
    shown = [*design.sanity[:1], *design.variants] if design.sanity else list(design.variants)
    sanity = None
    if design.sanity and all(n in by_name for n in design.sanity):
        sanity = (by_name[design.sanity[0]], by_name[design.sanity[1]])
    return Roles(design=design,
                 variants=[by_name[n] for n in dict.fromkeys(shown) if n in by_name],
                 sanity=sanity,
                 batch={g: [by_name[m.run] for m in members if m.run in by_name]
                        for g, members in design.batch.items()},
                 literal=[(by_name[a], by_name.get(b)) for a, b in design.literal
                          if a in by_name], resolved=dict(resolved or {}))


def group_labels(inter: dict) -> tuple[str, str]:
    """How the batch-size interaction's two groups are named (summary's `labels`: 'BN')."""
    first, second = inter.get("labels") or inter["groups"]
    return first, second


def data_manifest(runs: list[RunRecord]) -> dict | None:
    """The prepared-data manifest the runs were trained on (from a run's cache folder)."""
    from resnorm.data.cache import read_manifest

    for r in runs:
        for folder in (nested(r.config, "environment.data_cache"), r.config.get("data"),
                       r.config.get("cache")):
            manifest = read_manifest(Path(folder)) if folder else None
            if manifest is not None:
                return manifest
    return None


def nested(d: dict, *keys: str) -> Any:
    """The value at the first of `keys` (dotted paths such as 'environment.device') that `d`
    holds, else None."""
    for key in keys:
        cur: Any = d
        for part in key.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if cur is not None:
            return cur
    return None
