"""The study report: one self-contained HTML page (images embedded) and a Markdown twin.

`resnorm report STUDY` reads whatever the study folder holds — finished runs, their curves,
the Grad-CAM summary — and writes STUDY/report.html and STUDY/report.md (with --pdf also
STUDY/report.pdf, to hand in). Runs that are not finished are listed, never silently left
out.

The primary family's error rates are measured by simulating the study's own design
(`--calibration-studies N`, default $RESNORM_CALIBRATION_STUDIES or 800: about 10 s); the
result is cached in summary.json, so rendering again costs nothing.

example:
  resnorm report studies/demo
  resnorm report studies/demo --pdf
  resnorm report studies/demo --calibration-studies 4000   # finer rates, about a minute
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from resnorm.report.build import write_report
from resnorm.report.pdf import PdfUnavailable
from resnorm.studydir import StudyDir

__all__ = ["configure_parser", "run_cli"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("examples:\n"
                     "  resnorm report studies/demo         # writes studies/demo/report.html, "
                     "report.md\n"
                     "  resnorm report studies/demo --pdf   # and report.pdf (A4, to hand in)\n"
                     "  resnorm report studies/demo --calibration-studies 4000")
    parser.add_argument("study", type=Path, help="the study folder (resnorm study --out)")
    parser.add_argument("--pdf", action="store_true",
                        help="also write STUDY/report.pdf: A4, the answer sheet on page 1, "
                        "contents with links, vector figures (needs WeasyPrint and Pango: "
                        "pip install 'resnorm[pdf]')")
    parser.add_argument("--calibration-studies", type=int, default=None, metavar="N",
                        help="simulated studies of this design behind the family's stated "
                        "error rates (default $RESNORM_CALIBRATION_STUDIES or 800; 0: none)")


def run_cli(args: argparse.Namespace) -> int:
    try:
        html_path, md_path = write_report(args.study, pdf=args.pdf,
                                          calibration_studies=args.calibration_studies)
    except PdfUnavailable as exc:  # the HTML and Markdown are written
        folder = StudyDir(args.study)
        print(f"report: {folder.report_html}\n        {folder.report_md}")
        print(f"resnorm report: {exc}", file=sys.stderr)
        return 1
    print(f"report: {html_path}\n        {md_path}")
    if args.pdf:
        print(f"        {StudyDir(args.study).report_pdf}")
    return 0
