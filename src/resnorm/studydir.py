"""A study folder: the one place that knows every path under STUDY/.

    plan.yaml          the plan as run
    study.json         what the study did to each (run, seed), and the manifest
    runs/<name>/seed-<s>/    one trained model each (a RunDir owns its files)
    tuning/            the tune: phase: tuning/<run>/lr-<lr>/seed-<s>/ trials, tuning.json,
                       the Optuna journal
    robustness/        the robustness step's scores per (run, seed)
    gradcam/           the best run's galleries, gradcam/runs/<name>/ for others
    slurm/             submitit's pickles and each SLURM task's log
    summary.json       the statistics (resnorm.report.summary)
    report.html, report.md, report.pdf, report_assets/
    mlflow.db, mlartifacts/   the default MLflow export

Nothing else spells these names: the runner, the executors, tuning, Grad-CAM, export and
the report ask a StudyDir. Like RunDir it imports no torch.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["StudyDir"]

_SEED_DIR = re.compile(r"^seed-(-?\d+)$")


class StudyDir:
    """The paths of one study folder (nothing is created by asking)."""

    PLAN = "plan.yaml"
    STATE = "study.json"
    SUMMARY = "summary.json"
    RUNS = "runs"
    TUNING = "tuning"
    ROBUSTNESS = "robustness"
    GRADCAM = "gradcam"
    SLURM = "slurm"
    REPORT_HTML = "report.html"
    REPORT_MD = "report.md"
    REPORT_PDF = "report.pdf"
    REPORT_ASSETS = "report_assets"
    MLFLOW_DB = "mlflow.db"
    MLFLOW_ARTIFACTS = "mlartifacts"

    def __init__(self, path: str | os.PathLike) -> None:
        self.dir = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"StudyDir({str(self.dir)!r})"

    def __fspath__(self) -> str:
        return str(self.dir)

    @classmethod
    def of_run(cls, run_dir: str | os.PathLike) -> "StudyDir | None":
        """The study holding a run folder STUDY/runs/<name>/seed-<s>/ (None if it is not one)."""
        p = Path(run_dir).expanduser().resolve()
        if _SEED_DIR.match(p.name) and p.parent.parent.name == cls.RUNS:
            return cls(p.parent.parent.parent)
        return None

    # the study's own files
    @property
    def plan(self) -> Path:
        return self.dir / self.PLAN

    @property
    def state(self) -> Path:
        return self.dir / self.STATE

    @property
    def summary(self) -> Path:
        return self.dir / self.SUMMARY

    @property
    def report_html(self) -> Path:
        return self.dir / self.REPORT_HTML

    @property
    def report_md(self) -> Path:
        return self.dir / self.REPORT_MD

    @property
    def report_pdf(self) -> Path:
        return self.dir / self.REPORT_PDF

    @property
    def report_assets(self) -> Path:
        return self.dir / self.REPORT_ASSETS

    @property
    def mlflow_db(self) -> Path:
        return self.dir / self.MLFLOW_DB

    @property
    def mlflow_artifacts(self) -> Path:
        return self.dir / self.MLFLOW_ARTIFACTS

    # the runs
    @property
    def runs(self) -> Path:
        return self.dir / self.RUNS

    def run(self, name: str) -> Path:
        """STUDY/runs/<name>/: the run's seed folders."""
        return self.runs / name

    def trial(self, name: str, seed: int) -> Path:
        """Where (run `name`, `seed`) trains: STUDY/runs/<name>/seed-<seed>/."""
        return self.run(name) / f"seed-{seed}"

    @staticmethod
    def seed_of(folder: str | os.PathLike) -> int | None:
        """The seed a seed-<s> folder holds (None for any other name)."""
        m = _SEED_DIR.match(Path(folder).name)
        return int(m.group(1)) if m else None

    # the steps after training, and the tuning before it
    @property
    def tuning(self) -> Path:
        return self.dir / self.TUNING

    @property
    def robustness(self) -> Path:
        return self.dir / self.ROBUSTNESS

    @property
    def gradcam(self) -> Path:
        """The best run's galleries and gradcam.json."""
        return self.dir / self.GRADCAM

    def gradcam_of(self, name: str) -> Path:
        """The galleries of another run (a plan's `gradcam: runs:`)."""
        return self.gradcam / self.RUNS / name

    @property
    def slurm(self) -> Path:
        return self.dir / self.SLURM
