"""The study manifest: what a study is, declared before any training, in STUDY/study.json.

`resnorm study` writes it once the plan is resolved, and again after a tuning phase: the
design (which runs answer which question), each run's one resolved record (`ResolvedRun`: its
complete training config, its lr and the rule that produced it, its global batch, whether the
lr was tuned and from which trial) and every (run, seed) with its complete config. The report, Grad-CAM and the
statistics read the study through it and the run folders; nothing downstream re-derives the
design from configs. This module holds the data model and its JSON form only: deriving and
checking a design from a plan is `resnorm.study.plan.design`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnorm.fileio import read_json
from resnorm.studydir import StudyDir

__all__ = ["Design", "BatchMember", "Manifest", "ResolvedRun", "MANIFEST_KEY",
           "MANIFEST_VERSION", "read_manifest"]

MANIFEST_KEY = StudyDir.MANIFEST_KEY  # study.json's key holding it
MANIFEST_VERSION = StudyDir.MANIFEST_VERSION  # 2: each run's entry is a ResolvedRun


@dataclass
class ResolvedRun:
    """One run as the study resolved it, once (resnorm.study.plan.resolve), and again after
    tuning (resnorm.study.tuning.phase): what design, tuning, capacity, the executors, the
    report and the export read instead of resolving the plan again.

    config:  the run's complete TrainConfig fields, recipe filled in (without seed, out, data,
             which differ per job)
    lr:      the lr it trains at; lr_note says how it was set, in words
    lr_rule: the plan's rule that scaled the base lr to the run's batch (linear | sqrt | none),
             or None for a run that sets its own lr
    batch:   the global batch size (batch_size x processes under torchrun)
    tuned:   whether a tuning phase chose lr (and weight decay); trial: which trial, as
             {"run": the tuned run whose search chose it, "number": its Optuna trial number,
             "params": the sampler's values, "dir": its folder relative to the study}
    """

    name: str
    config: dict[str, Any]
    seeds: list[int]
    lr: float
    lr_note: str
    lr_rule: str | None
    batch: int
    tuned: bool = False
    trial: dict[str, Any] | None = None

    def to_dict(self) -> dict:
        return {"config": dict(self.config), "seeds": list(self.seeds), "lr": self.lr,
                "lr_note": self.lr_note, "lr_rule": self.lr_rule, "batch": self.batch,
                "tuned": self.tuned, "trial": self.trial}

    @classmethod
    def from_dict(cls, name: str, d: dict) -> "ResolvedRun":
        """A manifest's run entry; for a folder of runs without a manifest, `d` holds only a
        run's config and seeds: lr and batch are read from its config (a study with a
        version-1 manifest is refused: StudyDir.check_current)."""
        config = dict(d.get("config") or {})
        return cls(name, config, [int(s) for s in d.get("seeds") or []],
                   float(d.get("lr", config.get("lr") or 0.0)), str(d.get("lr_note") or ""),
                   d.get("lr_rule"), int(d.get("batch", config.get("batch_size") or 0)),
                   bool(d.get("tuned", False)), d.get("trial"))


@dataclass(frozen=True)
class BatchMember:
    """One run of a batch-size group and the batch size it trains with."""

    run: str
    batch_size: int


@dataclass
class Design:
    """Which runs answer which of the study's questions (see resnorm.study.plan.design).

    variants:    the runs compared pairwise and ranked (one per norm, same recipe)
    sanity:      (reference, candidate): the equivalence check of two implementations
    batch:       group name -> its runs by increasing batch size; the interaction contrasts
                 the first two groups' change from their smallest to their largest batch
    primary:     the primary family's pairs (default: the variants pairwise)
    literal:     (literal-recipe run, the run it is set beside)
    comparisons: further pairs the plan asks for (exploratory)
    pairs:       every pair the study compares, each {a, b, differs_in: [fields]} in the
                 order the report lists them (settings from the resolved configs)
    norms:       run -> its norm kind without parameter, as the plan names it
    robustness:  the robustness family ({pairs, adapt, reference}: design.robustness_question)
    """

    variants: list[str] = field(default_factory=list)
    sanity: tuple[str, str] | None = None
    batch: dict[str, list[BatchMember]] = field(default_factory=dict)
    primary: list[tuple[str, str]] = field(default_factory=list)
    literal: list[tuple[str, str]] = field(default_factory=list)
    comparisons: list[tuple[str, str]] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    norms: dict[str, str] = field(default_factory=dict)
    robustness: dict[str, Any] = field(default_factory=dict)

    def variant_pairs(self) -> list[tuple[str, str]]:
        """The variants pairwise (the default primary family)."""
        v = self.variants
        return [(a, b) for i, a in enumerate(v) for b in v[i + 1:]]

    def ranked(self) -> list[str]:
        """The runs the ranking orders: those of the primary pairs, in order of mention."""
        return list(dict.fromkeys(name for pair in self.primary for name in pair))

    def roles_of(self, name: str) -> list[str]:
        """What run `name` is in the design, e.g. ['variant', 'sanity:candidate', 'batch:bn']."""
        roles = ["variant"] if name in self.variants else []
        if self.sanity is not None and name in self.sanity:
            roles.append("sanity:" + ("reference" if name == self.sanity[0] else "candidate"))
        roles += [f"batch:{g}" for g, members in self.batch.items()
                  if name in {m.run for m in members}]
        roles += ["literal" for lit, _ in self.literal if lit == name]
        return roles

    def to_dict(self) -> dict:
        return {"variants": list(self.variants),
                "sanity": list(self.sanity) if self.sanity else None,
                "batch": {g: [{"run": m.run, "batch_size": m.batch_size} for m in members]
                          for g, members in self.batch.items()},
                "primary": [list(p) for p in self.primary],
                "literal": [list(p) for p in self.literal],
                "comparisons": [list(p) for p in self.comparisons],
                "pairs": [dict(p) for p in self.pairs], "norms": dict(self.norms),
                "robustness": dict(self.robustness)}

    @classmethod
    def from_dict(cls, d: dict) -> "Design":
        return cls(variants=[str(v) for v in d.get("variants") or []],
                   sanity=tuple(d["sanity"]) if d.get("sanity") else None,
                   batch={str(g): [BatchMember(str(m["run"]), int(m["batch_size"]))
                                   for m in members]
                          for g, members in (d.get("batch") or {}).items()},
                   primary=[(str(a), str(b)) for a, b in d.get("primary") or []],
                   literal=[(str(a), str(b)) for a, b in d.get("literal") or []],
                   comparisons=[(str(a), str(b)) for a, b in d.get("comparisons") or []],
                   pairs=[dict(p) for p in d.get("pairs") or []],
                   norms={str(k): str(v) for k, v in (d.get("norms") or {}).items()},
                   robustness=dict(d.get("robustness") or {}))


@dataclass
class Manifest:
    """The study as declared: its design, and per run its seeds and resolved settings.

    runs: name -> its ResolvedRun as a dict (config, seeds, lr, lr_note, lr_rule, batch,
    tuned, trial) and its "roles" in the design;
    jobs: "<run>/seed-<s>" -> {"run", "seed", "dir" (relative to the study), "config" (the
    job's complete resolved TrainConfig)}.
    """

    design: Design
    runs: dict[str, dict[str, Any]]
    jobs: dict[str, dict[str, Any]]
    version: int = MANIFEST_VERSION

    def config(self, run: str) -> dict[str, Any]:
        """A run's resolved settings as the plan declared them ({} for a run not in it)."""
        return dict((self.runs.get(run) or {}).get("config") or {})

    def resolved(self) -> dict[str, ResolvedRun]:
        """Every run's resolved record, in plan order."""
        return {name: ResolvedRun.from_dict(name, entry) for name, entry in self.runs.items()}

    def to_dict(self) -> dict:
        return {"version": self.version, "design": self.design.to_dict(), "runs": self.runs,
                "jobs": self.jobs}

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        return cls(Design.from_dict(d.get("design") or {}), dict(d.get("runs") or {}),
                   dict(d.get("jobs") or {}), int(d.get("version", MANIFEST_VERSION)))


def read_manifest(study: str | Path) -> Manifest | None:
    """The manifest of a study folder, or None for a folder of runs without a plan (a study
    written before manifests is refused: resnorm.studydir.StudyDir.check_current)."""
    state = read_json(StudyDir(study).state) or {}
    raw = state.get(MANIFEST_KEY)
    return Manifest.from_dict(raw) if isinstance(raw, dict) else None
