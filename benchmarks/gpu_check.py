"""What a lent GPU machine tells us, in one run of a few minutes (driven by gpu_check.sh).

Prints, and writes to --out:
  1. the machine, torch and CUDA versions;
  2. per norm variant, training images/s of ResNet(n=2) at 256x256 on synthetic tensors
     already on the GPU (forward, cross-entropy, backward, SGD step; bf16 autocast and
     channels_last, as `resnorm train` runs on CUDA), at batch 8, 32 and 128, eager and with
     torch.compile (as many variants as the time allows, batch 32 first); peak GPU memory;
     evaluation images/s (forward only, batch 256);
  3. benchmarks/norm_speed.py on CUDA (ours / PyTorch's built-in, interleaved);
  5. the wall time of configs/assignment.yaml extrapolated from the measured images/s.

Every measurement has a time budget and the whole run a deadline (--budget seconds), so it
cannot overrun: what does not fit is listed as skipped. The data pipeline is not measured
(synthetic tensors), so real epochs are somewhat slower.

    PYTHONPATH=src python benchmarks/gpu_check.py            # on the GPU machine
    PYTHONPATH=src python benchmarks/gpu_check.py --smoke    # tiny sizes, any device, seconds
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_bench import VARIANTS, Bench  # noqa: E402  (benchmarks/ is on the path now)

# compiled runs, most wanted first: the baseline, our BN, and the batch-size study's GN
COMPILE_ORDER = ("torch_bn", "bn", "gn", "in", "ln", "bin", "nn")
# the assignment's plan when configs/assignment.yaml cannot be read: (norm, batch) x 12 runs
FALLBACK_PLAN = [("torch_bn", 32), ("bn", 32), ("in", 32), ("bin", 32), ("ln", 32), ("gn", 32),
                 ("nn", 32), ("bn", 8), ("gn", 8), ("bn", 128), ("gn", 128), ("torch_bn", 32)]
TRAIN_IMAGES, VAL_IMAGES, EPOCHS = 30_000, 7_500, 50


class Report:
    """Prints each line at once (a hard timeout keeps what was printed) and to a file."""

    def __init__(self, path: str | None) -> None:
        self.file = open(path, "a", buffering=1) if path else None

    def __call__(self, *parts) -> None:
        line = " ".join(str(p) for p in parts)
        print(line, flush=True)
        if self.file:
            self.file.write(line + "\n")


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes on whatever device there is: checks the script, not speed")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for everything (default 360; smoke 120)")
    p.add_argument("--out", default=None, help="also append the output to this file")
    p.add_argument("--json", default=None, help="write the measurements as JSON here")
    p.add_argument("--size", type=int, default=None, help="image side (default 256; smoke 16)")
    p.add_argument("--batches", default=None, help="comma-separated (default 8,32,128)")
    p.add_argument("--measure-s", type=float, default=None,
                   help="timed seconds per measurement (default 1.0; smoke 0.05)")
    p.add_argument("--compile-variants", default=",".join(COMPILE_ORDER),
                   help=f"variants to compile, in order (default {','.join(COMPILE_ORDER)})")
    args = p.parse_args(argv)
    smoke = args.smoke
    args.budget = args.budget or (120.0 if smoke else 360.0)
    args.size = args.size or (16 if smoke else 256)
    args.batches = [int(b) for b in (args.batches or ("2,4" if smoke else "8,32,128")).split(",")]
    args.measure_s = args.measure_s or (0.05 if smoke else 1.0)
    args.compile_variants = ["bn"] if smoke else [
        v.strip() for v in args.compile_variants.split(",") if v.strip()]
    args.n = 1 if smoke else 2
    args.eval_batch = 8 if smoke else 256
    args.compile_batch = args.batches[min(1, len(args.batches) - 1)]
    return args


def describe_machine(bench: Bench) -> None:
    """1. the machine, and that the package imports; the settings every measurement uses."""
    import torch

    from resnorm import norm_functions
    from resnorm.norm_functions import kernels
    report, device = bench.report, bench.device
    report(f"# gpu_check {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
           f"{' (SMOKE: tiny sizes, numbers mean nothing)' if bench.args.smoke else ''}")
    report(f"python {platform.python_version()}, torch {torch.__version__}, "
           f"cuda {torch.version.cuda}, cudnn {torch.backends.cudnn.version()}")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        report(f"device: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
               f"{props.multi_processor_count} SMs; {os.cpu_count()} CPU cores")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        report(f"device: cpu ({platform.processor() or platform.machine()}), "
               f"{os.cpu_count()} cores")
    for module in ("resnorm.train", "resnorm.data", "resnorm.study"):
        try:
            __import__(module)
            report(f"import {module}: ok")
        except Exception as err:  # the pipeline is not needed here; just say so
            report(f"import {module}: FAILED ({type(err).__name__}: {err})")
    # A training run compiles the norm kernels after its first steps; measure that state.
    kernels.COMPILE_AFTER_CALLS = 0
    # Seven variants compile the same ResNet.forward: allow more than dynamo's default 8
    # versions of it (a reset instead would also drop the compiled norm kernels).
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.accumulated_recompile_limit = 1024
    report(f"setup: ResNet n={bench.args.n}, 25 classes, {bench.args.size}x{bench.args.size}, "
           f"{'bf16 autocast' if bench.amp else 'fp32'}, "
           f"{'channels_last' if bench.memory_format is torch.channels_last else 'NCHW'}, "
           f"SGD momentum 0.9 nesterov wd 5e-4, synthetic data on the device; "
           f"norm kernels: {norm_functions.get_kernel_mode()} (compiled at once)")


class Tee:
    """stdout that also goes to the report's file (norm_speed prints its own lines)."""

    def __init__(self, stdout, file) -> None:
        self.stdout, self.file = stdout, file

    def write(self, text):
        self.stdout.write(text)
        if self.file:
            self.file.write(text)

    def flush(self):
        self.stdout.flush()


def norm_speed_pass(bench: Bench, batch: int) -> None:
    """3. benchmarks/norm_speed.py on the device (ours / PyTorch's built-in, interleaved)."""
    import torch

    args, report = bench.args, bench.report
    report("\n## norm_speed (ours / PyTorch built-in, interleaved)")
    if bench.deadline.left() <= (10 if args.smoke else 100):
        bench.results["skipped"].append("norm_speed")
        report("skipped: not enough time left")
        return
    import norm_speed
    ns_args = ["--device", bench.device.type, "--size", str(args.size),
               "--batch-size", str(batch), "--repeats", "3" if args.smoke else "8",
               "--warmup", "1" if args.smoke else "2", "--inner", "1" if args.smoke else "5",
               "--threads", str(torch.get_num_threads())]
    if bench.fast_path:
        ns_args += ["--channels-last", "--amp", "bf16"]
    report("command: python benchmarks/norm_speed.py " + " ".join(ns_args))
    old_stdout = sys.stdout
    sys.stdout = Tee(old_stdout, report.file)
    try:
        bench.attempt("norm_speed", norm_speed.main, ns_args)
    finally:
        sys.stdout = old_stdout


def throughput_table(bench: Bench) -> None:
    """Training images/s (peak GiB) per variant and batch, eager and compiled; eval images/s."""
    results, batches = bench.results, bench.args.batches
    bench.report(f"\n## Training throughput at {bench.args.size}x{bench.args.size} "
                 "(images/s; peak GiB)")
    bench.report("| variant | " + " | ".join(f"b{b} eager | b{b} compiled" for b in batches)
                 + " | eval img/s |")
    bench.report("|---|" + "---|---|" * len(batches) + "---|")
    for variant in VARIANTS:
        cells = []
        for batch in batches:
            for table in (results["train"], results["compiled"]):
                r = table.get(f"{variant}/{batch}")
                cells.append("-" if r is None else
                             f"{r['images_per_s']:.0f} ({r['peak_gib']:.1f})")
        r = results["eval"].get(variant)
        cells.append("-" if r is None else f"{r['images_per_s']:.0f}")
        bench.report(f"| {variant} | " + " | ".join(cells) + " |")


def throughput(table: dict, norm: str, batch: int) -> tuple[dict | None, str]:
    """The measurement for (norm, batch), else the one at the nearest measured batch."""
    if table.get(f"{norm}/{batch}"):
        return table[f"{norm}/{batch}"], ""
    measured = [int(k.split("/")[1]) for k, v in table.items() if v and k.split("/")[0] == norm]
    if not measured:
        return None, ""
    nearest = min(measured, key=lambda b: abs(b - batch))
    return table[f"{norm}/{nearest}"], f"~b{nearest}"


def run_seconds(results: dict, norm: str, batch: int, epochs: int,
                mode: str) -> tuple[float | None, str]:
    """A run's extrapolated seconds in `mode` (eager | compiled; a compiled run without a
    compiled measurement at eager speed), and a note on what stood in for it."""
    train, note = throughput(results["train" if mode == "eager" else "compiled"], norm, batch)
    if train is None and mode == "compiled":
        train, note = throughput(results["train"], norm, batch)
        note = "eager" + note
    evaluation = results["eval"].get(norm)
    if not train or not evaluation:
        return None, note
    return epochs * (TRAIN_IMAGES / train["images_per_s"]
                     + VAL_IMAGES / evaluation["images_per_s"]), note


def extrapolate_plan(bench: Bench) -> None:
    """5. the assignment's plan: each run's wall time from the measured images/s."""
    report = bench.report
    report("\n## Extrapolated wall time of the assignment plan")
    plan, source = load_plan()
    report(f"plan: {source}; {len(plan)} runs; per epoch {TRAIN_IMAGES} train + {VAL_IMAGES} "
           f"val images (the val pass is counted at the eval throughput, batch "
           f"{bench.args.eval_batch}); early stopping not counted (an upper bound)")
    total, notes = {"eager": 0.0, "compiled": 0.0}, set()
    report("| run | norm | batch | epochs | eager h | compiled h |")
    report("|---|---|---|---|---|---|")
    for name, norm, batch, epochs in plan:
        row = [name, norm, str(batch), str(epochs)]
        for mode in ("eager", "compiled"):
            seconds, note = run_seconds(bench.results, norm, batch, epochs, mode)
            if seconds is None:
                row.append("n/a")
                total[mode] = float("nan")
                continue
            total[mode] += seconds
            row.append(f"{seconds / 3600:.2f}" + (f" ({note})" if note else ""))
            notes.update([note] if note else [])
        report("| " + " | ".join(row) + " |")
    report(f"| **total** | | | | **{total['eager'] / 3600:.2f}** | "
           f"**{total['compiled'] / 3600:.2f}** |")
    if notes:
        report("(eager): no compiled measurement fitted the time, eager throughput used; "
               "(~bK): measured at batch K instead")
    bench.results["plan_hours"] = {k: v / 3600 for k, v in total.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    report, deadline = Report(args.out), Deadline(args.budget)
    import torch

    if not torch.cuda.is_available() and not args.smoke:
        report("gpu_check: no CUDA device; use --smoke to check the script on CPU")
        return 2
    bench = Bench(args, report, deadline)
    describe_machine(bench)
    # 2. eager training at the compile batch (32), every variant; eval throughput. (The order
    # of 2-5 puts what matters most first: if time runs out, the other batches and compiled
    # variants are skipped, and listed.)
    main_batch, other = args.compile_batch, [b for b in args.batches if b != args.compile_batch]
    report("\n## Measurements (training: forward + backward + SGD step; eval: forward only)")
    bench.eager_pass([main_batch], floor=30)
    norm_speed_pass(bench, main_batch)
    # 4. torch.compile at batch 32 (keeping ~45 s for the eager runs at the other batches),
    # then eager at the other batches, then compiled at the other batches while time allows
    report("")
    compile_floor = 15 if args.smoke else 75  # a compile + measurement takes up to ~60 s
    bench.compiled_pass([main_batch], floor=compile_floor + (5 if args.smoke else 45))
    bench.eager_pass(other, floor=10 if args.smoke else 20)
    if not args.smoke:
        bench.compiled_pass(other, floor=compile_floor + 15)
    throughput_table(bench)
    extrapolate_plan(bench)
    if bench.results["skipped"]:
        report(f"skipped for time: {', '.join(bench.results['skipped'])}")
    report(f"gpu_check finished with {bench.deadline.left():.0f} s of its {args.budget:.0f} s "
           "budget left")
    if args.json:
        Path(args.json).write_text(json.dumps(bench.results, indent=1, default=str))
    return 0


def load_plan() -> tuple[list[tuple[str, str, int, int]], str]:
    """(name, norm, batch, epochs) per run of configs/assignment.yaml, or the fixed plan."""
    path = ROOT / "configs" / "assignment.yaml"
    try:
        import yaml
        raw = yaml.safe_load(path.read_text())
        defaults = raw.get("defaults", {}) or {}
        runs = []
        for run in raw["runs"]:
            spec = {**defaults, **run}
            runs.append((str(spec["name"]), str(spec.get("norm", "torch_bn")),
                         int(spec.get("batch_size", 32)), int(spec.get("epochs", EPOCHS))))
        return runs, str(path.relative_to(ROOT))
    except Exception as err:  # no PyYAML, no file, another layout: the fixed description
        return ([(f"{norm}_b{batch}", norm, batch, EPOCHS) for norm, batch in FALLBACK_PLAN],
                f"fixed 12-run description ({type(err).__name__} reading {path.name})")


if __name__ == "__main__":
    raise SystemExit(main())
