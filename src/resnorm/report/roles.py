"""Reading the study's runs: which runs each comparison uses (inferred from their configs, not
their names) and lookups in a run's records."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from resnorm.norms import norm_info, split_kind
from resnorm.study.records import RunRecord

# Settings that make two runs "the same experiment" apart from the ones a comparison varies
# (not the seed: a run's config is its representative seed's, and the seeds are paired).
RECIPE_KEYS = ("n", "shortcut", "size", "resize", "batch_size", "epochs", "recipe", "optimizer",
               "lr", "momentum", "nesterov", "weight_decay", "schedule", "warmup_epochs",
               "gate_lr_mult", "augment", "patience", "min_delta")
# What the batch-size comparison may vary besides the batch size (lr by the plan's rule, early
# stopping as the assignment asks).
BATCH_KEYS = ("batch_size", "lr", "patience", "min_delta", "epochs", "warmup_epochs")


def norm_kind(run: RunRecord) -> str:
    """The norm's base kind ('gn' for 'gn:8')."""
    return split_kind(str(run.config.get("norm", "?")))[0]


def signature(run: RunRecord, drop: Iterable[str] = ()) -> tuple:
    skip = set(drop)
    return tuple((k, run.config.get(k)) for k in RECIPE_KEYS if k not in skip)


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
    """Which runs each comparison uses, inferred from their configs (see `find_roles`)."""

    variants: list[RunRecord]
    sanity: tuple[RunRecord, RunRecord] | None
    batch: dict[str, list[RunRecord]]
    literal: list[tuple[RunRecord, RunRecord | None]]


def find_roles(runs: list[RunRecord], vary: Iterable[str] = ()) -> Roles:
    """The comparisons the assignment asks for, found from run configs rather than names.

    - variants: the largest group of runs that differ only in their norm (one run per norm);
    - sanity: PyTorch BN and own BN among those variants (or any pair differing only in norm);
    - batch: BN and GN runs that differ from the variants only in batch size, lr, early stopping;
    - literal: runs with the literal recipe, each beside the variant with the same norm.
    `vary`: settings the variants may differ in too (a tuned study's lr: each its own).
    """
    configured = [r for r in runs if r.config]
    groups: dict[tuple, list[RunRecord]] = {}
    for r in configured:
        groups.setdefault(signature(r, ["norm", *vary]), []).append(r)
    main_sig = max(groups, key=lambda s: len({norm_kind(r) for r in groups[s]}), default=None)
    variants: list[RunRecord] = []
    for r in groups.get(main_sig, []):
        if norm_kind(r) not in {norm_kind(v) for v in variants}:
            variants.append(r)
    variants.sort(key=lambda r: norm_info(norm_kind(r)).order)

    by_norm = {norm_kind(v): v for v in variants}
    sanity = (by_norm["torch_bn"], by_norm["bn"]) if {"torch_bn", "bn"} <= set(by_norm) else None
    if sanity is None:
        for group in groups.values():
            a = [r for r in group if norm_kind(r) == "torch_bn"]
            b = [r for r in group if norm_kind(r) == "bn"]
            if a and b:
                sanity = (a[0], b[0])
                break

    batch: dict[str, list[RunRecord]] = {}
    if main_sig is not None:
        ref = variants[0]
        base = signature(ref, ["norm", *BATCH_KEYS])
        for kind in ("bn", "gn"):
            members = [r for r in configured if norm_kind(r) == kind
                       and signature(r, ["norm", *BATCH_KEYS]) == base]
            chosen: dict[Any, RunRecord] = {}
            for r in members:  # one run per batch size; the variant itself wins its size
                bs = r.config.get("batch_size")
                if bs not in chosen or r is by_norm.get(kind):
                    chosen[bs] = r
            if len(chosen) >= 2:
                batch[kind] = sorted(chosen.values(), key=lambda r: r.config.get("batch_size") or 0)

    literal = [(r, by_norm.get(norm_kind(r))) for r in configured
               if str(r.config.get("recipe", "")).lower() == "literal" and r not in variants]
    return Roles(variants, sanity, batch, literal)


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
