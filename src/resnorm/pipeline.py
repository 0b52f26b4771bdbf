"""Run a whole study plan: train every (run, seed), then the robustness step, Grad-CAM and
the report.

The top floor of `resnorm study`: the study package trains the jobs (resnorm.study.runner,
which knows nothing of Grad-CAM or the report), then this module explains the best run
(resnorm.gradcam) and writes the report (resnorm.report). `--executor slurm --no-wait` hands
those last steps to a job after the SLURM array: `finish_study`, a top-level function the
runner receives ready-bound (picklable), so the study package never imports what it calls.

example:
  resnorm study --synthetic data/synth-demo --plan configs/demo.yaml --out studies/demo
"""
from __future__ import annotations

import argparse
import functools
import traceback
from dataclasses import dataclass
from pathlib import Path

from resnorm.errors import UsageError
from resnorm.robustness.step import check_plan as check_robustness, finishes
from resnorm.robustness.step import study_step as robustness_step
from resnorm.study import cli as study_cli
from resnorm.study.plan.options import StudyOptions
from resnorm.study.plan.parse import Plan
from resnorm.study.runner import (held_elsewhere, prepare_study, study_plan, torch_threads,
                                  train_study, tune_study)
from resnorm.study.execution.state import StudyState
from resnorm.study.execution.job import Job, Outcome
from resnorm.studydir import StudyDir

__all__ = ["StudyResult", "run_study", "finish_study", "configure_parser", "run_cli"]


@dataclass
class StudyResult:
    study: Path
    outcomes: list[Outcome]
    gradcam_error: str | None = None
    submitted: bool = False  # --executor slurm --no-wait: the study goes on in SLURM

    @property
    def failed(self) -> list[str]:
        return [o.name for o in self.outcomes if o.status == "failed"]


def run_study(plan_path: str | Path, out: str | Path, options: StudyOptions,
              say=print) -> StudyResult:
    """The whole study: data once, every job (options.executor: here, --jobs K processes, or
    SLURM), then the plan's robustness step, Grad-CAM of the best run and the report (unless options turn them off, a
    --shard trains, or other processes still train jobs of the plan: the last one writes
    them). Under torchrun every job trains on all processes; rank 0 alone writes."""
    plan = study_plan(plan_path, options)
    check_robustness(plan)  # before any training: a step that could not run fails now
    with torch_threads(plan.threads):
        study = tune_study(prepare_study(plan, out, options, say))
        robustness = (functools.partial(robustness_step, study)
                      if plan.robustness is not None and finishes(study) else None)
        finish = functools.partial(finish_study, study.folder, plan, study.state,
                                   gradcam=study.options.gradcam, report=study.options.report,
                                   mlflow=study.options.mlflow, pdf=study.options.pdf,
                                   robustness=robustness)
        outcomes = train_study(study, finish)
        if outcomes is None:  # --no-wait: a job after the SLURM array finishes the study
            return StudyResult(study.folder, [], submitted=True)
        return finish(study.todo, outcomes, say=study.say)


def finish_study(study: Path, plan: Plan, state: StudyState, todo: list[Job],
                 outcomes: list[Outcome], *, gradcam: bool, report: bool,
                 mlflow: str | None = None, pdf: bool = False, robustness=None,
                 say=print) -> StudyResult:
    """After the training: the robustness step (`robustness(say)`, resnorm.robustness),
    Grad-CAM, the report (`pdf`: report.pdf too) and the MLflow export (`mlflow`: its URI, ""
    for the default), unless other processes still train jobs of the plan (the last one to
    finish does them). Also what the job after a SLURM array runs (`--no-wait`)."""
    result = StudyResult(study, outcomes)
    if (gradcam or report or mlflow is not None or robustness) and held_elsewhere(todo, say):
        gradcam, report, mlflow, robustness = False, False, None, None
    if robustness is not None:
        robustness(say=say)
    if gradcam and not gradcam_step(study, plan, state, say):
        result.gradcam_error = state.data["gradcam_error"]
    if report:
        report_step(study, pdf, say)
    if mlflow is not None:
        from resnorm.export.mlflow import export_study

        say("\n".join(export_study(study, mlflow or None).lines()))
    return result


def report_step(study: Path, pdf: bool, say) -> None:
    """The report (HTML, Markdown; with `pdf` the PDF too). A PDF that cannot be made (no
    WeasyPrint or Pango) is one line saying what to install: the HTML is written anyway."""
    from resnorm.report import write_report
    from resnorm.report.pdf import PdfUnavailable

    try:
        html_path, _ = write_report(study, pdf=pdf)
    except PdfUnavailable as exc:
        say(f"report: {StudyDir(study).report_html}\nreport: {exc}")
        return
    say(f"report: {html_path}" + (f"\n        {StudyDir(study).report_pdf}" if pdf else ""))


def gradcam_step(study: Path, plan: Plan, state: StudyState, say) -> bool:
    """Grad-CAM of the best run. A failure is printed with its traceback and kept in
    study.json, and the report is still written; the study then exits 1. Returns success."""
    from resnorm.gradcam import format_summary, study_gradcam

    try:
        summary = study_gradcam(study, **plan.gradcam)
    except UsageError as exc:  # e.g. no finished run: nothing to explain, not an error
        say(f"gradcam: skipped: {exc}")
        state.set("gradcam_error", None)
        return True
    except Exception as exc:  # noqa: BLE001 - reported in full, reflected in the exit code
        traceback.print_exc()
        state.set("gradcam_error", f"{type(exc).__name__}: {exc}".splitlines()[0])
        return False
    state.set("gradcam_error", None)
    say(format_summary(summary, StudyDir(study).gradcam))
    return True


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """`resnorm study`'s flags (resnorm.study.cli)."""
    study_cli.configure_parser(parser)


def run_cli(args: argparse.Namespace) -> int:
    study_cli.exit_on_sigterm()
    result = run_study(args.plan, args.out, study_cli.study_options(args))
    return study_cli.exit_status(result, args.executor)
