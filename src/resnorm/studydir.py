"""A study folder: the one place that knows every path under STUDY/.

    plan.yaml          the plan as run
    study.json         what the study did to each (run, seed), and the manifest
    runs/<name>/seed-<s>/    one trained model each (a RunDir owns its files)
    tuning/            the tune: phase: tuning/<run>/lr-<lr>[-wd-<wd>]/seed-<s>/ trials,
                       tuning.json, the Optuna journal, tuning/slurm/ (its SLURM tasks' logs)
    robustness/        the robustness step's scores per (run, seed)
    gradcam/           the best run's galleries and gradcam.json, gradcam/runs/<name>/ others'
    slurm/             submitit's pickles, each SLURM task's log, tasks.json
    cache/             the prepared data of a SLURM study (where every node reads it)
    summary.json       the statistics (resnorm.report.summary)
    report.html, report.md, report.pdf, report_assets/
    mlflow.db, mlartifacts/   the default MLflow export

Nothing else spells these names: the runner, the executors, tuning, Grad-CAM, export and
the report ask a StudyDir. Like RunDir it imports no torch.

Studies written by older versions are refused here, in one place (`check_current`), each in
one line that says how to re-render it: every reader of a study (resnorm.study.execution.records,
and so the report, Grad-CAM and the export) reads the current layout only.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from resnorm.errors import UsageError
from resnorm.fileio import read_json

__all__ = ["StudyDir", "lr_text", "point_name"]

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
    CACHE = "cache"
    MANIFEST_KEY = "manifest"         # study.json's key holding the study manifest
    MANIFEST_VERSION = 2              # 2: each run's entry a resolved record (lr, rule, batch)
    GRADCAM_JSON = "gradcam.json"     # in every gallery folder
    TUNING_CHOICE = "tuning.json"
    TUNING_JOURNAL = "journal.log"
    SLURM_TASKS = "tasks.json"        # in a SLURM log folder: job label -> its task

    def __init__(self, path: str | os.PathLike) -> None:
        self.dir = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"StudyDir({str(self.dir)!r})"

    def __fspath__(self) -> str:
        return str(self.dir)

    def __str__(self) -> str:
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
    def state_lock(self) -> Path:
        """The lock every study.json write takes."""
        return self.dir / f".{self.STATE}.lock"

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

    def run_names(self) -> list[str]:
        """The run folders under STUDY/runs/, sorted."""
        return sorted(p.name for p in self.runs.glob("*") if p.is_dir())

    def seed_folders(self, name: str) -> list[tuple[int, Path]]:
        """(seed, STUDY/runs/<name>/seed-<s>/) of a run, in seed order."""
        found = ((self.seed_of(p), p) for p in self.run(name).glob("seed-*") if p.is_dir())
        return sorted((seed, p) for seed, p in found if seed is not None)

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
    def cache(self) -> Path:
        return self.dir / self.CACHE

    @property
    def tuning(self) -> Path:
        return self.dir / self.TUNING

    def tuning_trial(self, run: str, point: str, seed: int) -> Path:
        """A tuning trial's job: STUDY/tuning/<run>/<point>/seed-<seed>/ (`point`: the
        setting it trains, `point_name`)."""
        return self.tuning / run / point / f"seed-{seed}"

    @property
    def tuning_choice(self) -> Path:
        """What the tuning phase chose (resnorm.study.tuning.results)."""
        return self.tuning / self.TUNING_CHOICE

    @property
    def tuning_journal(self) -> Path:
        """The Optuna journal of the tuning phase."""
        return self.tuning / self.TUNING_JOURNAL

    @property
    def tuning_journal_lock(self) -> Path:
        return self.tuning / f".{self.TUNING_JOURNAL}.lock"

    @property
    def tuning_slurm(self) -> Path:
        """The tuning trials' SLURM log folder."""
        return self.tuning / self.SLURM

    @property
    def robustness(self) -> Path:
        return self.dir / self.ROBUSTNESS

    def robustness_trial(self, run: str, seed: int) -> Path:
        """Where (run, seed) is evaluated on corrupted images (resnorm.robustness):
        STUDY/robustness/<run>/seed-<seed>/."""
        return self.robustness / run / f"seed-{seed}"

    @property
    def robustness_slurm(self) -> Path:
        """The robustness evaluations' SLURM log folder."""
        return self.robustness / self.SLURM

    @property
    def gradcam(self) -> Path:
        """The best run's galleries and gradcam.json."""
        return self.dir / self.GRADCAM

    def gradcam_of(self, name: str) -> Path:
        """The galleries of another run (a plan's `gradcam: runs:`)."""
        return self.galleries_of(self.gradcam, name)

    @classmethod
    def galleries_of(cls, gradcam: str | os.PathLike, name: str) -> Path:
        """Run `name`'s galleries beside the best run's in a Grad-CAM folder (STUDY/gradcam,
        or another one `resnorm gradcam --out` names)."""
        return Path(gradcam) / cls.RUNS / name

    @classmethod
    def gallery_json(cls, folder: str | os.PathLike) -> Path:
        """A gallery folder's summary (written by resnorm.gradcam.run)."""
        return Path(folder) / cls.GRADCAM_JSON

    @property
    def slurm(self) -> Path:
        return self.dir / self.SLURM

    @classmethod
    def slurm_tasks(cls, logs: str | os.PathLike) -> Path:
        """A SLURM log folder's record of which task trains which job."""
        return Path(logs) / cls.SLURM_TASKS

    # studies written by older versions: refused here, each in one line
    def check_current(self) -> None:
        """UsageError (one line, how to re-render it) for a study an older resnorm wrote:
        a run folder holding the run itself instead of seed-<s>/ folders (before seeds); a
        plan copy without the study manifest in study.json (before manifests) or with a
        version-1 manifest (before each run's resolved record); a tuning.json of an lr grid
        (before Optuna's sampler drew the trials). A folder of runs without a plan is no
        study an older version wrote: it is read (no design)."""
        for name in self.run_names():
            folder = self.run(name)
            if not self.seed_folders(name) and any(p.is_file() for p in folder.iterdir()):
                raise UsageError(f"{self.dir} was written by resnorm before seeds ({folder} "
                                 "holds a run, not seed-<s>/ folders): train it again with "
                                 f"`resnorm study --plan {self.plan} --out NEW_FOLDER`")
        state = read_json(self.state) or {}
        manifest = state.get(self.MANIFEST_KEY)
        tuning = read_json(self.tuning_choice) or {}
        older = ("study.json has no manifest" if not isinstance(manifest, dict)
                 else "a version-1 manifest" if manifest.get("version", 1) < self.MANIFEST_VERSION
                 else "a tuning.json of an lr grid" if any(
                     "grid" in r for r in (tuning.get("runs") or {}).values())
                 else None)
        if self.plan.is_file() and older:
            raise UsageError(f"{self.dir} was written by an older resnorm ({older}): "
                             f"re-render it with `resnorm study --plan {self.plan} --data "
                             f"{state.get('data') or 'DATA'} --out {self.dir}` (finished runs "
                             "are kept, not retrained)")


def lr_text(lr: float) -> str:
    """How an lr is written in folder names and lines: 6 significant digits."""
    return f"{lr:.6g}"


def point_name(lr: float, weight_decay: float | None = None) -> str:
    """A tuning trial's folder name: the setting it trains, 'lr-0.08' or 'lr-0.08-wd-0.0005'."""
    return f"lr-{lr_text(lr)}" + (f"-wd-{lr_text(weight_decay)}" if weight_decay is not None
                                  else "")
