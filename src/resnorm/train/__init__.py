"""Train one model variant: a 6n+2-layer ResNet with one normalization, on a prepared dataset.

    resnorm train --data data/synth --norm gn --n 2 --epochs 50 --out runs/gn
    from resnorm.train import TrainConfig, train; train(TrainConfig(data=..., out=...))

The package, in the order its modules import each other:

    config    TrainConfig, the recipes (and why the default), resolving and checking a config
    optim     parameter groups (BIN gates apart), the optimizer, the per-step lr schedule
    progress  the progress bar / lines, TensorBoard scalars
    runtime   device, autocast, channels_last, torch.compile, DDP helpers, data on the device
    loop      one epoch of training, evaluation, the divergence check (start reading here)
    run       train(): the run folder, resuming, early stopping, final.json; load_run_model
    cli       `resnorm train` (flags, --config, --resume/--restart)

Exit codes of `resnorm train`: 0 done, 2 invalid settings (one line), 3 diverged (non-finite
training loss: final.json says "diverged" with the epoch and step).
"""
from resnorm.train.config import (RECIPES, RESUMABLE_CHANGES, TrainConfig, config_from_dict,
                                  device_type, load_config_file, resolve_config)
from resnorm.train.run import load_run_model, train

__all__ = ["TrainConfig", "train", "resolve_config", "config_from_dict", "load_config_file",
           "load_run_model", "device_type", "RECIPES", "RESUMABLE_CHANGES"]
