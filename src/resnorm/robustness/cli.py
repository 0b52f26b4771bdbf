"""Score a study's trained runs on corrupted held-out images (the robustness step on its own).

example:
  resnorm robustness studies/demo --corruptions gaussian_noise,fog --severities 3 --jobs 2
"""
from __future__ import annotations

import argparse
from pathlib import Path

from resnorm.errors import UsageError
from resnorm.robustness.corruptions import CORRUPTIONS
from resnorm.robustness.step import robustness_step
from resnorm.study.plan.robustness_settings import (RobustnessSettings, parse_corruptions,
                                                    parse_severities)
from resnorm.studydir import StudyDir

__all__ = ["configure_parser", "run_cli"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "examples:\n"
        "  resnorm robustness studies/demo\n"
        "  resnorm robustness studies/birds --corruptions all --severities 1,3,5 --images 500 "
        "--jobs 2\n\n"
        "Scores every finished (run, seed) of the study (its best checkpoint) on corrupted\n"
        "copies of the held-out split (test where there is one, else val): the 15 corruptions\n"
        "of Hendrycks & Dietterich (ImageNet-C), as trained and, for norms with running\n"
        "statistics, with BN's statistics re-estimated on the corrupted val images. Settings:\n"
        "the plan's `robustness:` section, the flags over it. Then rewrites the report\n"
        "(its Robustness section, summary.json's `robustness`). Corruptions: "
        + ", ".join(CORRUPTIONS) + ". Needs pip install 'resnorm[robustness]'.")
    parser.add_argument("study", type=Path, help="study folder (with runs/ and plan.yaml)")
    parser.add_argument("--corruptions", help="'all' or names separated by commas")
    parser.add_argument("--severities", help="severities 1-5 separated by commas (1,3,5)")
    parser.add_argument("--images", type=int, help="held-out images per corruption (500)")
    parser.add_argument("--no-adapt", action="store_true", help="skip BN adaptation")
    parser.add_argument("--seed", type=int, help="which images and the corruptions' noise")
    parser.add_argument("--jobs", type=int, default=1, help="evaluations at once (processes)")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local",
                        help="where the evaluations run (slurm: one array task each)")
    parser.add_argument("--no-report", action="store_true", help="do not rewrite the report")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def settings_from(args: argparse.Namespace, plan) -> RobustnessSettings:
    """The plan's section (or the defaults) with the flags over it."""
    out = (plan.robustness if plan is not None and plan.robustness is not None
           else RobustnessSettings())
    if args.corruptions is not None:
        out.corruptions = parse_corruptions(args.corruptions, "--corruptions")
    if args.severities is not None:
        out.severities = parse_severities(args.severities, "--severities")
    if args.images is not None:
        if args.images < 1:
            raise UsageError(f"--images must be a positive integer, got {args.images}")
        out.images = args.images
    if args.seed is not None:
        out.seed = args.seed
    if args.no_adapt:
        out.adapt = False
    return out


def _executor(args: argparse.Namespace, study: StudyDir, plan):
    from resnorm.study.execution.executors import make_executor
    from resnorm.study.execution.slurm import slurm_settings
    from resnorm.study.execution.records import read_state
    from resnorm.study.execution.state import OutcomeRecorder, StudyState

    if args.jobs < 1:
        raise UsageError(f"--jobs must be a positive integer, got {args.jobs}")
    state = (StudyState(study.dir, plan, str(read_state(study.dir).get("data", "")))
             if plan is not None else None)
    recorder = OutcomeRecorder(state, "robustness")
    threads = plan.threads if plan is not None else None
    if args.executor == "slurm":
        return make_executor("slurm", threads=threads, recorder=recorder,
                             slurm_settings=slurm_settings(plan.slurm if plan else {}, {}),
                             folder=study.robustness_slurm)
    return make_executor("local", jobs=args.jobs, threads=threads, progress=not args.quiet,
                         recorder=recorder)


def run_cli(args: argparse.Namespace) -> int:
    from resnorm.study.plan.parse import load_plan

    study = StudyDir(args.study)
    if not study.runs.is_dir():
        raise UsageError(f"{study.dir} is not a study folder (no runs/)")
    from resnorm.study.runner import torch_threads

    plan = load_plan(study.plan) if study.plan.is_file() else None
    settings = settings_from(args, plan)
    with torch_threads(plan.threads if plan is not None else None):
        outcomes = robustness_step(study.dir, settings, _executor(args, study, plan).run)
    if not args.no_report:
        from resnorm.report import write_report

        html, _ = write_report(study.dir)
        print(f"report: {html}")
    return 1 if any(o.status == "failed" for o in outcomes) else 0
