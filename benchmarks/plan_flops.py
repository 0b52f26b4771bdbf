"""How long a plan takes on the GPUs of Kaggle and Colab, estimated from its work: the FLOPs of
every training and evaluation pass (torch.utils.flop_counter on the plan's model) and the
activation traffic they move, against each GPU's peak. An estimate, not a measurement: run
benchmarks/gpu_check.sh on the GPU to replace it.

    python benchmarks/plan_flops.py                          # configs/assignment.yaml
    python benchmarks/plan_flops.py --plan configs/assignment.yaml --train 30000 --val 7500

Per image: a training step costs forward + backward FLOPs, an evaluation forward ones. Traffic:
each layer's output is written once and read once forward, and read ~4 times more backward
(saved input, gradients in and out), 2 bytes a value under fp16 autocast. The time is the slower
of FLOPs / peak and traffic / bandwidth: no kernel is faster than either.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from resnorm.model import ResNet  # noqa: E402
from resnorm.study.plan.parse import load_plan  # noqa: E402

# (name, fp16 peak FLOP/s with autocast, memory bandwidth B/s): the vendors' data sheets
GPUS = [("T4 (Kaggle, Colab)", 65e12, 320e9), ("P100 PCIe (Kaggle)", 18.7e12, 732e9)]
ACCESSES_TRAIN, ACCESSES_EVAL, BYTES = 6, 2, 2


def per_image(n: int, size: int, classes: int) -> tuple[float, float, int]:
    """(training FLOPs, evaluation FLOPs, activation values) per image. The norms cost no
    FLOPs the counter sees (it counts convolutions and matrix products); the activations are
    each convolution's output, its norm's and its ReLU's: three values per conv output."""
    model = ResNet(n, classes, norm="torch_bn")
    x = torch.randn(2, 3, size, size)
    with FlopCounterMode(display=False) as train:
        model(x).sum().backward()
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as evaluate:
        model(x)
    values = []
    hooks = [m.register_forward_hook(lambda m, i, o: values.append(3 * o[0].numel()))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return train.get_total_flops() / 2, evaluate.get_total_flops() / 2, sum(values)


def plan_work(plan_path: str, train: int, val: int, classes: int):
    """The plan's FLOPs and bytes at most (every run to its last epoch), and per-image costs."""
    plan = load_plan(plan_path)
    flops = traffic = 0.0
    costs = {}
    for spec in plan.runs:
        cfg = {**plan.defaults, **spec.overrides}
        key = (int(cfg.get("n", 2)), int(cfg.get("size", 256)))
        if key not in costs:
            costs[key] = per_image(*key, classes)
        f_train, f_eval, values = costs[key]
        epochs, seeds = int(cfg.get("epochs", 50)), len(plan.seeds_of(spec))
        passes = seeds * epochs
        flops += passes * (train * f_train + val * f_eval) + seeds * (train + val) * f_eval
        traffic += BYTES * values * (passes * (train * ACCESSES_TRAIN + val * ACCESSES_EVAL)
                                     + seeds * (train + val) * ACCESSES_EVAL)
    return plan, flops, traffic, costs


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default="configs/assignment.yaml")
    parser.add_argument("--train", type=int, default=30000, help="training images")
    parser.add_argument("--val", type=int, default=7500, help="validation images")
    parser.add_argument("--classes", type=int, default=25)
    args = parser.parse_args()
    plan, flops, traffic, costs = plan_work(args.plan, args.train, args.val, args.classes)
    for (n, size), (f_train, f_eval, values) in costs.items():
        print(f"ResNet n={n} at {size}x{size}: {f_train / 1e9:.2f} GFLOP per training "
              f"image, {f_eval / 1e9:.2f} per evaluated one, {values / 1e6:.1f} M activations")
    print(f"{args.plan}: {len(plan.runs)} runs, at most {flops:.3g} FLOP and {traffic:.3g} bytes "
          f"of activation traffic ({args.train:,} train + {args.val:,} val images)\n")
    print("| GPU | fp16 peak | bandwidth | at peak FLOP/s | at full bandwidth | estimate |")
    print("|---|---|---|---|---|---|")
    for name, peak, bandwidth in GPUS:
        compute, memory = flops / peak, traffic / bandwidth
        print(f"| {name} | {peak / 1e12:g} TFLOP/s | {bandwidth / 1e9:g} GB/s | "
              f"{hours(compute)} | {hours(memory)} | {hours(max(compute, memory))} or more |")


if __name__ == "__main__":
    main()
