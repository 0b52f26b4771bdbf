"""The study report: one self-contained HTML page (images embedded) and a Markdown twin.

`resnorm report STUDY` reads whatever the study folder holds — finished runs, their curves,
the Grad-CAM summary — and writes STUDY/report.html and STUDY/report.md. Runs that are not
finished are listed, never silently left out.

example:
  resnorm report studies/demo
"""
from __future__ import annotations

import argparse
from pathlib import Path

from resnorm.report.build import write_report

__all__ = ["configure_parser", "run_cli"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("example:\n"
                     "  resnorm report studies/demo   # writes studies/demo/report.html, report.md")
    parser.add_argument("study", type=Path, help="the study folder (resnorm study --out)")


def run_cli(args: argparse.Namespace) -> int:
    html_path, md_path = write_report(args.study)
    print(f"report: {html_path}\n        {md_path}")
    return 0
