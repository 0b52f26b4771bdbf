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

VARIANTS = ("torch_bn", "bn", "in", "bin", "ln", "gn", "nn")
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


def main(argv=None) -> int:
    args = parse_args(argv)
    report = Report(args.out)
    deadline = Deadline(args.budget)
    results: dict = {"train": {}, "eval": {}, "compiled": {}, "skipped": []}

    # 1. the machine, and that the package imports -------------------------------------------
    import torch
    import torch.nn.functional as F

    from resnorm import norm_functions
    from resnorm.model import ResNet
    from resnorm.norm_functions import kernels
    from resnorm.norms import clamp_gates_
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.smoke:
        report("gpu_check: no CUDA device; use --smoke to check the script on CPU")
        return 2
    report(f"# gpu_check {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
           f"{' (SMOKE: tiny sizes, numbers mean nothing)' if args.smoke else ''}")
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

    # as `resnorm train` on CUDA; the smoke run takes the same paths on any device
    fast_path = device.type == "cuda" or args.smoke
    amp = torch.bfloat16 if fast_path else None
    memory_format = torch.channels_last if fast_path else torch.contiguous_format
    # A training run compiles the norm kernels after its first steps; measure that state.
    kernels.COMPILE_AFTER_CALLS = 0
    # Seven variants compile the same ResNet.forward: allow more than dynamo's default 8
    # versions of it (a reset instead would also drop the compiled norm kernels).
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.accumulated_recompile_limit = 1024
    report(f"setup: ResNet n={args.n}, 25 classes, {args.size}x{args.size}, "
           f"{'bf16 autocast' if amp else 'fp32'}, "
           f"{'channels_last' if memory_format is torch.channels_last else 'NCHW'}, "
           f"SGD momentum 0.9 nesterov wd 5e-4, synthetic data on the device; "
           f"norm kernels: {norm_functions.get_kernel_mode()} (compiled at once)")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def autocast():
        return torch.autocast(device.type, dtype=amp) if amp else nullcontext()

    def build(variant: str, compiled: bool):
        torch.manual_seed(0)
        model = ResNet(args.n, 25, norm=variant).to(device).to(memory_format=memory_format)
        return model, (torch.compile(model) if compiled else model)

    def measure_train(variant: str, batch: int, compiled: bool) -> dict:
        model, fn = build(variant, compiled)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                                    weight_decay=5e-4)
        x = torch.randn(batch, 3, args.size, args.size, device=device)
        x = x.contiguous(memory_format=memory_format)
        y = torch.randint(0, 25, (batch,), device=device)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = F.cross_entropy(fn(x), y)
            loss.backward()
            optimizer.step()
            clamp_gates_(model)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(3):  # first calls: cudnn autotuning, kernel (and model) compilation
            step()
        sync()
        warmup_s = time.perf_counter() - start
        steps, start = 0, time.perf_counter()
        while True:
            for _ in range(5):
                step()
            steps += 5
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= args.measure_s:
                break
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
        return {"images_per_s": steps * batch / elapsed, "ms_per_step": elapsed / steps * 1e3,
                "peak_gib": peak, "warmup_s": warmup_s}

    def measure_eval(variant: str) -> dict:
        model, fn = build(variant, False)
        model.eval()
        x = torch.randn(args.eval_batch, 3, args.size, args.size, device=device)
        x = x.contiguous(memory_format=memory_format)
        with torch.no_grad(), autocast():
            for _ in range(2):
                fn(x)
            sync()
            steps, start = 0, time.perf_counter()
            while True:
                fn(x)
                steps += 1
                sync()
                if time.perf_counter() - start >= args.measure_s and steps >= 3:
                    break
        return {"images_per_s": steps * args.eval_batch / (time.perf_counter() - start)}

    def attempt(what: str, fn, *a):
        try:
            return fn(*a)
        except torch.cuda.OutOfMemoryError:
            report(f"  {what}: out of memory")
        except Exception as err:
            report(f"  {what}: FAILED {type(err).__name__}: {err}")
            report("    " + traceback.format_exc().strip().splitlines()[-2][:300])
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        return None

    def fmt(r: dict | None) -> str:
        if r is None:
            return "failed"
        return (f"{r['images_per_s']:.0f} img/s; {r['ms_per_step']:.1f} ms/step; "
                f"{r['peak_gib']:.2f} GiB; first 3 steps {r['warmup_s']:.1f} s")

    def eager_pass(batches: list[int], floor: float) -> None:
        for variant in VARIANTS:
            for batch in batches:
                if deadline.left() < floor:
                    results["skipped"].append(f"eager {variant} b{batch}")
                    continue
                r = attempt(f"{variant} b{batch}", measure_train, variant, batch, False)
                results["train"][f"{variant}/{batch}"] = r
                report(f"  eager {variant} b{batch}: {fmt(r)}")
            if variant not in results["eval"] and deadline.left() > floor:
                r = attempt(f"{variant} eval", measure_eval, variant)
                results["eval"][variant] = r
                if r:
                    report(f"  eval {variant} b{args.eval_batch}: {r['images_per_s']:.0f} img/s")

    def compiled_pass(batches: list[int], floor: float) -> None:
        for batch in batches:
            for variant in args.compile_variants:
                if deadline.left() < floor:
                    results["skipped"].append(f"compiled {variant} b{batch}")
                    continue
                r = attempt(f"compiled {variant} b{batch}", measure_train, variant, batch, True)
                results["compiled"][f"{variant}/{batch}"] = r
                report(f"  compiled {variant} b{batch}: {fmt(r)}")

    # 2. eager training at the compile batch (32), every variant; eval throughput --------------
    # (The order of 2-5 puts what matters most first: if time runs out, the other batches and
    # compiled variants are skipped, and listed.)
    main_batch, other = args.compile_batch, [b for b in args.batches if b != args.compile_batch]
    report(f"\n## Measurements (training: forward + backward + SGD step; eval: forward only)")
    eager_pass([main_batch], floor=30)

    # 3. norm_speed on CUDA ---------------------------------------------------------------------
    report("\n## norm_speed (ours / PyTorch built-in, interleaved)")
    if deadline.left() > (10 if args.smoke else 100):
        import norm_speed
        ns_args = ["--device", device.type, "--size", str(args.size),
                   "--batch-size", str(main_batch), "--repeats", "3" if args.smoke else "8",
                   "--warmup", "1" if args.smoke else "2", "--inner", "1" if args.smoke else "5",
                   "--threads", str(torch.get_num_threads())]
        if fast_path:
            ns_args += ["--channels-last", "--amp", "bf16"]
        report("command: python benchmarks/norm_speed.py " + " ".join(ns_args))
        old_stdout = sys.stdout

        class Tee:
            def write(self, text):
                old_stdout.write(text)
                if report.file:
                    report.file.write(text)

            def flush(self):
                old_stdout.flush()

        sys.stdout = Tee()
        try:
            attempt("norm_speed", norm_speed.main, ns_args)
        finally:
            sys.stdout = old_stdout
    else:
        results["skipped"].append("norm_speed")
        report("skipped: not enough time left")

    # 4. torch.compile at batch 32 (keeping ~45 s for the eager runs at the other batches),
    # then eager at the other batches, then compiled at the other batches while time allows -----
    report("")
    compile_floor = 15 if args.smoke else 75  # a compile + measurement takes up to ~60 s
    compiled_pass([main_batch], floor=compile_floor + (5 if args.smoke else 45))
    eager_pass(other, floor=10 if args.smoke else 20)
    if not args.smoke:
        compiled_pass(other, floor=compile_floor + 15)

    report(f"\n## Training throughput at {args.size}x{args.size} (images/s; peak GiB)")
    report("| variant | " + " | ".join(f"b{b} eager | b{b} compiled" for b in args.batches) +
           " | eval img/s |")
    report("|---|" + "---|---|" * len(args.batches) + "---|")
    for variant in VARIANTS:
        cells = []
        for batch in args.batches:
            for table in (results["train"], results["compiled"]):
                r = table.get(f"{variant}/{batch}")
                cells.append("-" if r is None else
                             f"{r['images_per_s']:.0f} ({r['peak_gib']:.1f})")
        r = results["eval"].get(variant)
        cells.append("-" if r is None else f"{r['images_per_s']:.0f}")
        report(f"| {variant} | " + " | ".join(cells) + " |")

    # 5. the assignment's plan, extrapolated ----------------------------------------------------
    report("\n## Extrapolated wall time of the assignment plan")
    plan, source = load_plan()
    report(f"plan: {source}; {len(plan)} runs; per epoch {TRAIN_IMAGES} train + {VAL_IMAGES} "
           f"val images (the val pass is counted at the eval throughput, batch "
           f"{args.eval_batch}); early stopping not counted (an upper bound)")
    total = {"eager": 0.0, "compiled": 0.0}
    notes = set()

    def throughput(table: dict, norm: str, batch: int) -> tuple[dict | None, str]:
        """The measurement for (norm, batch), else the one at the nearest measured batch."""
        if table.get(f"{norm}/{batch}"):
            return table[f"{norm}/{batch}"], ""
        measured = [int(k.split("/")[1]) for k, v in table.items()
                    if v and k.split("/")[0] == norm]
        if not measured:
            return None, ""
        nearest = min(measured, key=lambda b: abs(b - batch))
        return table[f"{norm}/{nearest}"], f"~b{nearest}"

    report("| run | norm | batch | epochs | eager h | compiled h |")
    report("|---|---|---|---|---|---|")
    for name, norm, batch, epochs in plan:
        row = [name, norm, str(batch), str(epochs)]
        for mode in ("eager", "compiled"):
            train, note = throughput(results["train" if mode == "eager" else "compiled"],
                                     norm, batch)
            if train is None and mode == "compiled":
                train, note = throughput(results["train"], norm, batch)
                note = "eager" + note
            evaluation = results["eval"].get(norm)
            if not train or not evaluation:
                row.append("n/a")
                total[mode] = float("nan")
                continue
            seconds = epochs * (TRAIN_IMAGES / train["images_per_s"]
                                + VAL_IMAGES / evaluation["images_per_s"])
            total[mode] += seconds
            row.append(f"{seconds / 3600:.2f}" + (f" ({note})" if note else ""))
            notes.add(note) if note else None
        report("| " + " | ".join(row) + " |")
    report(f"| **total** | | | | **{total['eager'] / 3600:.2f}** | "
           f"**{total['compiled'] / 3600:.2f}** |")
    if notes:
        report("(eager): no compiled measurement fitted the time, eager throughput used; "
               "(~bK): measured at batch K instead")
    results["plan_hours"] = {k: v / 3600 for k, v in total.items()}
    if results["skipped"]:
        report(f"skipped for time: {', '.join(results['skipped'])}")
    report(f"gpu_check finished with {deadline.left():.0f} s of its {args.budget:.0f} s budget "
           f"left")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
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
