"""The duplicate audit: planted exact and near duplicates are found, distinct images are not."""
from __future__ import annotations

import itertools
import shutil

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageEnhance

from resnorm.data import load_cache, make_synthetic, prepare
from resnorm.data.audit import hamming_pairs


def test_planted_exact_and_near_duplicates_are_found(tmp_path):
    root = make_synthetic(tmp_path / "synth", class_names=["Hoopoe", "House-Crow", "Sarus-Crane"],
                          train_per_class=6, val_per_class=3, side_range=(64, 128))
    crow = root / "train" / "House-Crow"
    # exact: a train image copied into valid; near: another one re-encoded, shrunk, brightened
    shutil.copy(crow / "0000.jpg", root / "valid" / "House-Crow" / "copy.jpg")
    src = Image.open(root / "train" / "Hoopoe" / "0002.jpg").convert("RGB")
    near = ImageEnhance.Brightness(src.resize((src.width * 3 // 4, src.height * 3 // 4)))
    near.enhance(1.15).save(root / "valid" / "Hoopoe" / "resaved.jpg", quality=60)
    # a within-train exact duplicate
    shutil.copy(crow / "0001.jpg", crow / "dup.jpg")

    data = load_cache(prepare(root, size=64, out=tmp_path / "cache", workers=1, progress=False))
    audit = data.manifest["audit"]
    groups = sorted(sorted(g) for g in audit["exact_groups"])
    assert groups == [["train/House-Crow/0000.jpg", "valid/House-Crow/copy.jpg"],
                      ["train/House-Crow/0001.jpg", "train/House-Crow/dup.jpg"]]
    assert audit["exact_pair_counts"] == {"train/train": 1, "train/val": 1}
    near_pairs = {(a, b) for a, b, *_ in audit["near_pairs"]}
    assert near_pairs == {("train/Hoopoe/0002.jpg", "valid/Hoopoe/resaved.jpg")}
    assert audit["near_pair_counts"] == {"train/val": 1}
    assert audit["leaked_into_train"] == {"val": 2}  # split names; files keep their folder
    assert audit["leaked"] == {"val": ["valid/Hoopoe/resaved.jpg", "valid/House-Crow/copy.jpg"]}


def test_a_clean_synthetic_set_has_no_duplicates(synth_cache):
    audit = synth_cache.manifest["audit"]
    assert audit["exact_groups"] == [] and audit["near_pairs"] == []
    assert audit["leaked_into_train"] == {"val": 0}


def test_leak_is_summarised_on_the_console(tmp_path, capsys):
    root = make_synthetic(tmp_path / "synth", class_names=["Hoopoe", "House-Crow"],
                          train_per_class=3, val_per_class=2, side_range=(32, 48))
    shutil.copy(root / "train" / "Hoopoe" / "0000.jpg", root / "valid" / "Hoopoe" / "leak.jpg")
    prepare(root, size=16, out=tmp_path / "cache", workers=1, progress=True)
    out = capsys.readouterr().out
    assert "1 groups of exact duplicates" in out
    assert "1 of 5 val images (20.0 %) have an exact or near copy in train" in out


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=40), st.integers(0, 64))
def test_hamming_pairs_matches_brute_force(hashes, threshold):
    expected = [(i, j, bin(a ^ b).count("1"))
                for (i, a), (j, b) in itertools.combinations(enumerate(hashes), 2)
                if bin(a ^ b).count("1") <= threshold]
    assert sorted(hamming_pairs(hashes, threshold)) == expected


def test_hamming_pairs_across_blocks(monkeypatch):
    import resnorm.data.audit as audit_module
    monkeypatch.setattr(audit_module, "_BLOCK_ELEMENTS", 50)  # force many small blocks
    rng = np.random.default_rng(0)
    hashes = [int(h) for h in rng.integers(0, 2**63, 30)]
    hashes[25] = hashes[3] ^ 0b101
    assert (3, 25, 2) in hamming_pairs(hashes, 2)
