"""Data: discover image folders, decode them once into a uint8 cache, stream batches.

    layout = discover("data/birds")                 # classes, files per split
    cache = prepare("data/birds", size=256)         # decode once (reused when unchanged)
    data = load_cache(cache)                        # memory-mapped uint8 arrays + manifest
    train = BatchStream(data.splits["train"].images, data.splits["train"].labels, 32,
                        device="cuda", mean=data.mean, std=data.std, shuffle=True,
                        augment=True, seed=0, drop_last=True)
    make_synthetic("data/synth")                    # the synthetic stand-in dataset

`BatchStream` (the only part that needs torch) is imported on first use, so `prepare`'s
worker processes stay light under the spawn/forkserver start methods.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

# The function `prepare` shadows the submodule `prepare` (the CLI's module): after this file
# runs, `resnorm.data.prepare` is the function, and the module is reached with
# `importlib.import_module("resnorm.data.prepare")` (`import resnorm.data.prepare as m` would
# give the function).
from resnorm.data.cache import PreparedData, SplitData, load_cache
from resnorm.data.folders import Layout, discover
from resnorm.data.prepare import prepare
from resnorm.data.synth import SPECIES, make_synthetic

if TYPE_CHECKING:
    from resnorm.data.stream import BatchStream

__all__ = ["discover", "Layout", "prepare", "load_cache", "PreparedData", "SplitData",
           "BatchStream", "make_synthetic", "SPECIES"]


def __getattr__(name: str):
    if name == "BatchStream":
        from resnorm.data.stream import BatchStream
        globals()["BatchStream"] = BatchStream
        return BatchStream
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
