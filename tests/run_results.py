"""A trained run's results without what only timing changes: how tests compare two runs that
must have trained identically (a study against a local one, a resumed run against one that
was not interrupted)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from resnorm.metrics import TIMING_COLUMNS


def run_results(run: Path) -> tuple:
    """(status, final.json's eval, metrics.csv rows without the timing columns)."""
    final = json.loads((run / "final.json").read_text())
    with open(run / "metrics.csv", newline="") as f:
        rows = [{k: v for k, v in r.items() if k not in TIMING_COLUMNS}
                for r in csv.DictReader(f)]
    return final["status"], final["eval"], rows
