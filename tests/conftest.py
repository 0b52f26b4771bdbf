"""Shared fixtures: a tiny synthetic dataset and its prepared cache (built once per session).

    synth_root   5 classes x (16 train + 6 valid) images of 32-64 px, with boxes.json;
                 four of the classes are Grad-CAM classes (see SYNTH_CLASSES)
    synth_cache  that dataset prepared at 32 x 32 (a `resnorm.data.PreparedData`)
"""
from __future__ import annotations

import os

import pytest

# Under pytest-xdist (`make test` runs `-n auto`) each worker gets its share of the cores: the
# intra-op threads of two workers would otherwise fight over the same cores (and threads spin
# while they wait, which costs more than they compute for these tiny models). Set before torch
# is imported, so torch and every process a test starts follow it.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    _workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (_cores or 1) // _workers)))

# Every report a test renders simulates its family's error rates (report.calibration): a few
# studies suffice to exercise it (the production default costs about 10 s per report).
os.environ.setdefault("RESNORM_CALIBRATION_STUDIES", "20")

SYNTH_CLASSES = ["Cattle-Egret", "Common-Myna", "Coppersmith-Barbet", "Indian-Peacock",
                 "White-Breasted-Kingfisher"]
SYNTH_TRAIN_PER_CLASS = 16
SYNTH_VAL_PER_CLASS = 6
SYNTH_CACHE_SIZE = 32


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    from resnorm.data import make_synthetic
    return make_synthetic(tmp_path_factory.mktemp("synth") / "birds", class_names=SYNTH_CLASSES,
                          train_per_class=SYNTH_TRAIN_PER_CLASS,
                          val_per_class=SYNTH_VAL_PER_CLASS, seed=0, side_range=(32, 64))


@pytest.fixture(scope="session")
def synth_cache(synth_root, tmp_path_factory):
    from resnorm.data import load_cache, prepare
    out = tmp_path_factory.mktemp("cache") / "birds-32"
    return load_cache(prepare(synth_root, size=SYNTH_CACHE_SIZE, out=out, workers=1,
                              progress=False))


@pytest.fixture
def one_thread():
    """One intra-op thread: fast on a shared 2-core machine, and the same in every test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config, items):
    """The files with slow tests (`@pytest.mark.slow`: end to end, seconds each) first, each
    file's tests in their order. Under pytest-xdist (`--dist loadfile`: a file per worker at a
    time) the long files start at once and the short ones fill in around them, instead of one
    long file running alone at the end."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)
