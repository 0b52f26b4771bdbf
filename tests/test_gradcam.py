"""Grad-CAM: class matching, deterministic image choice, the pointing game, the package's hooks
released and the model left as it was, and the galleries of a trained run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from resnorm import cli
from resnorm.gradcam.gallery import _short, render_class_grid
from resnorm.gradcam.maps import (compute_cams, concentration, grad_cam, pointing_hit,
                                  scale_box, val_boxes)
from resnorm.gradcam.run import run_gradcam
from resnorm.gradcam.select import ASSIGNMENT_CLASSES, match_classes, select_examples
from resnorm.model import ResNet
from resnorm.train import load_run, train

pytestmark = pytest.mark.usefixtures("one_thread")


# --- pure functions ---------------------------------------------------------------------------

def test_assignment_classes_match_folder_names_ignoring_case_and_separators():
    folders = ["cattle_egret", "COPPERSMITH-BARBET", "Indian Peacock", "Red-Wattled-Lapwing",
               "Ruddy-Shelduck", "white-breasted_kingfisher", "Hoopoe"]
    found, missing = match_classes(ASSIGNMENT_CLASSES, folders)
    assert found == ["cattle_egret", "COPPERSMITH-BARBET", "Indian Peacock",
                     "Red-Wattled-Lapwing", "Ruddy-Shelduck", "white-breasted_kingfisher"]
    assert missing == ["White Breasted Waterhen"]
    assert match_classes(["hoo-poe"], folders) == (["Hoopoe"], [])


def test_examples_are_chosen_deterministically_and_fewer_when_missing():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 300)
    preds = np.where(rng.random(300) < 0.7, labels, (labels + 1) % 3)
    correct, incorrect = select_examples(labels, preds, 1, 5, seed=0)
    assert len(correct) == len(incorrect) == 5
    assert (labels[correct] == 1).all() and (preds[correct] == 1).all()
    assert (labels[incorrect] == 1).all() and (preds[incorrect] != 1).all()
    assert list(correct) == sorted(correct)
    again = select_examples(labels, preds, 1, 5, seed=0)
    assert np.array_equal(again[0], correct) and np.array_equal(again[1], incorrect)
    other = select_examples(labels, preds, 1, 5, seed=1)
    assert not (np.array_equal(other[0], correct) and np.array_equal(other[1], incorrect))
    # a perfect model has no mistakes to show
    c, i = select_examples(labels, labels, 2, 5)
    assert len(c) == 5 and len(i) == 0


def test_pointing_game_on_a_hand_made_map():
    cam = np.zeros((32, 32), np.float32)
    cam[10, 20] = 1.0  # the maximum at x=20, y=10 (pixel centre 20.5, 10.5)
    assert pointing_hit(cam, (18, 8, 24, 12))
    assert not pointing_hit(cam, (0, 0, 16, 16))      # elsewhere
    assert not pointing_hit(cam, (18, 11, 24, 20))    # x inside, y above the box
    assert pointing_hit(cam, (20.5, 10.5, 30, 30))    # on the edge counts


def test_boxes_are_scaled_from_source_pixels():
    # a 200x100 source squashed to 32x32: x scales by 0.16, y by 0.32
    assert scale_box([50, 25, 100, 50], (200, 100), 32) == pytest.approx((8, 8, 16, 16))
    # centre crop: short side 100 -> 32 (x0.32), 200 wide -> 64, 16 cut on the left
    assert scale_box([50, 25, 100, 50], (200, 100), 32, "crop") == pytest.approx((0, 8, 16, 16))


def test_concentration_separates_flat_and_peaked_maps():
    assert concentration(np.ones((10, 10))) == pytest.approx(0.10)
    peaked = np.zeros((10, 10))
    peaked[3, 3] = 1.0
    assert concentration(peaked) == pytest.approx(1.0)
    assert np.isnan(concentration(np.zeros((4, 4))))


def test_tile_titles_keep_dollar_signs_as_text(tmp_path):
    name = r"Odd$\frac$Bird"  # as mathtext this would not even parse
    tile = {"true": name, "pred": name, "confidence": 0.5, "overlay": np.zeros((8, 8, 3), np.uint8)}
    render_class_grid(tmp_path / "g.png", _short(name), {"correct": [tile], "incorrect": []}, 2)
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    assert _short(name) == r"Odd\$\frac\$Bird"


# --- the package's GradCAM on a model ---------------------------------------------------------

def _images(n, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


@pytest.mark.parametrize("norm", ["bn", "bin", "nn"])
def test_cams_leave_the_model_as_it_was(norm):
    torch.manual_seed(0)
    model = ResNet(1, 5, norm)
    model.train()
    model.layer1.eval()  # a mixed state must come back exactly
    marker = torch.full_like(model.fc.weight, 7.0)
    model.fc.weight.grad = marker.clone()
    modes = {name: m.training for name, m in model.named_modules()}

    cams = compute_cams(model, _images(6), np.arange(6) % 5, [0.5] * 3, [0.25] * 3,
                        batch_size=4)
    assert cams.shape == (6, 32, 32) and cams.dtype == np.float32
    assert 0 <= cams.min() and cams.max() <= 1
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert torch.equal(model.fc.weight.grad, marker)
    assert all(p.grad is None for n, p in model.named_parameters() if n != "fc.weight")
    for layer in model.gradcam_layers():  # the package's hooks are gone
        assert not layer._forward_hooks
    # eval-mode maps do not depend on what else is in the batch
    alone = compute_cams(model, _images(6)[2:3], np.array([2]), [0.5] * 3, [0.25] * 3)
    np.testing.assert_allclose(alone[0], cams[2], atol=1e-5)


def test_errors_inside_the_cam_context_are_not_swallowed():
    # pytorch-grad-cam's own __exit__ returns True for an IndexError; ours must not.
    model = ResNet(1, 3, "bn")
    with pytest.raises(IndexError):
        with grad_cam(model):
            raise IndexError("boom")
    assert not any(layer._forward_hooks for layer in model.gradcam_layers())


def test_cams_follow_the_target_class():
    torch.manual_seed(0)
    model = ResNet(1, 4, "gn").eval()
    imgs = _images(2)
    a = compute_cams(model, imgs, np.array([0, 0]), [0.5] * 3, [0.25] * 3)
    b = compute_cams(model, imgs, np.array([3, 3]), [0.5] * 3, [0.25] * 3)
    assert not np.allclose(a, b)


# --- a trained run ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(synth_cache, tmp_path_factory):
    """A 2-epoch GN run on the session's synthetic dataset (4 of its 5 species are among the
    assignment's 7 Grad-CAM classes)."""
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("gradcam") / "run"
    train(dict(data=str(synth_cache.path), out=str(run), size=32, n=1, norm="gn", epochs=2,
               batch_size=16, device="cpu"), progress=False)
    return run, synth_cache


def test_galleries_of_a_trained_run(trained, tmp_path):
    run, data = trained
    summary = run_gradcam(run, tmp_path / "cams", data=data, per_class=3, device="cpu")
    # the assignment classes that exist, matched to the hyphenated folder names
    found = ["Cattle-Egret", "Coppersmith-Barbet", "Indian-Peacock", "White-Breasted-Kingfisher"]
    assert [c["name"] for c in summary["classes"]] == found
    assert summary["note"] == ("not in this dataset: Red Wattled Lapwing, Ruddy Shelduck, "
                               "White Breasted Waterhen")
    assert summary["target_layers"] == ["layer3.0.conv1", "layer3.0.conv2"]
    val = data.splits["val"]
    preds = load_run(run, device="cpu", data=data).predict("val")["preds"].numpy()
    files = sorted(p.name for p in (tmp_path / "cams").iterdir())
    assert len(files) == 4 * 3 + 1  # a PNG and two .npy per class, and gradcam.json
    for c in summary["classes"]:
        k = data.classes.index(c["name"])
        n_right = int(((val.labels == k) & (preds == k)).sum())
        n_wrong = int(((val.labels == k) & (preds != k)).sum())
        assert len(c["correct"]) == min(3, n_right) and len(c["incorrect"]) == min(3, n_wrong)
        assert bool(c["note"]) == (n_right < 3 or n_wrong < 3)
        for kind in ("correct", "incorrect"):
            maps = np.load(tmp_path / "cams" / f"{c['png'][:-4]}_{kind}.npy")
            assert maps.shape == (len(c[kind]), 32, 32)
            for tile in c[kind]:
                assert tile["true"] == c["name"]
                assert (tile["pred"] == c["name"]) == (kind == "correct")
                assert 0 < tile["confidence"] <= 1
                assert "box" in tile  # synthetic data: the object's box, in 32x32 pixels
        assert (tmp_path / "cams" / c["png"]).read_bytes()[:4] == b"\x89PNG"
    # the pointing game over every boxed val image, with its chance level
    score = summary["pointing"][summary["run"]]
    assert score["total"] == len(val) and 0 <= score["score"] <= 1 and 0 < score["chance"] < 1
    assert json.loads((tmp_path / "cams" / "gradcam.json").read_text())["run"] == "run"


def test_val_boxes_fit_the_prepared_images(trained):
    _, data = trained
    boxes = val_boxes(data)
    assert len(boxes) == len(data.splits["val"])
    for x0, y0, x1, y1 in boxes.values():
        assert -0.5 <= x0 < x1 <= 32.5 and -0.5 <= y0 < y1 <= 32.5


def test_gradcam_cli_with_classes_and_errors(trained, tmp_path, capsys):
    run, _ = trained
    out = tmp_path / "cli"
    assert cli.main(["gradcam", "--run", str(run), "--out", str(out), "--per-class", "2",
                     "--classes", "common myna,INDIAN_PEACOCK"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["common-myna.png", "indian-peacock.png"]
    assert "pointing game" in capsys.readouterr().out
    # a second call with other classes replaces the first call's files
    assert cli.main(["gradcam", "--run", str(run), "--out", str(out), "--per-class", "2",
                     "--classes", "Hoopoe-not-here"]) == 2
    assert "no class folder matches Hoopoe-not-here" in capsys.readouterr().err
    assert cli.main(["gradcam", "--run", str(run), "--out", str(out), "--per-class", "2",
                     "--classes", "Cattle Egret"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["cattle-egret.png"]
    assert cli.main(["gradcam", "--run", str(tmp_path)]) == 2  # not a run folder
