"""One run of a study: train (or resume, or skip) it, and say how it went in one line.

`train_one` is what both the sequential runner and each --jobs process call, so the skip /
resume / failure bookkeeping is the same either way.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from resnorm.errors import DivergedError
from resnorm.fileio import read_json

__all__ = ["Outcome", "train_one", "summary_line"]


@dataclass
class Outcome:
    """How one run went in this invocation of the study."""

    name: str
    status: str            # completed | early_stopped | diverged | failed
    action: str            # trained | resumed | skipped
    final: dict | None
    seconds: float
    error: str | None = None



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
