"""Train one model variant: a 6n+2-layer ResNet with one normalization, on a prepared dataset.

    resnorm train --data data/synth --norm gn --n 2 --epochs 50 --out runs/gn
    resnorm train --config run.yaml --lr 0.05          # flags override the file
    resnorm train --data data/birds --recipe literal --out runs/literal

The argparse setup of `resnorm train`: one flag per TrainConfig field (config.py), --config,
and the resume controls. Exit codes: 0 done, 2 invalid settings (one line), 3 diverged
(non-finite training loss: final.json says "diverged" with the epoch and step), 4 out of a
resource (disk space, memory).
"""
from __future__ import annotations

import argparse
import json
import typing
from dataclasses import fields

from resnorm.distributed import is_main_process
from resnorm.train.config import (ADAPTIVE_DEFAULTS, CHOICES, FIELD_NAMES,
                                  FIELD_TYPES, RECIPES, TrainConfig, config_from_dict,
                                  load_config_file)
from resnorm.train.lr_rule import DEFAULT_RECIPE_LR, DEFAULT_RECIPE_RULE
from resnorm.train.run import train

# What each flag means; defaults are appended from TrainConfig and RECIPES (defined once).
HELP = {
    "data": "dataset folder (train/ valid/ [test/]) or a cache made by `resnorm prepare`",
    "cache": "cache folder for the decoded images (default: under $RESNORM_CACHE or "
             "~/.cache/resnorm)",
    "size": "image side in pixels",
    "resize": "how images become square",
    "out": "run folder (required)",
    "name": "display name (default: the run folder's name)",
    "norm": "normalization: torch_bn bn in bin ln gn[:G] nn",
    "n": "blocks per stage; the network has 6n+2 layers",
    "shortcut": "A: identity + zero-padded channels, B: 1x1 projection",
    "batch_size": "training batch size per process (under torchrun the batch of a step is "
                  "this x the number of processes)",
    "epochs": "epochs",
    "recipe": "presets for the optimizer settings not given (see below)",
    "optimizer": "optimizer",
    "lr": "peak learning rate (after warm-up)",
    "momentum": "SGD momentum",
    "nesterov": "Nesterov momentum (SGD)",
    "weight_decay": "weight decay on conv and linear weights",
    "schedule": "per-step lr schedule (step: x0.1 at 50%% and 75%% of training)",
    "warmup_epochs": "linear warm-up epochs",
    "gate_lr_mult": "learning-rate multiplier of the BIN gates",
    "augment": "random crop (pad S/8, reflect) + horizontal flip",
    "patience": "stop after this many epochs without a val-accuracy gain (0: never)",
    "min_delta": "val-accuracy gain that counts as an improvement",
    "seed": "random seed (weights, batch order, augmentation)",
    "device": "where to train",
    "amp": "autocast dtype (auto: on CUDA bf16 where the GPU has it natively, compute "
           "capability >= 8.0, else fp16 with loss scaling, skipped steps counted in "
           "metrics.csv; off elsewhere; bf16 on an older GPU is allowed but emulated, slow)",
    "channels_last": "channels-last memory format (auto: on for CUDA)",
    "compile": "torch.compile the model",
    "compile_mode": "torch.compile mode with --compile: reduce-overhead adds CUDA graphs (for "
                    "launch-bound small batches on a GPU), max-autotune tunes kernels",
    "eval_batch_size": "batch size for evaluation",
    "num_classes": "expected number of classes (default: from the data)",
    "sync_bn": "under torchrun, bn/bin (torch_bn: CUDA only) normalize by statistics over all "
               "processes' batches instead of each process's own",
    "keep_leaked": "keep val/test images that have an exact or near copy in train (left out of "
                   "every score and of choosing epochs by default; kept, scores are inflated)",
    "eval_test": "score the test split at the end (an lr-tuning trial does not: it must "
                 "choose without test)",
}


def _default_text(name: str) -> str:
    """The default of a field as --help shows it (from the recipes for recipe fields)."""
    if name == "lr":
        return (f"default recipe: {DEFAULT_RECIPE_LR:g} x batch_size/"
                f"{DEFAULT_RECIPE_RULE.base_batch} for sgd, "
                f"{ADAPTIVE_DEFAULTS['adam']['lr']:g} for adam/adamw; "
                f"literal: {RECIPES['literal']['lr']:g}")
    if name in RECIPES["default"]:
        return f"default recipe: {RECIPES['default'][name]}; literal: {RECIPES['literal'][name]}"
    default = TrainConfig.__dataclass_fields__[name].default
    return "" if default is None else f"default: {default}"


def _recipe_text(recipe: str) -> str:
    r = RECIPES[recipe]
    lr = (f"lr {r['lr']:g}" if "lr" in r else
          f"lr {DEFAULT_RECIPE_LR:g} x batch_size/{DEFAULT_RECIPE_RULE.base_batch}")
    warmup = f"{r['warmup_epochs']:g}-epoch warm-up + " if r["warmup_epochs"] else "no warm-up, "
    return (f"{r['optimizer'].upper()} {lr}, momentum {r['momentum']:g}"
            f"{', Nesterov' if r['nesterov'] else ''}, weight decay {r['weight_decay']:g},\n"
            f"{'':11}{warmup}{r['schedule']} decay, "
            f"augmentation {'on' if r['augment'] else 'off'}")


EPILOG = f"""\
examples:
  resnorm train --data data/synth --norm bn --n 1 --size 32 --epochs 5 --out runs/bn
  resnorm train --config runs/bn/config.yaml --out runs/bn-seed1 --seed 1
  resnorm train --data data/birds --recipe literal --out runs/literal

recipes (fill in the optimizer settings not set explicitly):
  default  {_recipe_text("default")}
           (trains in 50 epochs; lr scaled linearly with the batch size)
  literal  {_recipe_text("literal")}
           (the assignment's SGD with initial lr 1e-4)

Re-running a command continues an interrupted run from last.pt; a finished run is a no-op.
Compiled: --compile [--compile-mode reduce-overhead] (CUDA graphs: one launch per step, for the
launch-bound batch-8 runs on a GPU; max-autotune tunes kernels, a slow first epoch).
Several GPUs or machines: torchrun --nproc_per_node=4 -m resnorm train ... [--sync-bn]
(--batch-size is per process; see docs/distributed.md).
Val/test images with a copy in train are left out of every score and of choosing epochs
(--keep-leaked keeps them); a test/ split is scored once, at the end, and chooses nothing.
Exit codes: 0 done, 2 invalid settings, 3 diverged (non-finite loss; see final.json),
4 out of a resource (disk space, memory).
"""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags for every TrainConfig field, plus --config and the resume controls."""
    parser.epilog = EPILOG
    parser.add_argument("--config", metavar="YAML",
                        help="settings file (TrainConfig fields); flags override it")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        base = next((t for t in typing.get_args(FIELD_TYPES[f.name]) if t is not type(None)),
                    FIELD_TYPES[f.name])
        default = _default_text(f.name)
        # SUPPRESS: only flags actually given override the config file.
        kw = dict(dest=f.name, default=argparse.SUPPRESS,
                  help=f"{HELP[f.name]} ({default})" if default else HELP[f.name])
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            parser.add_argument(flag, type=base, choices=CHOICES.get(f.name),
                                metavar=None if f.name in CHOICES else f.name.upper(), **kw)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", dest="resume_mode", action="store_const", const="require",
                       default="auto", help="continue from RUN/last.pt and fail if there is "
                       "none (by default a run continues when last.pt exists)")
    group.add_argument("--restart", dest="resume_mode", action="store_const", const="restart",
                       help="delete the run's files in --out and train from scratch")
    parser.add_argument("--quiet", action="store_true", help="no per-step progress output")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig defaults, overridden by the --config file, overridden by the flags given."""
    values = load_config_file(args.config) if args.config else {}
    values.update({name: getattr(args, name) for name in FIELD_NAMES if hasattr(args, name)})
    return config_from_dict(values)


def run_cli(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    final = train(cfg, resume=args.resume_mode, progress=not args.quiet)
    if not is_main_process():
        return 0
    val = final["eval"].get("val", {})
    print(json.dumps({"out": cfg.out, "status": final["status"], "best_epoch": final["best_epoch"],
                      "val_acc": val.get("acc"), "val_macro_f1": val.get("macro_f1")}))
    return 0
