"""Whole runs at the demo's scale: each from-scratch norm's run time / PyTorch BN's, one process.

What a user of `make demo` sees in the report's "Wall time" column: one process trains
torch_bn, then bn, in, bin, ln, gn, then torch_bn again (configs/demo.yaml's scale: the
synthetic dataset with 10 species, 60 train + 15 val images each, prepared at 32x32, ResNet
n=1, batch 32, 8 epochs, CPU, one torch thread), with a fresh, empty inductor cache
(TORCHINDUCTOR_CACHE_DIR, "cold": as on a new machine). Each ratio divides a run's wall time
(`resnorm.train.train`, from the call to its return) by the mean of the two torch_bn runs
around it; `--rounds K` repeats the sequence (ABBA: every other round reversed) and reports
the median ratio. A second process with the same, now filled, cache gives the "warm" figures
with `--warm`.

    python benchmarks/study_speed.py                   # cold cache, 1 round
    python benchmarks/study_speed.py --rounds 3 --warm # + a second process on the warm cache
    python benchmarks/study_speed.py --legacy          # before plan_kernels: compile after 500 calls

Setup (the synthetic images, the 32x32 cache) is made once, before any timing, in --work.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = ("bn", "in", "bin", "ln", "gn")


def _setup(work: Path) -> Path:
    from resnorm.data import make_synthetic, prepare
    root = make_synthetic(work / "synth", num_classes=10, train_per_class=60, val_per_class=15,
                          seed=0)
    return prepare(root, size=32, out=work / "cache32", progress=False)


def _child(args: argparse.Namespace) -> int:
    """One process: the timed sequence of runs; prints one JSON line of wall times."""
    import torch
    torch.set_num_threads(args.threads)
    from resnorm import norm_functions
    from resnorm.norm_functions import kernels
    from resnorm.train import train
    if args.legacy:  # the rule before 2026-12-02: no plan, compile after 500 large calls
        norm_functions.plan_kernels = lambda *a, **k: None  # noqa: E731
        import resnorm.train.run as run_module
        run_module.plan_kernels = norm_functions.plan_kernels
        kernels.COMPILE_AFTER_CALLS = 500
    cache = Path(args.data)
    times: dict[str, list[float]] = {}
    order = ["torch_bn", *KINDS]
    for r in range(args.rounds):
        seq = order if r % 2 == 0 else order[::-1]
        for kind in [*seq, seq[0]] if r == 0 else seq:
            out = Path(args.runs) / f"r{r}-{kind}-{len(times.get(kind, []))}"
            cfg = dict(data=str(cache), size=32, out=str(out), norm=kind, n=1, batch_size=32,
                       epochs=args.epochs, device="cpu", seed=0)
            start = time.perf_counter()
            train(cfg, resume="restart", progress=False)
            times.setdefault(kind, []).append(time.perf_counter() - start)
            print(f"# {args.label} round {r} {kind}: {times[kind][-1]:.2f} s", file=sys.stderr,
                  flush=True)
    print(json.dumps({"order": order, "times": times}))
    return 0


def _ratios(times: dict[str, list[float]], rounds: int) -> dict[str, float]:
    """Median over rounds of run / mean(torch_bn runs of that round). Round 0 has a torch_bn
    run at each end; later rounds share their one torch_bn run (at the turn of the order)."""
    base = times["torch_bn"]
    per_round = [(base[0] + base[1]) / 2] + base[2:]
    return {k: statistics.median(times[k][r] / per_round[min(r, len(per_round) - 1)]
                                 for r in range(rounds)) for k in KINDS}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warm", action="store_true", help="also a second process, warm cache")
    p.add_argument("--legacy", action="store_true",
                   help="no kernel plan: compile after 500 large calls (the old rule)")
    p.add_argument("--work", default=None, help="folder for data and runs (default: a temp dir)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--runs", help=argparse.SUPPRESS)
    p.add_argument("--label", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args)

    work = Path(args.work or tempfile.mkdtemp(prefix="study_speed-"))
    work.mkdir(parents=True, exist_ok=True)
    data = _setup(work)
    inductor = Path(tempfile.mkdtemp(prefix="inductor-", dir=work))  # empty: a cold cache
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(inductor)}
    env.pop("RESNORM_NORM_KERNELS", None)  # the product's default ("auto")
    results = {}
    for label in ["cold"] + (["warm"] if args.warm else []):
        cmd = [sys.executable, __file__, "--child", "--data", str(data), "--label", label,
               "--runs", str(work / f"runs-{label}"), "--rounds", str(args.rounds),
               "--epochs", str(args.epochs), "--threads", str(args.threads)]
        if args.legacy:
            cmd.append("--legacy")
        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
        results[label] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"# study_speed: demo scale (32x32, n=1, batch 32, {args.epochs} epochs, "
          f"{args.threads} thread(s)), {args.rounds} round(s), "
          f"{'legacy (compile after 500 calls)' if args.legacy else 'auto kernels with plan'}")
    print("| inductor cache | torch_bn s | " + " | ".join(f"{k} s" for k in KINDS) + " | "
          + " | ".join(f"{k}/torch_bn" for k in KINDS) + " |")
    print("|" + "---|" * (2 + 2 * len(KINDS)))
    for label, res in results.items():
        times = res["times"]
        ratios = _ratios(times, args.rounds)
        print(f"| {label} | {statistics.median(times['torch_bn']):.2f} | "
              + " | ".join(f"{statistics.median(times[k]):.2f}" for k in KINDS) + " | "
              + " | ".join(f"**{ratios[k]:.2f}**" for k in KINDS) + " |")
    return 0


if __name__ == "__main__":
    try:
        import resnorm  # noqa: F401
    except ImportError:  # run from a checkout without `pip install -e .`
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    raise SystemExit(main())
