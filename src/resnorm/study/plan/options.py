"""How a study runs, beside its plan: the options `resnorm study` takes, in one object.

The command line builds a `StudyOptions` (resnorm.study.cli.study_options); tests and other
programs build one directly. `checked()` refuses, in one line each, the options that cannot go
together, before any work is done.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from resnorm.errors import UsageError

__all__ = ["StudyOptions", "EXECUTORS"]

EXECUTORS = ("local", "slurm")  # --executor: where the jobs train


@dataclass
class StudyOptions:
    """What the command line sets beside the plan (see `resnorm study --help`)."""

    data: str | Path | None = None       # --data: a dataset folder or a prepared cache
    synthetic: str | Path | None = None  # --synthetic DIR: the stand-in dataset, made if missing
    cache: str | None = None             # --cache: where prepared caches go
    progress: bool = True                # False (--quiet): one line per job, no bars
    gradcam: bool = True                 # False (--no-gradcam)
    report: bool = True                  # False (--no-report)
    pdf: bool = False                    # --pdf: the report as STUDY/report.pdf too
    shard: tuple[int, int] | None = None  # --shard I/K: only shard I of K of the jobs
    jobs: int | str = 1                  # --jobs K | "auto": jobs at once on this machine
    seeds: int | list[int] | None = None  # --seeds: overrides the plan's seeds:
    keep_leaked: bool = False            # --keep-leaked: as the plan's defaults keep_leaked
    executor: str = "local"              # --executor local | slurm
    slurm: dict = field(default_factory=dict)  # the SLURM options given (None: not given)
    mlflow: str | None = None            # --mlflow [URI]: export at the end ("": the default)

    def checked(self) -> "StudyOptions":
        """These options with --jobs settled; the ones that cannot go together refused."""
        from resnorm.distributed import launched_world_size

        torchrun = launched_world_size() > 1
        jobs = self.jobs
        if (self.data is None) == (self.synthetic is None):
            raise UsageError("give exactly one of --data DATA or --synthetic DIR")
        if self.executor not in EXECUTORS:
            raise UsageError(f"--executor must be local or slurm, got {self.executor!r}")
        if self.executor == "slurm" and (torchrun or self.shard is not None
                                         or jobs not in (1, "auto")):
            raise UsageError("--executor slurm runs each job as its own SLURM task: it does "
                             "not combine with --jobs, --shard or torchrun "
                             "(docs/distributed.md)")
        if jobs == "auto" and (torchrun or self.executor == "slurm"):
            jobs = 1  # under torchrun every process of the group trains each run
        if jobs != "auto" and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
            raise UsageError(f"--jobs must be a positive integer or auto, got {jobs!r}")
        if jobs != "auto" and jobs > 1 and torchrun:
            raise UsageError("--jobs > 1 cannot be combined with torchrun (every process of "
                             "the group trains each run); use --jobs 1, or --shard per machine")
        return dataclasses.replace(self, jobs=jobs)
