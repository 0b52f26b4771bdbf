"""Speed of the from-scratch norms against PyTorch's built-in equivalents, side by side.

For each variant, two timings, each as a ratio ours / built-in measured interleaved in one
process (A and B alternate, in ABBA order, after a warm-up; the ratio is the median of the
per-pair ratios, so slow drifts in machine load cancel):
  - step:  one training step (forward, cross-entropy, backward, SGD step) of ResNet(n=2) with
           that norm everywhere;
  - layer: forward + backward of the layer alone on a first-stage activation (B, 16, S, S).

Built-in equivalents: bn -> nn.BatchNorm2d, in -> nn.InstanceNorm2d(affine=True),
ln -> nn.GroupNorm(1, C), gn -> nn.GroupNorm(G, C), bin -> nn.BatchNorm2d + nn.InstanceNorm2d
(no affine) mixed by the same gate, then the affine.

    python benchmarks/norm_speed.py                              # 2-core CPU defaults
    python benchmarks/norm_speed.py --device cuda --size 256 --channels-last --amp bf16
    python benchmarks/norm_speed.py --compile --variants bn,gn   # torch.compile both sides
    python benchmarks/norm_speed.py --default-malloc             # glibc malloc untouched
    python benchmarks/norm_speed.py --fresh --kernels eager --size 32 --threads 1
                                   # a fresh process's first steps, as a short run sees them

`--reference` adds the readable composite path (`layer.reference = True`) as a third column.
On a CPU both sides run with malloc keeping freed memory, as `resnorm train` does
(`resnorm.cpu_memory`); `--default-malloc` leaves glibc's malloc as it is.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

try:
    import resnorm  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from resnorm import norm_functions  # noqa: E402
from resnorm.cpu_memory import keep_freed_memory  # noqa: E402
from resnorm.model import ResNet  # noqa: E402
from resnorm.norm_functions import kernels  # noqa: E402
from resnorm.norms import (  # noqa: E402
    DEFAULT_GN_GROUPS,
    BatchInstanceNorm2d,
    BatchNorm2d,
    GroupNorm2d,
    InstanceNorm2d,
    LayerNorm2d,
    clamp_gates_,
    use_reference,
)

VARIANTS = ("bn", "in", "ln", "gn", "bin")


class TorchBIN(nn.Module):
    """BIN from PyTorch's built-in BN and IN: w * (rho * BN(x) + (1 - rho) * IN(x)) + b."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_channels, affine=False)
        self.inorm = nn.InstanceNorm2d(num_channels, affine=False)
        self.gate = nn.Parameter(torch.ones(num_channels))
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        rho = self.gate.view(1, -1, 1, 1)
        mixed = rho * self.bn(x) + (1 - rho) * self.inorm(x)
        return mixed * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


# variant -> (ours, built-in), each a callable taking the channel count
PAIRS: dict[str, tuple[Callable[[int], nn.Module], Callable[[int], nn.Module]]] = {
    "bn": (BatchNorm2d, nn.BatchNorm2d),
    "in": (InstanceNorm2d, lambda c: nn.InstanceNorm2d(c, affine=True)),
    "ln": (LayerNorm2d, lambda c: nn.GroupNorm(1, c)),
    "gn": (lambda c: GroupNorm2d(DEFAULT_GN_GROUPS, c),
           lambda c: nn.GroupNorm(DEFAULT_GN_GROUPS, c)),
    "bin": (BatchInstanceNorm2d, TorchBIN),
}


def reference_of(factory: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
    return lambda c: use_reference(factory(c))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Case:
    """One timed callable (a training step or a layer's forward + backward)."""

    def __init__(self, run: Callable[[], None], device: torch.device, inner: int) -> None:
        self.run, self.device, self.inner = run, device, inner

    def time(self) -> float:
        """Seconds per call, averaged over `inner` calls."""
        _sync(self.device)
        start = time.perf_counter()
        for _ in range(self.inner):
            self.run()
        _sync(self.device)
        return (time.perf_counter() - start) / self.inner


def model_step_case(norm: Callable[[int], nn.Module], args, device: torch.device) -> Case:
    torch.manual_seed(0)  # same initial weights for every variant's model
    model = ResNet(2, args.num_classes, norm=norm).to(device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    step_model = torch.compile(model) if args.compile else model
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(args.batch_size, 3, args.size, args.size, generator=g)
    x = x.to(device).contiguous(memory_format=memory_format)
    y = torch.randint(0, args.num_classes, (args.batch_size,), generator=g).to(device)
    autocast = _autocast(args, device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(step_model(x), y)
        loss.backward()
        optimizer.step()
        clamp_gates_(model)  # BIN's gates (a no-op otherwise), as in training

    return Case(step, device, args.inner)


def layer_case(norm: Callable[[int], nn.Module], args, device: torch.device) -> Case:
    torch.manual_seed(0)
    layer = norm(16).to(device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    g = torch.Generator(device="cpu").manual_seed(1)
    shape = (args.batch_size, 16, args.size, args.size)
    x = (torch.randn(shape, generator=g) * 2 + 0.5).to(device)
    x = x.contiguous(memory_format=memory_format).requires_grad_(True)
    upstream = torch.randn(shape, generator=g).to(device).contiguous(memory_format=memory_format)
    if args.amp != "off":
        x = x.detach().to(_AMP[args.amp]).requires_grad_(True)
        upstream = upstream.to(_AMP[args.amp])
    fn = torch.compile(layer) if args.compile else layer

    def fwd_bwd() -> None:
        x.grad = None
        fn(x).backward(upstream)

    return Case(fwd_bwd, device, args.inner)


_AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _autocast(args, device: torch.device):
    if args.amp == "off":
        return nullcontext()
    return torch.autocast(device.type, dtype=_AMP[args.amp])


def interleaved(cases: list[Case], warmup: int, repeats: int
                ) -> tuple[list[float], list[float], list[float]]:
    """Median seconds per call of each case, the median ratio case[i] / case[0], and the
    ratio of the fastest calls (min / min: the least disturbed by other processes).

    Cases run in turn (order reversed every other round: ABBA...), so a change in machine
    load affects all of them alike; each ratio is taken within a round.
    """
    for _ in range(warmup):
        for case in cases:
            case.time()
    rounds = []
    for r in range(repeats):
        order = range(len(cases)) if r % 2 == 0 else reversed(range(len(cases)))
        times = [0.0] * len(cases)
        for i in order:
            times[i] = cases[i].time()
        rounds.append(times)
    medians = [statistics.median(t[i] for t in rounds) for i in range(len(cases))]
    ratios = [statistics.median(t[i] / t[0] for t in rounds) for i in range(len(cases))]
    best = [min(t[i] for t in rounds) for i in range(len(cases))]
    return medians, ratios, [b / best[0] for b in best]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--size", type=int, default=64, help="image side (default 64)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=15, help="timed rounds per variant")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    p.add_argument("--inner", type=int, default=None,
                   help="calls per timing (default 1 on CPU, 10 on CUDA)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--compile", action="store_true", help="torch.compile model and layers")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"],
                   help="autocast dtype for the model step (the layer gets inputs of it)")
    p.add_argument("--kernels", default="auto", choices=norm_functions.KERNEL_MODES,
                   help="kernels of the fast norms (default auto, compiled from the first call "
                        "on large activations, as in a training run past its first steps)")
    p.add_argument("--reference", action="store_true",
                   help="also time the composite reference path")
    p.add_argument("--no-layer", action="store_true", help="skip the layer-alone timings")
    p.add_argument("--fresh", action="store_true",
                   help="a fresh process's first steps: 1 untimed round (compiling, with "
                        "compiled kernels), then 8 timed ones, no long warm-up")
    p.add_argument("--num-classes", type=int, default=25)
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch.set_num_threads (default: the core count)")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc malloc as it is (default on CPU: keep freed memory, "
                        "as `resnorm train` does; see resnorm.cpu_memory)")
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if args.inner is None:
        args.inner = 10 if args.device == "cuda" else 1
    if args.fresh:
        args.warmup, args.repeats = 1, min(args.repeats, 8)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    norm_functions.set_kernel_mode(args.kernels)
    kernels.COMPILE_AFTER_CALLS = 0  # the benchmark is one long run: compile at once
    if args.compile:  # every variant compiles the same ResNet.forward: allow more versions
        torch._dynamo.config.recompile_limit = 64
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("norm_speed: CUDA is not available", file=sys.stderr)
        return 2
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    kept = device.type == "cpu" and not args.default_malloc and keep_freed_memory()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"# norm_speed: torch {torch.__version__}, {args.device} ({name or platform.machine()}), "
          f"{args.threads} threads, ResNet n=2, {args.size}x{args.size}, batch {args.batch_size}, "
          f"{'channels_last' if args.channels_last else 'NCHW'}, amp {args.amp}, "
          f"{'compiled' if args.compile else 'eager'} model, {args.kernels} norm kernels, "
          f"{args.repeats} interleaved rounds "
          f"(median), {args.warmup} warm-up{' (fresh process)' if args.fresh else ''}, "
          f"malloc {'keeps freed memory' if kept else 'default'}")
    cols = ["ours", "builtin"] + (["reference"] if args.reference else [])
    header = "| variant | what | " + " | ".join(f"{c} ms" for c in cols) + \
        " | ours/builtin | (min/min) |" + (" reference/builtin |" if args.reference else "")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for variant in args.variants:
        ours, builtin = PAIRS[variant]
        factories = [builtin, ours] + ([reference_of(ours)] if args.reference else [])
        kinds = [("step", model_step_case)] + ([] if args.no_layer else [("layer", layer_case)])
        for what, make in kinds:
            cases = [make(f, args, device) for f in factories]
            medians, ratios, best = interleaved(cases, args.warmup, args.repeats)
            ms = [medians[1], medians[0]] + medians[2:]
            row = f"| {variant} | {what} | " + " | ".join(f"{t * 1e3:.2f}" for t in ms) + \
                f" | **{ratios[1]:.2f}** | {best[1]:.2f} |" + \
                (f" {ratios[2]:.2f} |" if args.reference else "")
            print(row, flush=True)
            del cases
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
