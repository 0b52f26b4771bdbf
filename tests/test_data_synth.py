"""The synthetic dataset: layout, boxes, determinism, idempotence, class choice, CLI."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnorm.cli import main
from resnorm.data import SPECIES, discover, make_synthetic
from resnorm.data.synth import GRADCAM_CLASSES, read_marker, render_image
from resnorm.errors import UsageError

from conftest import SYNTH_CLASSES, SYNTH_TRAIN_PER_CLASS, SYNTH_VAL_PER_CLASS


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def small(out: Path, **kwargs) -> Path:
    kwargs = {"num_classes": 3, "train_per_class": 4, "val_per_class": 2,
              "side_range": (32, 64), **kwargs}
    return make_synthetic(out, **kwargs)


def test_layout_matches_the_real_dataset(synth_root):
    layout = discover(synth_root)
    assert layout.classes == sorted(SYNTH_CLASSES)
    assert set(layout.splits) == {"train", "val"} and layout.ignored == []
    assert layout.split_dirs["val"].name == "valid"  # the Kaggle folder
    for split, per_class in (("train", SYNTH_TRAIN_PER_CLASS), ("val", SYNTH_VAL_PER_CLASS)):
        labels = [label for _, label in layout.splits[split]]
        assert np.bincount(labels).tolist() == [per_class] * len(SYNTH_CLASSES)
    suffixes = {p.suffix for p, _ in layout.splits["train"]}
    assert suffixes == {".jpg", ".png"}
    assert "SYNTHETIC DATASET" in (synth_root / "SYNTHETIC.txt").read_text()


def test_boxes_cover_every_image_and_lie_inside_it(synth_root):
    boxes = json.loads((synth_root / "boxes.json").read_text())
    files = {p.relative_to(synth_root).as_posix()
             for p in synth_root.glob("*/*/*") if p.is_file()}
    assert set(boxes) == files
    sizes = []
    for rel, (x0, y0, x1, y1) in boxes.items():
        w, h = Image.open(synth_root / rel).size
        sizes.append(max(w, h))
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (rel, (x0, y0, x1, y1), (w, h))
        assert max(x1 - x0, y1 - y0) >= 0.4 * min(w, h)  # the bird spans 45-90 % of the image
    assert 32 <= min(sizes) and max(sizes) <= 64 * 1.2


def test_the_box_holds_the_bird(monkeypatch):
    # Render the same image with and without the bird (no global style, which depends on the
    # whole image): pixels change inside the box only, and over a good part of it.
    import importlib
    synth = importlib.import_module("resnorm.data.drawing")
    monkeypatch.setattr(synth, "_global_style", lambda canvas, rng: canvas)
    image, box, _ = render_image("Indian-Peacock", "train", 3, side_range=(96, 96))
    draw_bird = synth._draw_bird
    monkeypatch.setattr(synth, "_draw_bird", lambda canvas, sp, rng: draw_bird(canvas.copy(),
                                                                               sp, rng))
    empty, _, _ = render_image("Indian-Peacock", "train", 3, side_range=(96, 96))
    changed = (np.asarray(image, int) != np.asarray(empty, int)).any(2)
    x0, y0, x1, y1 = box
    assert changed[y0:y1, x0:x1].mean() > 0.2
    changed[y0:y1, x0:x1] = False
    assert not changed.any()


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a, b = small(tmp_path / "a", seed=7), small(tmp_path / "b", seed=7)
    assert digest(a) == digest(b)
    assert digest(small(tmp_path / "c", seed=8)) != digest(a)


def test_a_class_looks_the_same_whatever_else_is_generated(tmp_path):
    few = small(tmp_path / "few", class_names=["Cattle-Egret", "Hoopoe"])
    many = small(tmp_path / "many", num_classes=5)
    for name in ("0000", "0001"):
        [p] = (few / "train" / "Cattle-Egret").glob(f"{name}.*")
        assert p.read_bytes() == (many / "train" / "Cattle-Egret" / p.name).read_bytes()


def test_rerun_with_same_parameters_reuses_the_folder(tmp_path):
    out = small(tmp_path / "s")
    marker = out / "SYNTHETIC.txt"
    stamp = marker.stat().st_mtime_ns
    assert small(tmp_path / "s") == out and marker.stat().st_mtime_ns == stamp
    assert read_marker(out)["train_per_class"] == 4


def test_other_parameters_regenerate(tmp_path):
    out = small(tmp_path / "s")
    small(tmp_path / "s", train_per_class=5)
    assert len(list((out / "train" / SPECIES_SORTED[0]).iterdir())) == 5
    assert read_marker(out)["train_per_class"] == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


SPECIES_SORTED = sorted(SPECIES)


def test_refuses_to_overwrite_other_folders(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "photo.jpg").write_bytes(b"precious")
    with pytest.raises(UsageError, match="not a synthetic dataset"):
        small(tmp_path / "mine")


def test_default_classes_are_the_25_species_with_the_gradcam_ones():
    assert len(SPECIES) == 25 and list(SPECIES) == SPECIES_SORTED
    assert set(GRADCAM_CLASSES) <= set(SPECIES)
    assert "Asian-Green-Bee-Eater" in SPECIES and "White-Wagtail" in SPECIES


def test_num_classes_takes_the_first_k_sorted(tmp_path):
    out = small(tmp_path / "s", num_classes=4)
    assert discover(out).classes == SPECIES_SORTED[:4]


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 26}, "between 2 and 25"),
    ({"num_classes": 1}, "between 2 and 25"),
    ({"class_names": ["Dodo", "Hoopoe"]}, "unknown species Dodo"),
    ({"train_per_class": 0}, "positive"),
])
def test_bad_parameters(tmp_path, kwargs, message):
    with pytest.raises(UsageError, match=message):
        small(tmp_path / "s", **kwargs)


def test_default_sizes_are_mostly_small():
    sides = [max(render_image(name, "train", i)[0].size) for name in SPECIES_SORTED[:5]
             for i in range(20)]
    assert 48 <= min(sides) and max(sides) <= 400 * 1.2
    assert np.mean(np.array(sides) < 170) > 0.6


def test_cli_writes_and_reports(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["synth", str(out), "--classes", "2", "--train-per-class", "2",
                 "--val-per-class", "1", "--seed", "3", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert read_marker(out)["seed"] == 3 and len(discover(out).splits["train"]) == 4
    assert main(["synth", str(tmp_path / "bad"), "--classes", "40"]) == 2
    assert "between 2 and 25" in capsys.readouterr().err


def test_a_test_split_is_held_out_and_leaves_the_others_as_they_were(tmp_path, capsys):
    """`test_per_class` adds test/<Class>/* (discovered as the test split) without changing
    a single train or valid image; without it the folder is what it always was."""
    plain = small(tmp_path / "plain")
    held = small(tmp_path / "held", test_per_class=2)
    assert not (plain / "test").exists() and "test_per_class" not in read_marker(plain)
    layout = discover(held)
    assert len(layout.splits["test"]) == 2 * len(layout.classes)
    for split in ("train", "valid"):
        for p in (plain / split).rglob("*.*"):
            assert p.read_bytes() == (held / p.relative_to(plain)).read_bytes()
    assert main(["synth", str(tmp_path / "cli"), "--classes", "2", "--train-per-class", "2",
                 "--val-per-class", "1", "--test-per-class", "1", "--quiet"]) == 0
    assert len(discover(tmp_path / "cli").splits["test"]) == 2
    capsys.readouterr()
