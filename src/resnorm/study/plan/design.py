"""The study's design: which runs answer which question, declared in the plan or derived once.

A plan may declare it under `design:`

    design:
      variants: [bn, in, bin, ln, gn, nn]          # compared pairwise and ranked
      sanity: [torch_bn, bn]                       # reference, candidate: differ only in norm
      batch: {bn: [bn_b8, bn, bn_b128], gn: [gn_b8, gn, gn_b128]}
      primary: [[bin, gn], [bn, gn]]               # optional: default, the variants pairwise
      literal: [[torch_bn_literal, torch_bn]]      # optional: a literal-recipe run beside its twin

A plan without `design:` gets the assignment's design, derived here from the norms and
settings its runs name (the only place that knows the assignment's kinds). Either way the
result is checked against the runs' resolved settings and written into the study manifest;
the report reads it from there. Every problem is a one-line UsageError.
"""
from __future__ import annotations

from typing import Any

from resnorm.errors import UsageError, checked_mapping
from resnorm.study.plan.manifest import BatchMember, Design

__all__ = ["DESIGN_KEYS", "ASSIGNMENT", "parse_design", "resolve_design", "experiment_fields",
           "differences", "robustness_question"]

DESIGN_KEYS = ("variants", "sanity", "batch", "primary", "literal")
# The assignment's questions, by norm kind: the sanity check compares PyTorch's BN with ours,
# the batch-size study BN with GN (Wu & He's claim is GN's insensitivity to the batch size).
ASSIGNMENT = {"reference": "torch_bn", "candidate": "bn", "batch_norms": ("bn", "gn"),
              "literal_recipe": "literal"}
# What runs of one batch-size group may differ in besides the batch size: the lr follows it
# by the plan's rule, and the assignment early-stops the batch runs.
BATCH_MAY_DIFFER = ("batch_size", "lr", "patience", "min_delta", "epochs", "warmup_epochs")

Fields = dict[str, dict[str, Any]]  # run name -> its resolved experiment settings


def experiment_fields(resolved: dict[str, Any]) -> dict[str, Any]:
    """The settings that define an experiment: every TrainConfig field except the seed and
    those a resumed run may change (paths, device, speed: train.config.RESUMABLE_CHANGES)."""
    from resnorm.train import RESUMABLE_CHANGES, TrainConfig

    names = [f for f in TrainConfig.__dataclass_fields__ if f not in RESUMABLE_CHANGES]
    return {k: resolved.get(k) for k in names if k != "seed"}


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The settings in which two runs' experiment fields differ, sorted."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


# --- parsing the plan's `design:` ---------------------------------------------------------------

def parse_design(value: Any, names: list[str], source: str) -> dict[str, Any] | None:
    """The plan's `design:` mapping with its shape checked and its runs known (None: none)."""
    if value is None:
        return None
    where = f"{source}: design"
    value = checked_mapping(value, DESIGN_KEYS, where)
    out: dict[str, Any] = {}
    if "variants" in value:
        out["variants"] = _run_list(value["variants"], names, f"{where}.variants", 2)
    if "sanity" in value:  # null: no sanity check
        out["sanity"] = (None if value["sanity"] is None else
                         tuple(_run_list(value["sanity"], names, f"{where}.sanity", 2, 2)))
    if "batch" in value:  # null or {}: no batch-size study
        out["batch"] = _batch_groups(value["batch"] or {}, names, f"{where}.batch")
    for key in ("primary", "literal"):
        if key in value:
            out[key] = _pairs(value[key], names, f"{where}.{key}")
    return out


def _run_list(value: Any, names: list[str], where: str, least: int,
              most: int | None = None) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{where} must be a list of run names")
    unknown = [v for v in value if v not in names]
    if unknown:
        raise UsageError(f"{where}: '{unknown[0]}' is not a run of the plan "
                         f"(runs: {', '.join(names)})")
    if len(set(value)) != len(value) or len(value) < least or (most and len(value) > most):
        count = f"exactly {most}" if most == least else f"at least {least}"
        raise UsageError(f"{where} must name {count} different runs, got {value!r}")
    return list(value)


def _batch_groups(value: Any, names: list[str], where: str) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        raise UsageError(f"{where} must map a group name to its runs, e.g. "
                         "{bn: [bn_b8, bn, bn_b128]}")
    return {str(g): _run_list(runs, names, f"{where}.{g}", 2) for g, runs in value.items()}


def _pairs(value: Any, names: list[str], where: str) -> list[tuple[str, str]]:
    if not isinstance(value, list):
        raise UsageError(f"{where} must be a list of [run_a, run_b] pairs")
    return [tuple(_run_list(p, names, where, 2, 2)) for p in value]  # type: ignore[misc]


# --- the design of a plan ------------------------------------------------------------------------

def resolve_design(declared: dict[str, Any] | None, fields: Fields, kinds: dict[str, str],
                   comparisons: list[tuple[str, str]], source: str = "plan") -> Design:
    """The plan's design: declared parts as given, the rest derived as the assignment's
    (`kinds`: run -> norm kind without its parameter; `fields`: run -> experiment settings,
    plan order); checked against the settings; with every pair the study compares."""
    declared = declared or {}
    variants = declared.get("variants") or _derived_variants(fields, kinds)
    sanity = declared["sanity"] if "sanity" in declared else _derived_sanity(fields, kinds,
                                                                            variants)
    if "variants" not in declared and sanity is not None:
        variants = [v for v in variants if v != sanity[0]]  # the reference is checked, not ranked
    batch_runs = (declared["batch"] if "batch" in declared
                  else _derived_batch(fields, kinds, variants))
    design = Design(
        variants=variants, sanity=sanity,
        batch={g: _batch_members(runs, fields, f"{source}: design.batch.{g}")
               for g, runs in batch_runs.items()},
        primary=declared.get("primary") or [],
        literal=(declared["literal"] if "literal" in declared
                 else _derived_literal(fields, kinds, variants, sanity)),
        comparisons=list(comparisons), norms=dict(kinds))
    design.primary = design.primary or design.variant_pairs()
    _check_sanity(design.sanity, fields, source)
    design.pairs = compared_pairs(design, fields)
    design.robustness = robustness_question(design)
    return design


def robustness_question(design: Design) -> dict[str, Any]:
    """The robustness family (asked when the study evaluates corrupted images): the
    variants pairwise on mean corrupted accuracy, and each variant whose norm keeps running
    statistics (the norm registry's batch_stats) adapted vs as trained; mCE relative to the
    sanity reference (PyTorch BN, in the role AlexNet has in ImageNet-C)."""
    from resnorm.norms import norm_info

    return {"pairs": [list(p) for p in design.variant_pairs()],
            "adapt": [v for v in design.variants
                      if norm_info(design.norms.get(v, v)).batch_stats],
            "reference": design.sanity[0] if design.sanity else None}


def _signature(f: dict[str, Any], drop: tuple[str, ...]) -> tuple:
    """A run's settings apart from `drop`, comparable across runs."""
    return tuple(sorted((k, repr(v)) for k, v in f.items() if k not in drop))


def _groups(fields: Fields, drop: tuple[str, ...]) -> list[list[str]]:
    """Runs grouped by their settings apart from `drop`, in plan order."""
    groups: dict[tuple, list[str]] = {}
    for name, f in fields.items():
        groups.setdefault(_signature(f, drop), []).append(name)
    return list(groups.values())


def _derived_variants(fields: Fields, kinds: dict[str, str]) -> list[str]:
    """The largest group of runs that differ only in their norm, one run per kind."""
    groups = _groups(fields, ("norm",))
    if not groups:
        return []
    best = max(groups, key=lambda g: len({kinds[r] for r in g}))  # first on ties
    first_of_kind: dict[str, str] = {}
    for name in best:
        first_of_kind.setdefault(kinds[name], name)
    return list(first_of_kind.values())


def _derived_sanity(fields: Fields, kinds: dict[str, str],
                    variants: list[str]) -> tuple[str, str] | None:
    """PyTorch BN and own BN: among the variants, else any pair differing only in norm."""
    ref, cand = ASSIGNMENT["reference"], ASSIGNMENT["candidate"]
    for group in [variants, *_groups(fields, ("norm",))]:
        a = [r for r in group if kinds[r] == ref]
        b = [r for r in group if kinds[r] == cand]
        if a and b:
            return a[0], b[0]
    return None


def _derived_batch(fields: Fields, kinds: dict[str, str],
                   variants: list[str]) -> dict[str, list[str]]:
    """Per batch-study norm, its runs that differ from the variants only in BATCH_MAY_DIFFER
    (one per batch size; the variant itself wins its size)."""
    if not variants:
        return {}
    drop = ("norm", *BATCH_MAY_DIFFER)
    base = _signature(fields[variants[0]], drop)
    out = {}
    for kind in ASSIGNMENT["batch_norms"]:
        chosen: dict[Any, str] = {}
        for name in fields:
            if kinds[name] == kind and _signature(fields[name], drop) == base:
                size = fields[name].get("batch_size")
                if size not in chosen or name in variants:
                    chosen[size] = name
        if len(chosen) >= 2:
            out[kind] = [chosen[s] for s in sorted(chosen)]
    return out


def _derived_literal(fields: Fields, kinds: dict[str, str], variants: list[str],
                     sanity: tuple[str, str] | None) -> list[tuple[str, str]]:
    """Each literal-recipe run beside the variant (or sanity reference) of its norm."""
    twins = {kinds[r]: r for r in [*(sanity or ()), *variants]}
    return [(name, twins[kinds[name]]) for name, f in fields.items()
            if f.get("recipe") == ASSIGNMENT["literal_recipe"] and name not in twins.values()
            and kinds[name] in twins]


def _batch_members(runs: list[str], fields: Fields, where: str) -> list[BatchMember]:
    """A batch group's runs by increasing batch size; they must differ in batch size and
    otherwise only where BATCH_MAY_DIFFER allows."""
    sizes = [int(fields[r].get("batch_size") or 0) for r in runs]
    if len(set(sizes)) != len(sizes):
        raise UsageError(f"{where}: two runs train at the same batch size ({sizes})")
    first = runs[0]
    for other in runs[1:]:
        extra = [d for d in differences(fields[first], fields[other])
                 if d not in BATCH_MAY_DIFFER]
        if extra:
            raise UsageError(f"{where}: '{first}' and '{other}' differ in {', '.join(extra)}, "
                             f"not only in {', '.join(BATCH_MAY_DIFFER)}")
    return [BatchMember(r, s) for s, r in sorted(zip(sizes, runs))]


def _check_sanity(sanity: tuple[str, str] | None, fields: Fields, source: str) -> None:
    if sanity is None:
        return
    extra = [d for d in differences(fields[sanity[0]], fields[sanity[1]]) if d != "norm"]
    if extra:
        raise UsageError(f"{source}: design.sanity: '{sanity[0]}' and '{sanity[1]}' differ in "
                         f"{', '.join(extra)}, not only in the norm")


def compared_pairs(design: Design, fields: Fields) -> list[dict[str, Any]]:
    """Every pair the study compares, each once: the primary pairs, the sanity pair, each
    batch group's smallest vs largest, literal beside its twin, every other pair of runs that
    differ in exactly one setting, then the plan's `comparisons:`."""
    names = list(fields)
    single = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
              if len(differences(fields[a], fields[b])) == 1]
    candidates: list[tuple[str, str]] = [*design.primary, *([design.sanity] if design.sanity
                                                           else [])]
    candidates += [(m[0].run, m[-1].run) for m in design.batch.values()]
    candidates += [(twin, lit) for lit, twin in design.literal]  # default − literal recipe
    candidates += [*single, *design.comparisons]
    seen, out = set(), []
    for a, b in candidates:
        if frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            out.append({"a": a, "b": b, "differs_in": differences(fields[a], fields[b])})
    return out
