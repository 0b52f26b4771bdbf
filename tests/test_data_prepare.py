"""`prepare`: the cache's contents and manifest, bad files, reuse/rebuild, atomic writes."""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnorm.cli import main
from resnorm.data import load_cache, prepare
from resnorm.data.cache import default_cache_dir
from resnorm.data.decode import decode_file
from resnorm.errors import UsageError

SIZE = 16


def write_dataset(root: Path, classes=("blue", "red"), per_class=(3, 2), seed=0) -> Path:
    """Tiny dataset of random-coloured images of varying size, PNG and JPEG."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "valid"), per_class):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = rng.integers(12, 40, 2)
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(pixels).save(folder / f"{i}.{ext}")
    return root


def build(root: Path, out: Path, **kwargs) -> Path:
    kwargs.setdefault("workers", 1)
    kwargs.setdefault("progress", False)
    return prepare(root, size=SIZE, out=out, **kwargs)


def test_cache_rows_match_their_sources_and_manifest(tmp_path):
    root = write_dataset(tmp_path / "data")
    data = load_cache(build(root, tmp_path / "cache"))
    assert data.classes == ["blue", "red"] and data.size == SIZE and not data.is_synthetic
    m = data.manifest
    assert m["counts"] == {"train": {"blue": 3, "red": 3}, "val": {"blue": 2, "red": 2}}
    assert m["splits"]["val"]["folder"] == "valid" and m["splits"]["val"]["images"] == \
        "val_images.u8"
    assert m["skipped"] == [] and m["params"]["resize"] == "squash"
    for name, split in data.splits.items():
        assert split.images.dtype == np.uint8 and split.images.shape == (len(split), 3, SIZE, SIZE)
        assert isinstance(split.images, np.memmap)
        assert split.labels.dtype == np.int64
        for row, (file, sha) in enumerate(m["sources"][name]):
            source = root / file
            assert file == split.files[row] and file.startswith(f"{m['splits'][name]['folder']}/")
            assert data.classes[split.labels[row]] == source.parent.name
            assert sha == hashlib.sha256(source.read_bytes()).hexdigest()
            np.testing.assert_array_equal(split.images[row], decode_file(source, SIZE).pixels)


def test_mean_and_std_are_those_of_the_train_pixels(tmp_path):
    data = load_cache(build(write_dataset(tmp_path / "data"), tmp_path / "cache"))
    train = np.asarray(data.splits["train"].images, dtype=np.float64) / 255
    np.testing.assert_allclose(data.mean, train.mean(axis=(0, 2, 3)), atol=1e-5)
    np.testing.assert_allclose(data.std, train.std(axis=(0, 2, 3)), atol=1e-5)


def test_parallel_decode_writes_the_same_cache(tmp_path):
    root = write_dataset(tmp_path / "data", per_class=(40, 8))
    one = load_cache(build(root, tmp_path / "one", workers=1))
    two = load_cache(build(root, tmp_path / "two", workers=2))
    assert two.manifest["workers"] == 2
    for name in one.splits:
        np.testing.assert_array_equal(one.splits[name].images, two.splits[name].images)
        np.testing.assert_array_equal(one.splits[name].labels, two.splits[name].labels)
    assert one.manifest["sources"] == two.manifest["sources"]
    assert one.mean == two.mean and one.std == two.std


def test_bad_files_are_skipped_listed_and_counted(tmp_path, capsys):
    root = write_dataset(tmp_path / "data")
    (root / "train" / "red" / "zero.jpg").write_bytes(b"")
    (root / "train" / "red" / "fake.png").write_text("not a png")
    good = (root / "train" / "blue" / "0.jpg").read_bytes()
    (root / "valid" / "blue" / "cut.jpg").write_bytes(good[: len(good) // 2])
    (root / "valid" / "blue" / "notes.txt").write_text("ignored, not skipped")

    assert main(["prepare", str(root), "--size", str(SIZE), "--out", str(tmp_path / "cache"),
                 "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "skipped 3 unusable files" in out and "valid/blue/cut.jpg" in out
    data = load_cache(tmp_path / "cache")
    skipped = {s["file"]: s["reason"] for s in data.manifest["skipped"]}
    assert set(skipped) == {"train/red/zero.jpg", "train/red/fake.png", "valid/blue/cut.jpg"}
    assert "empty" in skipped["train/red/zero.jpg"]
    assert "not an image" in skipped["train/red/fake.png"]
    assert "truncated" in skipped["valid/blue/cut.jpg"]
    assert data.manifest["ignored"] == ["valid/blue/notes.txt"]
    assert data.manifest["counts"]["train"] == {"blue": 3, "red": 3}
    assert len(data.splits["val"]) == 4 and len(data.splits["train"]) == 6
    # the rows after a skipped file moved up: every row still matches its source
    for row, file in enumerate(data.splits["train"].files):
        np.testing.assert_array_equal(data.splits["train"].images[row],
                                      decode_file(root / file, SIZE).pixels)


def test_a_split_with_no_usable_image_is_an_error(tmp_path):
    root = tmp_path / "data"
    for split in ("train", "valid"):
        (root / split / "a").mkdir(parents=True)
        (root / split / "a" / "x.jpg").write_bytes(b"")
    with pytest.raises(UsageError, match="no usable image in train"):
        build(root, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_unchanged_inputs_reuse_the_cache_quickly(tmp_path, capsys):
    root = write_dataset(tmp_path / "data")
    out = build(root, tmp_path / "cache", progress=True)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    capsys.readouterr()
    start = time.perf_counter()
    assert build(root, tmp_path / "cache", progress=True) == out
    assert time.perf_counter() - start < 1.0
    assert "reusing" in capsys.readouterr().out
    assert (out / "manifest.json").stat().st_mtime_ns == stamp


def test_touched_but_identical_files_are_reused_after_a_content_check(tmp_path):
    root = write_dataset(tmp_path / "data")
    out = build(root, tmp_path / "cache")
    created = load_cache(out).manifest["created"]
    path = root / "train" / "red" / "0.jpg"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 5 * 10**9))
    build(root, out)
    manifest = load_cache(out).manifest
    assert manifest["created"] == created                      # not rebuilt
    from resnorm.data import discover
    assert manifest["fingerprint"] == discover(root).fingerprint()  # remembered the new stat


@pytest.mark.parametrize("change", ["edit", "add", "remove"])
def test_changed_files_rebuild(tmp_path, change):
    root = write_dataset(tmp_path / "data")
    out = build(root, tmp_path / "cache")
    before = load_cache(out)
    target = root / "valid" / "red" / "0.jpg"
    if change == "edit":
        Image.new("RGB", (20, 20), (0, 255, 0)).save(target)
    elif change == "add":
        Image.new("RGB", (20, 20), (0, 255, 0)).save(root / "valid" / "red" / "extra.png")
    else:
        target.unlink()
    after = load_cache(build(root, out))
    assert after.manifest["created"] >= before.manifest["created"]
    expected = {"edit": 4, "add": 5, "remove": 3}[change]
    assert len(after.splits["val"]) == expected
    if change == "edit":
        row = after.splits["val"].files.index("valid/red/0.jpg")
        assert after.splits["val"].images[row, 1].mean() > 200  # the new green image


def test_other_size_or_mode_rebuilds_and_force_rebuilds(tmp_path):
    root = write_dataset(tmp_path / "data")
    out = build(root, tmp_path / "cache")
    assert load_cache(prepare(root, size=24, out=out, workers=1, progress=False)).size == 24
    assert load_cache(prepare(root, size=24, out=out, resize="crop", workers=1,
                              progress=False)).manifest["params"]["resize"] == "crop"
    created = load_cache(out).manifest["created"]
    time.sleep(1.1)  # `created` has one-second resolution
    prepare(root, size=24, out=out, resize="crop", workers=1, progress=False, force=True)
    assert load_cache(out).manifest["created"] > created


def test_default_location_is_keyed_by_root_size_and_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNORM_CACHE", str(tmp_path / "caches"))
    root = write_dataset(tmp_path / "data")
    out = prepare(root, size=SIZE, workers=1, progress=False)
    assert out == default_cache_dir(root.absolute(), SIZE, "squash")
    assert out.parent == tmp_path / "caches" and out.name.startswith("data-")
    assert out.name.endswith(f"-{SIZE}-squash")
    assert default_cache_dir(root, SIZE, "crop") != out
    assert default_cache_dir(tmp_path / "other" / "data", SIZE, "squash") != out


def test_refuses_to_overwrite_a_folder_that_is_not_a_cache(tmp_path):
    root = write_dataset(tmp_path / "data")
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(UsageError, match="not a resnorm cache"):
        build(root, out)
    assert (out / "thesis.tex").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"size": 30}, "divisible by 4"), ({"size": 4}, ">= 8"), ({"resize": "stretch"}, "resize"),
])
def test_bad_parameters(tmp_path, kwargs, message):
    root = write_dataset(tmp_path / "data")
    with pytest.raises(UsageError, match=message):
        prepare(root, **{"size": SIZE, **kwargs}, out=tmp_path / "c", progress=False)


def test_load_cache_rejects_incomplete_folders(tmp_path):
    out = build(write_dataset(tmp_path / "data"), tmp_path / "cache")
    with open(out / "train_images.u8", "r+b") as f:
        f.truncate(10)
    with pytest.raises(UsageError, match="wrong size"):
        load_cache(out)
    (out / "manifest.json").unlink()
    with pytest.raises(UsageError, match="not a complete resnorm cache"):
        load_cache(out)


def test_a_cache_of_an_older_format_is_rebuilt_not_misread(tmp_path):
    """Format 2 keyed the validation split "valid": such a cache is refused by load_cache and
    rebuilt by prepare (same folder), never read with the split under another name."""
    root = write_dataset(tmp_path / "data")
    out = build(root, tmp_path / "cache")
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("splits", "counts", "sources"):
        manifest[key]["valid"] = manifest[key].pop("val")
    (out / "val_images.u8").rename(out / "valid_images.u8")
    manifest.update(version=2)
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match="older resnorm"):
        load_cache(out)
    data = load_cache(build(root, out))
    assert data.manifest["version"] == 3 and set(data.splits) == {"train", "val"}
    assert not (out / "valid_images.u8").exists()


KILL_DURING_PREPARE = textwrap.dedent("""
    import importlib, os, signal, sys
    p = importlib.import_module("resnorm.data.prepare")  # the module, not the function
    real = p._assemble
    def die(*args, **kwargs):   # all images decoded, manifest not yet written
        os.kill(os.getpid(), signal.SIGKILL)
    p._assemble = die
    p.prepare(sys.argv[1], size=int(sys.argv[3]), out=sys.argv[2], workers=1, progress=False,
              force=True)
""")


def run_and_kill(root: Path, out: Path, size: int) -> int:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_PREPARE, str(root), str(out),
                           str(size)], env=env, capture_output=True, timeout=120)
    return proc.returncode


def test_a_killed_prepare_leaves_no_valid_looking_cache(tmp_path):
    root = write_dataset(tmp_path / "data")
    out = tmp_path / "cache"
    assert run_and_kill(root, out, SIZE) == -9
    assert not out.exists()
    with pytest.raises(UsageError):
        load_cache(out)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".cache.")]
    assert leftovers, "the killed run's staging folder should be there (hidden)"
    # the next run builds a good cache and removes the dead run's staging folder
    data = load_cache(build(root, out))
    assert len(data.splits["train"]) == 6
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cache.")]


def test_a_killed_rebuild_keeps_the_previous_cache_intact(tmp_path):
    root = write_dataset(tmp_path / "data")
    out = build(root, tmp_path / "cache")
    before = json.loads((out / "manifest.json").read_text())
    images = (out / "train_images.u8").read_bytes()
    assert run_and_kill(root, out, SIZE) == -9
    assert json.loads((out / "manifest.json").read_text()) == before
    assert (out / "train_images.u8").read_bytes() == images
    assert len(load_cache(out).splits["train"]) == 6


def test_an_error_during_prepare_cleans_up(tmp_path, monkeypatch):
    prep = importlib.import_module("resnorm.data.prepare")

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(prep, "_assemble", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        build(write_dataset(tmp_path / "data"), tmp_path / "cache")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_synthetic_datasets_are_labelled_in_the_cache(synth_cache):
    assert synth_cache.is_synthetic
    assert "SYNTHETIC" in synth_cache.manifest["synthetic_marker"]
    assert synth_cache.size == 32 and len(synth_cache.classes) == 5


def test_prepare_cli_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as info:
        main(["prepare", "--help"])
    assert info.value.code == 0
    assert "example:" in capsys.readouterr().out
