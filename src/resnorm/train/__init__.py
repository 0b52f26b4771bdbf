"""Train one model variant: a 6n+2-layer ResNet with one normalization, on a prepared dataset.

    resnorm train --data data/synth --norm gn --n 2 --epochs 50 --out runs/gn
    from resnorm.train import TrainConfig, train; train(TrainConfig(data=..., out=...))

The package, in the order its modules import each other:

    config    TrainConfig, the recipes (and why the default), resolving and checking a config
    optim     parameter groups (BIN gates apart), the optimizer, the per-step lr schedule
    progress  the progress bar / lines, the epoch lines and TensorBoard scalars (RunOutput)
    runtime   device, autocast, channels_last, compile, DDP, the data and its batch streams
    loop      one epoch of training, evaluation, the divergence check
    resume    what a run folder holds already, and whether this run may continue it
    final     the best checkpoint evaluated on every split; final.json's record
    run       train() = setup_run -> fit -> finish (start reading here)
    load      load_run: a trained run's model, config and data (Grad-CAM, the report)
    cli       `resnorm train` (flags, --config, --resume/--restart)

Exit codes of `resnorm train`: 0 done, 2 invalid settings (one line), 3 diverged (non-finite
training loss: final.json says "diverged" with the epoch and step), 4 out of a resource.
"""
from resnorm.train.config import (RECIPES, RESUMABLE_CHANGES, TrainConfig, config_from_dict,
                                  device_type, load_config_file, resolve_config)
from resnorm.train.load import LoadedRun, load_run, load_run_model
from resnorm.train.run import finish, fit, setup_run, train

__all__ = ["TrainConfig", "train", "setup_run", "fit", "finish", "resolve_config",
           "config_from_dict", "load_config_file", "load_run", "load_run_model", "LoadedRun",
           "device_type", "RECIPES", "RESUMABLE_CHANGES"]
