"""Discovery of split/class folders: layout, ignored files, and one-line errors."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from resnorm.cli import main
from resnorm.data import discover
from resnorm.errors import UsageError


def touch_image(path: Path, colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), colour).save(path)
    return path


def make_tree(root: Path, splits=("train", "valid"), classes=("b", "a"), per_class=2) -> Path:
    for split in splits:
        for name in classes:
            for i in range(per_class):
                touch_image(root / split / name / f"{i}.png")
    return root


def test_classes_sorted_and_labels_follow_folder_names(tmp_path):
    layout = discover(make_tree(tmp_path, classes=("zeta", "Alpha", "mid")))
    assert layout.classes == ["Alpha", "mid", "zeta"]
    assert set(layout.splits) == {"train", "val"}
    for split, items in layout.splits.items():
        assert len(items) == 6
        for path, label in items:
            assert path.parent.name == layout.classes[label]


def test_val_folder_is_the_val_split_and_test_is_picked_up(tmp_path):
    layout = discover(make_tree(tmp_path, splits=("train", "val", "test")))
    assert set(layout.splits) == {"train", "val", "test"}
    assert layout.split_dirs["val"].name == "val"
    assert layout.relpath(layout.splits["val"][0][0]).startswith("val/")


def test_hidden_and_non_image_files_are_ignored_and_listed(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "train" / "a" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "train" / "a" / "notes.txt").write_text("hi")
    (tmp_path / "valid" / "readme.md").write_text("split-level file")
    touch_image(tmp_path / "train" / "a" / "UPPER.JPG")  # extensions are case-insensitive
    touch_image(tmp_path / "train" / "a" / "nested" / "deep.png")  # class folders recurse
    layout = discover(tmp_path)
    names = sorted(p.name for p in layout.ignored)
    assert names == [".DS_Store", "notes.txt", "readme.md"]
    train_names = {p.name for p, _ in layout.splits["train"]}
    assert {"UPPER.JPG", "deep.png"} <= train_names
    assert ".DS_Store" not in train_names


def test_fingerprint_changes_with_mtime_size_and_file_set(tmp_path):
    import os
    make_tree(tmp_path)
    first = discover(tmp_path).fingerprint()
    assert discover(tmp_path).fingerprint() == first
    path = tmp_path / "train" / "a" / "0.png"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = discover(tmp_path).fingerprint()
    assert second != first
    touch_image(tmp_path / "valid" / "b" / "new.png")
    assert discover(tmp_path).fingerprint() not in (first, second)


@pytest.mark.parametrize("splits, folders", [
    (("train", "valid"), {"train": "train", "val": "valid"}),              # Kaggle original
    (("train", "val"), {"train": "train", "val": "val"}),
    (("train", "validation"), {"train": "train", "val": "validation"}),
    (("train", "val", "test"), {"train": "train", "val": "val", "test": "test"}),
    (("train", "test"), {"train": "train", "val": "test"}),                # test/ validates
])
def test_every_layout_of_the_dataset_loads(tmp_path, splits, folders):
    layout = discover(make_tree(tmp_path, splits=splits))
    assert {s: d.name for s, d in layout.split_dirs.items()} == folders
    assert all(len(items) == 4 for items in layout.splits.values())


def test_file_names_inside_class_folders_are_free(tmp_path):
    """The public copy names every file after one species, whatever its folder."""
    for split in ("train", "val"):
        for name in ("Hoopoe", "House-Crow"):
            touch_image(tmp_path / split / name / "Brown-Headed-Barbet_12.jpg")
            touch_image(tmp_path / split / name / "IMG 0001 (copy).JPEG")
    layout = discover(tmp_path)
    assert [label for _, label in layout.splits["val"]] == [0, 0, 1, 1]


@pytest.mark.parametrize("setup, message", [
    (lambda r: None, "is not a folder"),
    (lambda r: make_tree(r, splits=("train",)), "no valid/, val/ or test/"),
    (lambda r: make_tree(r, splits=("valid",)), "has valid/ but no train/"),
    (lambda r: make_tree(r, splits=("train", "valid", "val")), "both valid/ and val/"),
    (lambda r: make_tree(r / "Birds_25", splits=("train", "val")), "point --data at .*Birds_25"),
    (lambda r: make_tree(r, splits=("Hoopoe", "Crow"), classes=(".",)),
     "holds class folders .* but no split folders"),
    (lambda r: (r / "stuff").mkdir(parents=True), "no train/ folder"),
])
def test_bad_roots_raise_one_line_usage_errors(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(UsageError, match=message) as info:
        discover(root)
    assert "\n" not in str(info.value)


def test_class_mismatch_names_the_classes_that_differ(tmp_path):
    make_tree(tmp_path, classes=("a", "b", "c"), splits=("train",))
    make_tree(tmp_path, classes=("a", "b", "d"), splits=("valid",))
    with pytest.raises(UsageError) as info:
        discover(tmp_path)
    message = str(info.value)
    assert "only in train: c" in message and "only in valid: d" in message
    assert "\n" not in message


def test_empty_class_folders_are_named(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "valid" / "a" / "0.png").unlink()
    (tmp_path / "valid" / "a" / "1.png").unlink()
    (tmp_path / "valid" / "a" / "notes.txt").write_text("no images here")
    with pytest.raises(UsageError, match=r"without images: valid/a"):
        discover(tmp_path)


def test_split_without_class_folders(tmp_path):
    make_tree(tmp_path, splits=("train",))
    (tmp_path / "valid").mkdir()
    with pytest.raises(UsageError, match="holds no class folders"):
        discover(tmp_path)


def test_cli_reports_discovery_errors_in_one_line_with_exit_2(tmp_path, capsys):
    make_tree(tmp_path, splits=("train",))
    assert main(["prepare", str(tmp_path), "--out", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no valid/" in err and "Traceback" not in err
