"""Grad-CAM's step of a study at the demo's scale, alone and with faithfulness, side by side.

The faithfulness scores (ROAD and the masked-image confidence, each against a random map;
resnorm.gradcam.faithfulness) and the black-corner mass run inside the study's Grad-CAM step;
they must not more than double that step's share of `make demo`. This script builds a
demo-sized study (configs/demo.yaml's data: synthetic, 10 species, 60 train + 15 val images
each, 32x32, ResNet n=1, 8 epochs, one torch thread; one seed of each of the seven norm
variants, whose pointing game the step scores as the demo's does), then times `study_gradcam`
on it with faithful=False and faithful=True, alternating (ABBA...), --rounds times, and prints
each median and the ratio, in wall time and in this process's CPU time (one thread: the CPU
time is the work, whatever else shares the machine). `--all` times galleries of every run
(the plan's `gradcam: runs: all`).

    python benchmarks/gradcam_faithfulness.py                # 3 rounds, best run's galleries
    python benchmarks/gradcam_faithfulness.py --all

Setup (data, cache, training) is made once, before any timing, in --work.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml

DEMO = dict(size=32, n=1, batch_size=32, epochs=8, device="cpu")


def _setup(work: Path, runs: list[str]) -> Path:
    """A study folder of trained runs, one seed each (no plan: the runs alone)."""
    from resnorm.data import make_synthetic, prepare
    from resnorm.rundir import RunDir
    from resnorm.studydir import StudyDir
    from resnorm.train import train

    plan = yaml.safe_load(Path(__file__).resolve().parents[1].joinpath("configs", "demo.yaml")
                          .read_text())
    root = make_synthetic(work / "synth", progress=False, **plan["synthetic"])
    cache = prepare(root, size=32, out=work / "cache32", progress=False)
    study = StudyDir(work / "study")
    for norm in runs:
        out = study.trial(norm, 0)
        if not RunDir(out).finished:
            train(dict(data=str(cache), out=str(out), norm=norm, **DEMO), progress=False,
                  epoch_lines=False, data_note=False)
    return study.dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, help="folder for data, cache and study (default: temp)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", default="torch_bn,bn,in,bin,ln,gn,nn",
                    help="variants trained (one seed each)")
    ap.add_argument("--all", action="store_true", help="galleries of every run, not the best")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(1)
    from resnorm.gradcam.run import study_gradcam

    work = args.work or Path(tempfile.mkdtemp(prefix="gradcam-bench-"))
    study = _setup(work, args.runs.split(","))
    runs = "all" if args.all else "best"
    times = {(clock, f): [] for clock in ("wall", "cpu") for f in (False, True)}
    for r in range(args.rounds):
        for faithful in ((False, True) if r % 2 == 0 else (True, False)):
            wall, cpu = time.perf_counter(), time.process_time()
            study_gradcam(study, work / f"cams-{faithful}", per_class=5, device="cpu",
                          runs=runs, faithful=faithful)
            times["wall", faithful].append(time.perf_counter() - wall)
            times["cpu", faithful].append(time.process_time() - cpu)
    print(f"study: {study} ({args.runs}, galleries of {runs} run(s)), {args.rounds} rounds")
    for clock in ("wall", "cpu"):
        alone, both = (statistics.median(times[clock, f]) for f in (False, True))
        print(f"{clock:4s} Grad-CAM alone {alone:6.2f} s {[round(t, 1) for t in times[clock, False]]}"
              f"; with faithfulness {both:6.2f} s {[round(t, 1) for t in times[clock, True]]}"
              f"; ratio {both / alone:.2f}")


if __name__ == "__main__":
    main()
