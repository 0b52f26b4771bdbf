"""Faithfulness of Grad-CAM maps (pytorch-grad-cam's ROAD and masked-image confidence), each
against a random map: on the synthetic set, where the object is the only evidence (a planted
truth), a model that has learned it gets Grad-CAM maps more faithful than random ones; and a
fixed seed gives the same numbers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from resnorm.gradcam.faithfulness import faithfulness, random_maps
from resnorm.gradcam.maps import compute_cams
from resnorm.statistics import t_interval
from resnorm.train import load_run, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def learned(synth_cache, tmp_path_factory):
    """A BN run trained until it is mostly right on the synthetic val images, and the val
    images it classifies correctly."""
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("faith") / "run"
    train(dict(data=str(synth_cache.path), out=str(run), size=32, n=1, norm="bn", epochs=15,
               batch_size=16, lr=0.05, device="cpu"), progress=False, epoch_lines=False)
    loaded = load_run(run, device="cpu", data=synth_cache)
    pred = loaded.predict("val")
    right = np.flatnonzero(pred["preds"].numpy() == pred["labels"].numpy())
    assert len(right) >= 12, "the model must be right often enough to explain"
    val = synth_cache.splits["val"]
    images, labels = val.images[right], np.asarray(val.labels)[right]
    cams = compute_cams(loaded.model, images, labels, synth_cache.mean, synth_cache.std)
    return loaded.model, images, labels, cams, synth_cache


def test_random_maps_are_seeded_coarse_and_scaled():
    a, b, c = random_maps(3, 32, 0), random_maps(3, 32, 0), random_maps(3, 32, 1)
    assert a.shape == (3, 32, 32) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() == 0 and a.max() == pytest.approx(1)
    assert np.abs(np.diff(a, axis=-1)).max() < 0.5  # smooth: upsampled from 8x8


def test_gradcam_is_more_faithful_than_a_random_map_and_stable(learned):
    model, images, labels, cams, data = learned
    f = faithfulness(model, images, labels, cams, data.mean, data.std, seed=0)
    assert f["images"] == len(images) and len(f["road_gradcam"]) == len(images)
    road_gain = np.array(f["road_gradcam"]) - np.array(f["road_random"])
    mean, lo, hi = t_interval(road_gain)
    assert lo > 0, f"ROAD Grad-CAM - random: {mean:.3f} ({lo:.3f}, {hi:.3f})"
    assert np.mean(f["confidence_gradcam"]) > np.mean(f["confidence_random"])
    # a fixed seed: the same imputation noise and random maps, the same numbers
    again = faithfulness(model, images, labels, cams, data.mean, data.std, seed=0)
    assert again == f
    other = faithfulness(model, images, labels, cams, data.mean, data.std, seed=1)
    assert other["road_random"] != f["road_random"]


def test_corner_mass_on_planted_black_corners(learned):
    from resnorm.gradcam.faithfulness import corner_mass

    model, images, labels, _, data = learned
    planted = images.copy()
    yy, xx = np.mgrid[:32, :32]
    planted[:4, :, (yy + xx) < 10] = 0  # four images with a black top-left corner
    c = corner_mass(model, planted, labels, data.mean, data.std, seed=0)
    assert c["images_with_corners"] == 4 and c["explained"] == 4
    assert c["area_share"] == [pytest.approx(((yy + xx) < 10).mean(), abs=1e-4)] * 4
    assert all(0 <= v <= 1 for v in c["cam_share"] + c["control_share"])
    assert corner_mass(model, planted, labels, data.mean, data.std, seed=0) == c


@pytest.mark.parametrize("runs,ok", [("best", True), ("all", True), (["bn", "gn"], True),
                                     (["bn", "hoopoe"], False), ("some", False), ([], False)])
def test_a_plan_asks_for_galleries_of_best_all_or_named_runs(runs, ok):
    from resnorm.errors import UsageError
    from resnorm.study.plan.parse import parse_plan

    raw = {"gradcam": {"runs": runs}, "runs": [{"name": "bn", "norm": "bn"},
                                               {"name": "gn", "norm": "gn"}]}
    if ok:
        assert parse_plan(raw).gradcam["runs"] == runs
    else:
        with pytest.raises(UsageError, match="gradcam: runs must be best, all or a list"):
            parse_plan(raw)
