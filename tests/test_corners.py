"""The black-corner audit: flat black corners (the fill of a publisher's rotations) are found
in a generated image, not in a normal one nor in a dark but textured one."""
from __future__ import annotations

import numpy as np

from resnorm.data.audit import black_corner_mask, black_corners, corner_audit


def _photo(size=32, seed=0, low=40):
    return np.random.default_rng(seed).integers(low, 256, (3, size, size), dtype=np.uint8)


def _rotated_fill(image: np.ndarray, leg: int, corners=(0, 1, 2, 3)) -> np.ndarray:
    """Black triangles with legs `leg` at the given corners (0 top left, 1 top right, 2
    bottom left, 3 bottom right), as a rotation leaves them."""
    out = image.copy()
    size = image.shape[-1]
    yy, xx = np.mgrid[:size, :size]
    for c in corners:
        y = yy if c < 2 else size - 1 - yy
        x = xx if c % 2 == 0 else size - 1 - xx
        out[:, (y + x) < leg] = np.random.default_rng(c).integers(0, 6, out[:, (y + x) < leg].shape)
    return out


def test_planted_black_corners_are_found_and_masked():
    normal = _photo()
    rotated = _rotated_fill(normal, 9)
    one = _rotated_fill(normal, 7, corners=(2,))
    assert black_corners(np.stack([normal, rotated, one])).tolist() == [0, 4, 1]
    mask = black_corner_mask(rotated)
    yy, xx = np.mgrid[:32, :32]
    planted = ((yy + xx) < 9) | ((31 - yy + xx) < 9) | ((yy + 31 - xx) < 9) | (
        (62 - yy - xx) < 9)
    assert np.array_equal(mask, planted)
    assert not black_corner_mask(normal).any()
    audit = corner_audit({"train": np.stack([normal, rotated]), "valid": one[None]})
    assert audit["images"] == {"train": 1, "valid": 1}
    assert audit["all_four"] == {"train": 1, "valid": 0}


def test_dark_textured_corners_are_not_flat_black():
    dark = _photo(low=0)  # pixels 0..255 everywhere: some dark, none flat over a triangle
    night = (_photo(seed=3) // 6 + 10).astype(np.uint8)  # a dark photo: 16..52
    assert black_corners(np.stack([dark, night])).tolist() == [0, 0]


def test_prepare_writes_the_corner_counts_into_the_manifest(synth_cache):
    corners = synth_cache.manifest["audit"]["black_corners"]
    assert set(corners["images"]) == set(synth_cache.splits)
    for split, data in synth_cache.splits.items():
        assert corners["total"][split] == len(data)
        assert corners["images"][split] == int((black_corners(data.images) > 0).sum())
