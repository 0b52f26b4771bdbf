"""Export a study to MLflow: one experiment, a run per plan run, a nested run per seed.

example:
  resnorm export studies/demo                        # into studies/demo/mlflow.db
  mlflow ui --backend-store-uri sqlite:///studies/demo/mlflow.db
"""
from __future__ import annotations

import argparse
from pathlib import Path

from resnorm.export.mlflow import default_uri, export_study

__all__ = ["configure_parser", "run_cli"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "examples:\n"
        "  resnorm export studies/demo\n"
        "  resnorm export studies/birds --mlflow sqlite:///$HOME/mlruns.db --experiment birds\n"
        "  mlflow ui --backend-store-uri sqlite:///studies/demo/mlflow.db\n\n"
        "Each (run, seed) becomes an MLflow run nested under its plan run, with the resolved\n"
        "config as params, every epoch's metrics (step = epoch), the best checkpoint's\n"
        "train/val/test scores (final_<split>_<metric>), curves, confusion matrices and the\n"
        "Grad-CAM gallery; a run labelled 'study' holds the report. Exporting again skips\n"
        "what is unchanged and replaces what changed: no duplicates. A study still training\n"
        "exports what is finished and says what is not. Needs mlflow: pip install\n"
        "'resnorm[mlflow]'.")
    parser.add_argument("study", type=Path, help="study folder")
    parser.add_argument("--mlflow", metavar="URI", help="MLflow tracking URI (default: "
                        "sqlite:///STUDY/mlflow.db; a server's http://host:5000 works too)")
    parser.add_argument("--experiment", help="experiment name (default: the study folder's "
                        "name)")


def run_cli(args: argparse.Namespace) -> int:
    result = export_study(args.study, args.mlflow or default_uri(args.study), args.experiment)
    for line in result.lines():
        print(line)
    if result.uri.startswith("sqlite:"):
        print(f"view it: mlflow ui --backend-store-uri {result.uri}")
    return 0
