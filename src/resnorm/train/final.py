"""The end of a run: its best checkpoint evaluated on every split, and final.json's record."""
from __future__ import annotations

from torch import nn

from resnorm.checkpoint import Checkpoint
from resnorm.distributed import barrier
from resnorm.model import count_parameters
from resnorm.rundir import BEST_FILE, RunDir
from resnorm.train.config import TrainConfig
from resnorm.train.loop import TrainParts, evaluate, predict_all
from resnorm.train.runtime import Runtime, make_stream

__all__ = ["RESULT_SPLITS", "evaluate_best", "final_record"]

RESULT_SPLITS = ("train", "val", "test")  # the data's splits, final.json's `eval` keys


def evaluate_best(files: RunDir, parts: TrainParts, data, cfg: TrainConfig,
                  rt: Runtime) -> tuple[dict, dict]:
    """best.pt evaluated in eval mode on every split ("train", "val", "test"): the scores
    per split, and the per-image predictions per split (rank 0's, see below).

    Under torchrun every rank loads it (after rank 0 has written it) and evaluates its block
    of each split; the scores are summed over ranks. The per-image predictions are then rank
    0's own pass over the whole of val and test (train is left out: the statistics need it
    only for one-seed train intervals, not worth a second pass over 30,000 images)."""
    barrier()
    if not files.has(BEST_FILE):
        return {}, {}
    parts.model.load_state_dict(Checkpoint.load(files.path(BEST_FILE), rt.device).model)
    results, kept = {}, {}
    single = parts.info.world_size == 1
    for split in RESULT_SPLITS:
        if split == "test" and not cfg.eval_test:  # a tuning trial: test stays unread
            continue
        if split in data.splits and len(data.splits[split]):
            stream = make_stream(data, split, cfg, rt, training=False, info=parts.info)
            keep = {} if single else None
            results[split] = evaluate(parts.model, stream, cfg.num_classes, rt, keep)
            if not single and files.is_main and split != "train":
                keep = predict_all(parts.model, make_stream(data, split, cfg, rt, training=False),
                                   cfg.num_classes, rt)
            if keep is not None:
                kept[split] = keep
    return results, kept


def final_record(cfg: TrainConfig, state, model: nn.Module, data, results: dict, status: str,
                 wall_time_s: float) -> dict:
    """final.json: how the run ended, its best epoch, and the scores per split (`state` is the
    run's RunState)."""
    return {
        "name": cfg.name,
        "status": status,
        "epochs_run": state.epoch,
        "best_epoch": state.best_epoch,
        "wall_time_s": round(wall_time_s, 3),
        "parameters": count_parameters(model),
        "classes": list(data.classes),
        "splits": data.split_counts(),  # images scored per split, and those left out
        "eval": results,
    }
