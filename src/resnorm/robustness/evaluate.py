"""One (run, seed) scored on the corrupted set: its best checkpoint as trained, and with BN's
statistics adapted (resnorm.robustness.adaptation) where its norm keeps running statistics.

Per corruption and severity the model predicts the corrupted held-out images in eval mode,
in batches of the run's eval_batch_size, with the run's own runtime (device, autocast) and
normalization, exactly as the run scored its clean images; the clean images of the same
subset are scored too (the drop from clean is paired by image). Adapted: a copy of the model
re-estimates its running statistics on the corrupted *adaptation* split (val, unlabeled),
then predicts the corrupted scored split; a fresh copy for every (corruption, severity), as
Schneider et al. adapt to each shift on its own. The checkpoint is read, never written.

Writes into the job's folder (resnorm.robustness.results): scores.npz (per-image predictions)
then result.json (the record; its presence means done).

The norms' kernels are planned for the evaluation's own work, as training plans them
(resnorm.norm_functions.kernels): a few hundred forward passes at 32 px stay eager. Without a
plan the call-count rule would compile them (seconds of inductor) part way through the second
evaluation a worker process runs.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from resnorm.data import load_cache
from resnorm.model import STAGE_WIDTHS
from resnorm.norm_functions.kernels import planned_kernels
from resnorm.norms import norm_info
from resnorm.robustness.adaptation import adapted, has_running_stats
from resnorm.robustness.corrupted import CorruptedSet
from resnorm.robustness.results import write_trial
from resnorm.rundir import FINAL_FILE, RunDir
from resnorm.study.plan.robustness_settings import RobustnessSettings

__all__ = ["evaluate_trial", "trial_key", "adapts"]


def adapts(norm: str, settings: RobustnessSettings) -> bool:
    """Whether a run of norm kind `norm` is also scored adapted: the plan asks for it and the
    norm registry says the kind normalizes with batch statistics (running ones in eval)."""
    return settings.adapt and norm_info(norm).batch_stats


def trial_key(run_dir: Path, cset: CorruptedSet, settings: RobustnessSettings) -> str:
    """What a trial's scores depend on: the checkpoint's record, the set and the settings. A
    finished evaluation with another key is evaluated again."""
    final = RunDir(run_dir).path(FINAL_FILE)
    words = [final.read_bytes() if final.is_file() else b"", cset.folder.name.encode(),
             repr(sorted(settings.to_yaml_dict().items())).encode()]
    return hashlib.sha256(b"\0".join(words)).hexdigest()[:16]


def evaluate_trial(run_dir: Path, out: Path, cset: CorruptedSet,
                   settings: RobustnessSettings, adapt_split: str | None,
                   scored: str) -> dict:
    """Score the run in `run_dir` on `cset` (split `scored`; BN adapted on `adapt_split`),
    write its scores into `out`, return the record (result.json)."""
    from resnorm.train import config_from_dict
    from resnorm.train.load import load_run_model
    from resnorm.train.runtime import Runtime

    started = time.perf_counter()
    model, config = load_run_model(run_dir)
    cfg = config_from_dict(config)
    rt = Runtime.for_config(cfg)
    model.to(rt.device)
    with_adapt = adapt_split is not None and adapts(cfg.norm, settings) \
        and has_running_stats(model)
    with planned_kernels(*_work(cset, cfg, settings, scored, with_adapt)):
        clean_preds, preds, adapted_preds = _predictions(model, cset, cfg, rt, settings,
                                                         scored, adapt_split if with_adapt
                                                         else None)
    labels = cset.labels(scored)
    record = _record(config, labels, clean_preds, preds, adapted_preds, settings,
                     time.perf_counter() - started)
    record.update(split=scored, adapted_on=adapt_split if with_adapt else None,
                  set=cset.folder.name, size=cset.size, key=trial_key(run_dir, cset, settings))
    write_trial(out, record, labels=labels, files=np.asarray(cset.files(scored)),
                clean=clean_preds.astype(np.int16), preds=preds, adapted=adapted_preds)
    return record


def _work(cset: CorruptedSet, cfg, settings: RobustnessSettings, scored: str,
          adapt: bool) -> tuple[int, int]:
    """(forward passes, elements of the largest normalized activation per pass): the
    evaluation's work, as `plan_kernels` takes a run's."""
    n = len(cset.rows(scored))
    batches = -(-n // cfg.eval_batch_size)
    cells = len(settings.corruptions) * len(settings.severities)
    return batches * (1 + cells * (3 if adapt else 1)), \
        min(n, cfg.eval_batch_size) * STAGE_WIDTHS[0] * cset.size ** 2


def _predictions(model, cset: CorruptedSet, cfg, rt, settings: RobustnessSettings,
                 scored: str, adapt_split: str | None):
    """Clean, corrupted and (with `adapt_split`) adapted predictions on the scored split."""
    scorer = _Scorer(cset, cfg.eval_batch_size, rt, len(cset.meta["classes"]))
    clean = load_cache(cset.meta["cache"]).splits[scored].images
    clean_preds = scorer.predict(model, np.asarray(clean[cset.rows(scored)]))
    shape = (len(settings.corruptions), len(settings.severities), len(clean_preds))
    preds = np.empty(shape, dtype=np.int16)
    adapted_preds = np.empty(shape, dtype=np.int16) if adapt_split is not None else None
    for i, corruption in enumerate(settings.corruptions):
        for j, severity in enumerate(settings.severities):
            x = cset.images(scored, corruption, severity)
            preds[i, j] = scorer.predict(model, x)
            if adapted_preds is not None:
                target = cset.images(adapt_split, corruption, severity)
                adapted_preds[i, j] = scorer.predict(
                    adapted(model, scorer.batches(target)), x)
    return clean_preds, preds, adapted_preds


class _Scorer:
    """Batches of uint8 images normalized as the run's own evaluation does, and the model's
    predictions on them (resnorm.data.BatchStream, resnorm.train.loop.predict_all)."""

    def __init__(self, cset: CorruptedSet, batch_size: int, rt, num_classes: int) -> None:
        self.mean, self.std = cset.meta["mean"], cset.meta["std"]
        self.batch_size, self.rt, self.num_classes = batch_size, rt, num_classes

    def stream(self, images: np.ndarray, batch_size: int | None = None):
        from resnorm.data import BatchStream

        return BatchStream(images, np.zeros(len(images), dtype=np.int64),
                           batch_size or self.batch_size, device=self.rt.device,
                           mean=self.mean, std=self.std, shuffle=False, augment=False,
                           drop_last=False, channels_last=self.rt.channels_last)

    def predict(self, model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
        from resnorm.train.loop import predict_all

        out = predict_all(model, self.stream(images), self.num_classes, self.rt)
        return out["preds"].numpy().astype(np.int16)

    def batches(self, images: np.ndarray):
        """The images alone, in batches of nearly equal size (np.array_split; none of one
        image: BN's batch statistics need two), for adaptation: no label comes with them."""
        n = len(images)
        count = max(1, -(-n // self.batch_size))
        if n >= 2 and n // count < 2:
            count = n // 2
        for rows in np.array_split(np.arange(n), count):
            for x, _ in self.stream(np.asarray(images[rows]), len(rows)):
                yield x


def _record(config: dict, labels: np.ndarray, clean: np.ndarray, preds: np.ndarray,
            adapted_preds: np.ndarray | None, settings: RobustnessSettings,
            seconds: float) -> dict:
    """result.json: accuracies per corruption and severity (as trained, adapted), clean."""
    def cells(p: np.ndarray) -> dict:
        return {c: {str(s): float(np.mean(p[i, j] == labels))
                    for j, s in enumerate(settings.severities)}
                for i, c in enumerate(settings.corruptions)}

    out = {"status": "completed", "run": config.get("name"), "seed": config.get("seed"),
           "norm": config.get("norm"), "images": int(len(labels)),
           "corruptions": list(settings.corruptions), "severities": list(settings.severities),
           "clean_acc": float(np.mean(clean == labels)),
           "mean_acc": float(np.mean(preds == labels)), "acc": cells(preds),
           "seconds": round(seconds, 3)}
    if adapted_preds is not None:
        out["adapted_mean_acc"] = float(np.mean(adapted_preds == labels))
        out["adapted_acc"] = cells(adapted_preds)
    return out
