"""The plan's `robustness:` section: every finished run's seeds scored on corrupted copies of
the held-out split after training (resnorm.robustness).

    robustness:
      corruptions: all          # or a list of the 15 names (resnorm.robustness.corruptions)
      severities: [1, 3, 5]     # of 1-5
      images: 500               # held-out images scored per corruption and severity
      adapt: true               # BN's statistics re-estimated on the corrupted val images too
      seed: 0                   # which images, and each corruption's randomness

Parsed by `parse_plan`; every problem is a one-line UsageError.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from resnorm.errors import UsageError, checked_mapping
from resnorm.robustness.corruptions import CORRUPTIONS, SEVERITIES

__all__ = ["ROBUSTNESS_KEYS", "RobustnessSettings", "parse_robustness", "parse_corruptions",
           "parse_severities"]

ROBUSTNESS_KEYS = ("corruptions", "severities", "images", "adapt", "seed")


@dataclass
class RobustnessSettings:
    corruptions: list[str] = field(default_factory=lambda: list(CORRUPTIONS))
    severities: list[int] = field(default_factory=lambda: [1, 3, 5])
    images: int = 500
    adapt: bool = True
    seed: int = 0

    def to_yaml_dict(self) -> dict:
        every = list(self.corruptions) == list(CORRUPTIONS)
        return {"corruptions": "all" if every else list(self.corruptions),
                "severities": list(self.severities), "images": self.images,
                "adapt": self.adapt, "seed": self.seed}

    @property
    def middle_severity(self) -> int:
        """The severity the report's heatmap shows: the middle one of those scored."""
        return self.severities[(len(self.severities) - 1) // 2]


def parse_corruptions(value: Any, where: str) -> list[str]:
    """'all' or a list of the 15 names, in the benchmark's order."""
    if value == "all":
        return list(CORRUPTIONS)
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value:
        raise UsageError(f"{where} must be 'all' or a list of corruption names")
    unknown = [v for v in value if v not in CORRUPTIONS]
    if unknown:
        raise UsageError(f"{where}: unknown corruption '{unknown[0]}' (one of: "
                         f"{', '.join(CORRUPTIONS)})")
    return [c for c in CORRUPTIONS if c in value]


def parse_severities(value: Any, where: str) -> list[int]:
    """A list of distinct severities among 1-5, ascending."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value:
        raise UsageError(f"{where} must be a list of severities (1-5)")
    out = []
    for v in value:
        try:
            s = int(v)
        except (TypeError, ValueError):
            s = None
        if isinstance(v, bool) or s is None or str(v).strip() != str(s) or s not in SEVERITIES:
            raise UsageError(f"{where}: severity {v!r} is not one of 1, 2, 3, 4, 5")
        out.append(s)
    return sorted(set(out))


def parse_robustness(raw: Any, source: str = "plan") -> RobustnessSettings | None:
    """The plan's `robustness:` (None: the plan has none; `robustness: {}` takes every
    default)."""
    if raw is None:
        return None
    where = f"{source}: robustness"
    raw = checked_mapping(raw, ROBUSTNESS_KEYS, where)
    out = RobustnessSettings()
    if "corruptions" in raw:
        out.corruptions = parse_corruptions(raw["corruptions"], f"{where}.corruptions")
    if "severities" in raw:
        out.severities = parse_severities(raw["severities"], f"{where}.severities")
    for key in ("images", "seed"):
        value = raw.get(key, getattr(out, key))
        least = 1 if key == "images" else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise UsageError(f"{where}.{key} must be an integer of at least {least}, "
                             f"got {value!r}")
        setattr(out, key, value)
    if not isinstance(raw.get("adapt", True), bool):
        raise UsageError(f"{where}.adapt must be true or false")
    out.adapt = raw.get("adapt", True)
    return out
