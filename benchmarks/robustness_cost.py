"""What the robustness step costs beside the training it follows, measured side by side.

One process runs a study plan the way `resnorm study` does (resnorm.study.runner:
prepare_study, tune_study, train_study; then resnorm.robustness.step.study_step, the
pipeline's robustness step) and times the two phases on the same machine, in the same
minutes: the training (every (run, seed), through the study's executor, --jobs K) and the
robustness step (the corrupted set made, or found in the cache, then one evaluation job per
(run, seed) through the same executor). It prints both wall times and their ratio; the issue's
bound is 20 %. `--fresh-set` deletes the dataset's corrupted set first, so that making it is
counted (a second study on the same data finds it cached). Grad-CAM and the report are not run.

    python benchmarks/robustness_cost.py --plan configs/demo.yaml --synthetic /tmp/d --jobs 2
    python benchmarks/robustness_cost.py --plan configs/birds-cpu.yaml \
        --data /path/to/Birds_25 --jobs 2 --fresh-set

`--library SIZE` times the corruption library alone instead: each of the 15 corruptions on
`--images` random SIZE x SIZE images at severities 1, 3, 5, in this process (glass blur's
first call compiles its numba loop: counted, once).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

LIMIT = 0.20


def library_cost(size: int, images: int) -> int:
    """Milliseconds per image of each corruption at `size` px (severities 1, 3, 5)."""
    import numpy as np

    from resnorm.robustness.corruptions import CORRUPTIONS, corrupt_image

    x = (np.random.default_rng(0).random((images, 3, size, size)) * 255).astype(np.uint8)
    total = 0.0
    for name in CORRUPTIONS:
        started = time.perf_counter()
        for severity in (1, 3, 5):
            for i in range(images):
                corrupt_image(x[i], name, severity, i)
        seconds = time.perf_counter() - started
        total += seconds
        print(f"{name:18s} {1000 * seconds / (3 * images):8.2f} ms per image")
    print(f"all 15 x 3 severities on {images} images of {size} px: {total:.1f} s")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", type=int, metavar="SIZE",
                        help="time the corruption library alone at SIZE px")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--plan")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data")
    source.add_argument("--synthetic")
    parser.add_argument("--out", help="the study folder (default: a fresh temporary one)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--fresh-set", action="store_true",
                        help="delete the dataset's corrupted set first: its making is timed")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.library:
        return library_cost(args.library, args.images)
    if not args.plan or not (args.data or args.synthetic):
        parser.error("--plan and one of --data / --synthetic (or --library SIZE)")

    from resnorm.robustness.results import read_step
    from resnorm.robustness.step import study_step
    from resnorm.study.plan.options import StudyOptions
    from resnorm.study.runner import (prepare_study, study_plan, torch_threads, train_study,
                                      tune_study)

    out = Path(args.out or tempfile.mkdtemp(prefix="robustness-cost-")) / "study"
    options = StudyOptions(data=args.data, synthetic=args.synthetic, jobs=args.jobs,
                           seeds=args.seeds, progress=False, gradcam=False, report=False)
    plan = study_plan(args.plan, options)
    if plan.robustness is None:
        print(f"{args.plan} has no robustness: section", file=sys.stderr)
        return 2
    quiet = lambda line: None  # noqa: E731 - the phases' lines are not the benchmark's
    with torch_threads(plan.threads):
        study = tune_study(prepare_study(plan, out, options, quiet))
        if args.fresh_set:
            _forget_sets(study)
        started = time.perf_counter()
        train_study(study)
        trained = time.perf_counter()
        study_step(study, quiet)
        done = time.perf_counter()
    print(f"plan {args.plan}: {len(study.jobs)} (run, seed) jobs, --jobs {args.jobs}")
    _print_ratio(trained - started, done - trained, read_step(out))
    return 0


def _print_ratio(training: float, robustness: float, step: dict) -> None:
    print(f"training            {training:8.1f} s")
    print(f"robustness step     {robustness:8.1f} s   (corrupted set "
          f"{step['seconds']['set']:.1f} s, evaluations {step['seconds']['evaluation']:.1f} s; "
          f"{len(step['settings']['corruptions'])} corruptions x "
          f"{len(step['settings']['severities'])} severit(y/ies) x {step['images']} images)")
    ratio = robustness / training
    print(f"ratio               {100 * ratio:8.1f} %   (bound {100 * LIMIT:.0f} %: "
          f"{'within' if ratio <= LIMIT else 'OVER'})")


def _forget_sets(study) -> None:
    """Delete the corrupted sets of the study's caches (their making is then timed)."""
    from resnorm.robustness.corrupted import CORRUPTED_DIR

    for cache in study.caches.values():
        shutil.rmtree(Path(cache) / CORRUPTED_DIR, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
