"""Which pairs of runs a study compares, and which of them form its primary family.

Compared: every pair of plan runs that differ in exactly one setting, the plan's
`comparisons:`, and the pairs the report's sections discuss (the variants pairwise, each norm
at its smallest vs largest batch size, literal vs default recipe, the sanity pair).

Primary (the questions the study was run to answer): by default the assignment's — the six
variants BN, IN, BIN, LN, GN and no norm pairwise (not PyTorch BN: it is the sanity check's
reference, tested for equivalence instead); a plan's `primary: [[a, b], ...]` replaces those
pairs. The sanity check and the batch-size interaction join the family in `summary`.
"""
from __future__ import annotations

from typing import Any

from resnorm.report.roles import Roles, norm_kind

__all__ = ["comparison_pairs", "role_pairs", "primary_pairs", "ranked_runs"]

# Plan fields that say nothing about the experiment (where and how fast it ran).
IGNORED_FIELDS = ("seed", "device", "amp", "channels_last", "compile", "compile_mode",
                  "eval_batch_size", "num_classes")
REFERENCE_NORM = "torch_bn"  # the sanity check's reference implementation, not a variant


def _fields(plan: dict) -> dict[str, dict]:
    """Each plan run's settings (defaults + overrides), without the ones that do not change
    the experiment."""
    defaults = plan.get("defaults") or {}
    out = {}
    for r in plan.get("runs") or []:
        if isinstance(r, dict) and "name" in r:
            fields = {**defaults, **{k: v for k, v in r.items() if k != "name"}}
            out[str(r["name"])] = {k: v for k, v in fields.items() if k not in IGNORED_FIELDS}
    return out


def _differences(a: dict, b: dict) -> list[str]:
    from resnorm.study.plan import train_default

    def value(fields: dict, key: str) -> Any:
        if key in fields:
            return fields[key]
        try:
            return train_default(key)
        except KeyError:
            return None

    return [k for k in sorted(set(a) | set(b)) if value(a, k) != value(b, k)]


def comparison_pairs(plan: dict) -> list[tuple[str, str, str]]:
    """(a, b, what differs): every pair of plan runs that differ in exactly one setting, in plan
    order, then the plan's `comparisons:` pairs."""
    fields = _fields(plan)
    names = list(fields)
    pairs, seen = [], set()
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            diff = _differences(fields[a], fields[b])
            if len(diff) == 1:
                pairs.append((a, b, diff[0]))
                seen.add(frozenset((a, b)))
    for a, b in plan.get("comparisons") or []:
        if frozenset((a, b)) not in seen and a in fields and b in fields:
            pairs.append((a, b, ", ".join(_differences(fields[a], fields[b])) or "nothing"))
            seen.add(frozenset((a, b)))
    return pairs


def role_pairs(roles: Roles, plan: dict) -> list[tuple[str, str, str]]:
    """The pairs the report's sections discuss that `comparison_pairs` may miss (they may
    differ in more than one setting): the primary pairs, each norm at its smallest vs largest
    batch size (lr and early stopping change with it), each literal-recipe run vs its
    default-recipe variant, and the sanity pair."""
    fields = _fields(plan)
    pairs = list(primary_pairs(plan, roles))
    for members in roles.batch.values():
        if len(members) >= 2:
            pairs.append((members[0].name, members[-1].name))
    pairs += [(lit.name, ref.name) for lit, ref in roles.literal if ref is not None]
    if roles.sanity is not None:
        pairs.append((roles.sanity[0].name, roles.sanity[1].name))
    known = {frozenset(p[:2]) for p in comparison_pairs(plan)}
    out = []
    for a, b in pairs:
        if frozenset((a, b)) in known:
            continue
        known.add(frozenset((a, b)))
        differs = (", ".join(_differences(fields[a], fields[b])) if a in fields and b in fields
                   else "—")
        out.append((a, b, differs or "nothing"))
    return out


def primary_pairs(plan: dict, roles: Roles) -> list[tuple[str, str]]:
    """The plan's `primary:` pairs, else every pair of the norm variants but PyTorch BN."""
    if plan.get("primary"):
        return [(str(a), str(b)) for a, b in plan["primary"]]
    names = ranked_runs(plan, roles)
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]


def ranked_runs(plan: dict, roles: Roles) -> list[str]:
    """The runs the ranking orders: those of the plan's `primary:` pairs (in order of first
    mention), else the norm variants but PyTorch BN."""
    if plan.get("primary"):
        return list(dict.fromkeys(str(n) for pair in plan["primary"] for n in pair))
    return [r.name for r in roles.variants if norm_kind(r) != REFERENCE_NORM]
