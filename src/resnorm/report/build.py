"""Assembling the report: read the study folder, build every section in order, write
STUDY/report.html and STUDY/report.md (and STUDY/report.pdf on request)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from resnorm import __version__
from resnorm.errors import UsageError
from resnorm.fileio import atomic_write_text, read_yaml
from resnorm.report.answers import section_answers
from resnorm.report.comparisons import section_batch, section_comparisons, section_sanity
from resnorm.report.document import Bullets, Report, Section
from resnorm.report.figures import vector_figures
from resnorm.report.inspection import section_gates, section_gradcam
from resnorm.report.observations import Facts, observations
from resnorm.report.pdf import write_pdf
from resnorm.report.render import render_html, render_markdown
from resnorm.report.robustness import section_robustness
from resnorm.report.roles import data_manifest, resolved_runs, study_roles
from resnorm.robustness.summary import robustness_summary
from resnorm.report.sections import section_curves, section_results, section_setup
from resnorm.report.summary import study_summary, write_summary
from resnorm.study.plan.manifest import Design, read_manifest
from resnorm.report.tuning import section_tuning
from resnorm.study.plan.parse import DEFAULT_TOLERANCE
from resnorm.study.execution.records import collect_runs, read_state
from resnorm.studydir import StudyDir


def _plan_info(study: StudyDir) -> dict:
    """The study's plan copy with the lr rule in words (as the study stated it)."""
    plan = read_yaml(study.plan)
    state = read_state(study)
    if state.get("lr_rule_text"):
        plan["lr_rule_text"] = state["lr_rule_text"]
    return plan


def study_design(study: StudyDir) -> Design:
    """The design the study declared in its manifest; a folder of runs without a plan, an
    empty one (results and curves, no comparisons). A study written before manifests never
    gets here: collect_runs refuses it (StudyDir.check_current)."""
    manifest = read_manifest(study)
    return manifest.design if manifest is not None else Design()


def _robustness(design: Design) -> dict:
    """The design's robustness question (derived as at plan time for an older manifest)."""
    from resnorm.study.plan.design import robustness_question

    return design.robustness or robustness_question(design)


def _previous_summary(study: StudyDir) -> dict | None:
    """The summary.json a previous report wrote (its calibration is reused when unchanged)."""
    try:
        return json.loads(study.summary.read_text())
    except (OSError, ValueError):
        return None


def build_report(study: str | os.PathLike, calibration_studies: int | None = None) -> Report:
    """Read a study folder; build the report's document (plots are written to report_assets/)
    with the study's statistics in `report.summary` (the summary.json contract).
    `calibration_studies`: the studies to simulate for the family's error rates
    (`report.calibration`; default $RESNORM_CALIBRATION_STUDIES, else its default)."""
    study = StudyDir(study)
    if not study.dir.is_dir():
        raise UsageError(f"study folder {study} does not exist")
    runs = collect_runs(study)
    if not runs:
        raise UsageError(f"{study} holds no runs (expected {study.run('<name>')}/ or "
                         f"{study.plan})")
    assets = study.report_assets
    assets.mkdir(exist_ok=True)
    plan = _plan_info(study)
    tol = {**DEFAULT_TOLERANCE, **(plan.get("sanity_tolerance") or {})}
    roles = study_roles(study_design(study), runs, resolved_runs(study, runs))
    summary = study_summary(runs, plan, roles, calibration_studies, _previous_summary(study))
    summary["robustness"] = robustness_summary(study, [(r.name, [t.seed for t in r.trials])
                                                       for r in runs], _robustness(roles.design))

    sanity_section, sanity = section_sanity(roles, tol, assets, summary)
    gates_section, gates = section_gates(runs, assets)
    gradcam_section, gradcam = section_gradcam(study, runs, summary)
    facts = Facts(runs, roles, summary, sanity, tol, gates, gradcam)
    sections = [
        section_answers(facts),
        section_setup(runs, data_manifest(runs), plan, summary, roles),
        section_results(runs, summary, roles),
        section_tuning(study, summary, assets),
        section_comparisons(summary, assets),
        section_curves(runs, roles, assets),
        sanity_section,
        section_batch(roles, plan, assets, summary),
        section_robustness(summary["robustness"], roles.design.norms, roles.design.variants,
                           assets),
        gates_section,
        gradcam_section,
        Section("Observations", [Bullets(observations(facts))]),
    ]
    sections = [s for s in sections if s is not None]  # (no tuning or robustness: no section)
    finished = sum(r.final is not None for r in runs)
    subtitle = (f"{finished} of {len(runs)} runs finished · written "
                f"{time.strftime('%Y-%m-%d %H:%M')} by resnorm {__version__}")
    return Report(f"Normalization study: {study.dir.resolve().name}", subtitle, sections,
                  study.dir, summary)


def write_report(study: str | os.PathLike, pdf: bool = False,
                 calibration_studies: int | None = None) -> tuple[Path, Path]:
    """Write STUDY/summary.json, STUDY/report.html and STUDY/report.md (and with `pdf`,
    STUDY/report.pdf, its figures as vectors); return the HTML and Markdown paths. Without
    WeasyPrint or its system libraries the HTML and Markdown are written, then
    report.pdf.PdfUnavailable says what to install. `calibration_studies`: as for
    `build_report`."""
    with vector_figures(pdf):
        report = build_report(study, calibration_studies)
    folder = StudyDir(study)
    write_summary(folder.dir, report.summary)
    atomic_write_text(folder.report_html, render_html(report))
    atomic_write_text(folder.report_md, render_markdown(report))
    if pdf:
        write_pdf(report, folder.report_pdf)
    return folder.report_html, folder.report_md
