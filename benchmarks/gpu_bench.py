"""The measurements of benchmarks/gpu_check.py: training and evaluation throughput of one
norm variant at one batch, eager or compiled, each within the run's deadline (`Bench`)."""
from __future__ import annotations

import argparse
import time
import traceback
from contextlib import nullcontext

VARIANTS = ("torch_bn", "bn", "in", "bin", "ln", "gn", "nn")


class Bench:
    """One gpu_check run's device, its settings (as `resnorm train` runs on CUDA; the smoke
    run takes the same paths on any device), and the measurements so far."""

    def __init__(self, args: argparse.Namespace, report, deadline) -> None:
        """`report(line)` prints a line; `deadline.left()`: the run's seconds left."""
        import torch

        self.args, self.report, self.deadline = args, report, deadline
        self.results: dict = {"train": {}, "eval": {}, "compiled": {}, "skipped": []}
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.fast_path = self.device.type == "cuda" or args.smoke
        self.amp = torch.bfloat16 if self.fast_path else None
        self.memory_format = torch.channels_last if self.fast_path else torch.contiguous_format

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def autocast(self):
        import torch

        return torch.autocast(self.device.type, dtype=self.amp) if self.amp else nullcontext()

    def build(self, variant: str, compiled: bool):
        import torch

        from resnorm.model import ResNet
        torch.manual_seed(0)
        model = ResNet(self.args.n, 25, norm=variant).to(self.device)
        model = model.to(memory_format=self.memory_format)
        return model, (torch.compile(model) if compiled else model)

    def inputs(self, batch: int):
        import torch

        size = self.args.size
        x = torch.randn(batch, 3, size, size, device=self.device)
        return x.contiguous(memory_format=self.memory_format)

    def measure_train(self, variant: str, batch: int, compiled: bool) -> dict:
        import torch
        import torch.nn.functional as F

        from resnorm.norms import clamp_gates_
        model, fn = self.build(variant, compiled)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                                    weight_decay=5e-4)
        x, y = self.inputs(batch), torch.randint(0, 25, (batch,), device=self.device)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                loss = F.cross_entropy(fn(x), y)
            loss.backward()
            optimizer.step()
            clamp_gates_(model)

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(3):  # first calls: cudnn autotuning, kernel (and model) compilation
            step()
        self.sync()
        warmup_s = time.perf_counter() - start
        steps, elapsed = self.timed(step, 5, 1)
        peak = torch.cuda.max_memory_allocated() / 2**30 if self.device.type == "cuda" else 0.0
        return {"images_per_s": steps * batch / elapsed, "ms_per_step": elapsed / steps * 1e3,
                "peak_gib": peak, "warmup_s": warmup_s}

    def timed(self, call, per_round: int, min_calls: int) -> tuple[int, float]:
        """Rounds of `per_round` calls until --measure-s have passed (and at least
        `min_calls`): (calls, seconds)."""
        calls, start = 0, time.perf_counter()
        while True:
            for _ in range(per_round):
                call()
            calls += per_round
            self.sync()
            elapsed = time.perf_counter() - start
            if elapsed >= self.args.measure_s and calls >= min_calls:
                return calls, elapsed

    def measure_eval(self, variant: str) -> dict:
        import torch

        model, fn = self.build(variant, False)
        model.eval()
        x = self.inputs(self.args.eval_batch)
        with torch.no_grad(), self.autocast():
            for _ in range(2):
                fn(x)
            self.sync()
            steps, elapsed = self.timed(lambda: fn(x), 1, 3)
        return {"images_per_s": steps * self.args.eval_batch / elapsed}

    def attempt(self, what: str, fn, *a):
        """fn(*a), or None with the failure (out of memory, an error) reported."""
        import torch

        try:
            return fn(*a)
        except torch.cuda.OutOfMemoryError:
            self.report(f"  {what}: out of memory")
        except Exception as err:
            self.report(f"  {what}: FAILED {type(err).__name__}: {err}")
            self.report("    " + traceback.format_exc().strip().splitlines()[-2][:300])
        finally:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        return None

    def eager_pass(self, batches: list[int], floor: float) -> None:
        """Eager training of every variant at `batches`, and its eval throughput, while
        more than `floor` seconds are left."""
        for variant in VARIANTS:
            for batch in batches:
                if self.deadline.left() < floor:
                    self.results["skipped"].append(f"eager {variant} b{batch}")
                    continue
                r = self.attempt(f"{variant} b{batch}", self.measure_train, variant, batch,
                                 False)
                self.results["train"][f"{variant}/{batch}"] = r
                self.report(f"  eager {variant} b{batch}: {fmt(r)}")
            if variant not in self.results["eval"] and self.deadline.left() > floor:
                r = self.attempt(f"{variant} eval", self.measure_eval, variant)
                self.results["eval"][variant] = r
                if r:
                    self.report(f"  eval {variant} b{self.args.eval_batch}: "
                                f"{r['images_per_s']:.0f} img/s")

    def compiled_pass(self, batches: list[int], floor: float) -> None:
        for batch in batches:
            for variant in self.args.compile_variants:
                if self.deadline.left() < floor:
                    self.results["skipped"].append(f"compiled {variant} b{batch}")
                    continue
                r = self.attempt(f"compiled {variant} b{batch}", self.measure_train, variant,
                                 batch, True)
                self.results["compiled"][f"{variant}/{batch}"] = r
                self.report(f"  compiled {variant} b{batch}: {fmt(r)}")


def fmt(r: dict | None) -> str:
    if r is None:
        return "failed"
    return (f"{r['images_per_s']:.0f} img/s; {r['ms_per_step']:.1f} ms/step; "
            f"{r['peak_gib']:.2f} GiB; first 3 steps {r['warmup_s']:.1f} s")
