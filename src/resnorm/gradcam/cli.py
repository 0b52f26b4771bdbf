"""Grad-CAM galleries: where a trained ResNet looks, for right and wrong validation images.

The `resnorm gradcam` command: galleries and pointing-game scores of a run, or of a study's
best run (pointing-game scores of all its finished runs).

example:
  resnorm gradcam studies/demo                 # best run of the study by val accuracy
  resnorm gradcam --run studies/demo/runs/gn --classes "Cattle Egret,Indian Peacock"
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from resnorm.errors import UsageError
from resnorm.gradcam.run import run_gradcam, study_gradcam
from resnorm.gradcam.select import PER_CLASS
from resnorm.rundir import BEST_FILE, RunDir
from resnorm.studydir import StudyDir


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("examples:\n"
                     "  resnorm gradcam studies/demo\n"
                     "  resnorm gradcam --run studies/demo/runs/gn --out cams "
                     "--classes \"Cattle Egret,Indian Peacock\"")
    parser.add_argument("study", nargs="?", type=Path,
                        help="study folder: uses its best run by val accuracy")
    parser.add_argument("--run", type=Path,
                        help="a run folder to explain instead of a study's best run")
    parser.add_argument("--out", type=Path,
                        help="output folder (default STUDY/gradcam or RUN/gradcam)")
    parser.add_argument("--classes",
                        help="comma-separated class names (default: the assignment's 7)")
    parser.add_argument("--per-class", type=int, default=PER_CLASS,
                        help=f"correct and incorrect images per class (default {PER_CLASS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image choice (default 0)")
    parser.add_argument("--device", default="auto", help="auto|cpu|cuda|mps (default auto)")


def run_cli(args: argparse.Namespace) -> int:
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    if args.run is not None:
        if not RunDir(args.run).has(BEST_FILE):
            raise UsageError(f"{args.run} is not a trained run folder (no best.pt)")
        out = args.out or RunDir(args.run).gradcam
        summary = run_gradcam(args.run, out, classes=classes, per_class=args.per_class,
                              seed=args.seed, device=args.device)
    elif args.study is not None:
        out = args.out or StudyDir(args.study).gradcam
        summary = study_gradcam(args.study, out, classes=classes, per_class=args.per_class,
                                seed=args.seed, device=args.device)
    else:
        raise UsageError("give a study folder or --run RUNDIR")
    print(format_summary(summary, out))
    return 0


def format_summary(summary: dict, out: Path) -> str:
    lines = [f"Grad-CAM of run {summary['run']} -> {out}"]
    if summary["note"]:
        lines.append(f"  note: {summary['note']}")
    for c in summary["classes"]:
        extra = f"  ({c['note']})" if c["note"] else ""
        lines.append(f"  {c['name']}: {len(c['correct'])} correct, "
                     f"{len(c['incorrect'])} incorrect{extra}")
    for name, score in (summary["pointing"] or {}).items():
        lines.append(f"  pointing game {name}: {score['hits']}/{score['total']} "
                     f"= {score['score']:.2f}")
    f, c = summary.get("faithfulness") or {}, summary.get("corners") or {}
    if f.get("images"):
        gain = np.subtract(f["road_gradcam"], f["road_random"])
        lines.append(f"  faithfulness: ROAD Grad-CAM {np.mean(f['road_gradcam']):+.3f}, random "
                     f"{np.mean(f['road_random']):+.3f} (gain {gain.mean():+.3f} over "
                     f"{f['images']} images)")
    if c.get("cam_share"):
        lines.append(f"  black corners: {c['images_with_corners']} of {c['total']} val images; "
                     f"map mass on them {np.mean(c['cam_share']):.1%} (their area "
                     f"{np.mean(c['area_share']):.1%}; the same region of plain images "
                     f"{np.mean([v for v in c['control_share'] if v is not None]):.1%})")
    return "\n".join(lines)
