"""The study folder as data: its runs, their state and results.

Read by the runner (what is finished), the report and Grad-CAM. This module imports nothing
of the runner, training or the report, so the report can read a study without them.

Layout: STUDY/plan.yaml (the plan as run), STUDY/study.json (what the study did to each run),
STUDY/runs/<name>/ (each run's folder, see resnorm.train.run).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from resnorm.fileio import atomic_write_text, read_json, read_yaml

__all__ = ["PLAN_FILE", "STATE_FILE", "OK_STATUSES", "RunRecord", "read_state", "write_state",
           "collect_runs", "best_run"]

PLAN_FILE = "plan.yaml"      # the study's copy of its plan
STATE_FILE = "study.json"    # per-run outcome as the study saw it (failures, lr applied)
OK_STATUSES = ("completed", "early_stopped")


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


def write_state(study: Path, state: dict) -> None:
    atomic_write_text(study / STATE_FILE, json.dumps(state, indent=2) + "\n")


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
