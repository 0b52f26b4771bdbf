"""Dataset audit: exact duplicates (same bytes) and near duplicates (same picture, re-saved).

A public copy of the Indian Birds dataset has 7,848 of its 8,413 val images byte-identical to
train images (and more near copies), which silently inflates validation accuracy. The audit
finds every image of a non-train split with an exact or near copy in train (`leaked`); runs
leave those out of every score and choice unless told to keep them (resnorm.data.cache).

Near duplicates are found in two steps. Candidates: pairs whose 64-bit dHashes differ in at
most `NEAR_BITS` bits (cheap for all pairs). Confirmed: the candidates whose 16x16 RGB
thumbnails correlate at `NEAR_CORRELATION` or more. dHash alone gives false positives on
flat or smooth images (their bits follow noise and the gradient direction); the correlation
separates them cleanly: re-encodes, resizes and brightness changes measured >= 0.96, unrelated
pairs <= 0.76 (1,300 synthetic images, 2026-11).

It also counts per split the images with flat black corners (`corner_audit`): the fill that
the publisher's rotations and shifts left in a public copy, a cue a model can learn.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

__all__ = ["audit", "hamming_pairs", "NEAR_BITS", "NEAR_CORRELATION", "black_corners",
           "black_corner_flags", "black_corner_mask", "corner_audit", "CORNER_LEG", "CORNER_BLACK"]

NEAR_BITS = 6
NEAR_CORRELATION = 0.9
_BLOCK_ELEMENTS = 4_000_000  # distances computed at once (~40 MB of temporaries)


def audit(files: list[str], splits: list[str], sha256: list[str], dhashes: list[int],
          thumbs: np.ndarray, bits: int = NEAR_BITS,
          correlation: float = NEAR_CORRELATION) -> dict:
    """Find duplicates among images named `files` (relative paths, one per decoded image) of
    the splits `splits` ('train', 'val', 'test': split names, not folder names).

    Returns a JSON-ready dict: exact duplicate groups, near-duplicate pairs (exact ones
    excluded) as [file_a, file_b, dhash_bits, correlation], pair counts per split combination,
    and per non-train split the images with an exact or near copy in train (`leaked`, in file
    order) and their number (`leaked_into_train`).
    """
    groups = _exact_groups(sha256)
    exact = [(g[a], g[b]) for g in groups for a in range(len(g)) for b in range(a + 1, len(g))]
    candidates = [(i, j, d) for i, j, d in hamming_pairs(dhashes, bits) if sha256[i] != sha256[j]]
    scores = _correlations(thumbs, [(i, j) for i, j, _ in candidates])
    near = [(i, j, d, c) for (i, j, d), c in zip(candidates, scores) if c >= correlation]
    leaked = _leaks(exact + [(i, j) for i, j, *_ in near], splits)
    return {
        "near_rule": f"dHash distance <= {bits} of 64 bits and 16x16 thumbnail correlation "
                     f">= {correlation}",
        "exact_groups": [[files[i] for i in g] for g in groups],
        "near_pairs": [[files[i], files[j], d, round(c, 4)] for i, j, d, c in near],
        "exact_pair_counts": _pair_counts(exact, splits),
        "near_pair_counts": _pair_counts([(i, j) for i, j, *_ in near], splits),
        "leaked": {s: [files[i] for i in rows] for s, rows in leaked.items()},
        "leaked_into_train": {s: len(rows) for s, rows in leaked.items()},
    }


def _exact_groups(hashes: list[str]) -> list[list[int]]:
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(hashes):
        by_hash[h].append(i)
    return [g for g in by_hash.values() if len(g) > 1]


def hamming_pairs(hashes: list[int], threshold: int) -> list[tuple[int, int, int]]:
    """All pairs i < j whose 64-bit hashes differ in at most `threshold` bits.

    Brute force in blocks with a vectorised popcount: 37,500 hashes take ~2 s, and unlike
    bucketing schemes it has no bad cases (e.g. many flat images sharing one hash)."""
    h = np.array(hashes, dtype=np.uint64)
    pairs = []
    rows_per_block = max(1, _BLOCK_ELEMENTS // max(1, len(h)))
    for start in range(0, len(h), rows_per_block):
        block = h[start:start + rows_per_block]
        # compare the block with itself and everything after it
        dist = np.bitwise_count(block[:, None] ^ h[None, start:])
        rows, cols = np.nonzero(dist <= threshold)
        keep = cols > rows  # i < j, each pair once
        for r, c in zip(rows[keep], cols[keep]):
            pairs.append((start + int(r), start + int(c), int(dist[r, c])))
    return pairs


def _correlations(thumbs: np.ndarray, pairs: list[tuple[int, int]]) -> list[float]:
    """Pearson correlation of the two thumbnails of each pair (invariant to brightness and
    contrast changes, sensitive to content)."""
    if not pairs:
        return []
    z = np.asarray(thumbs, dtype=np.float32)
    z = (z - z.mean(1, keepdims=True)) / (z.std(1, keepdims=True) + 1e-3)
    index = np.array(pairs)
    scores = []
    for start in range(0, len(index), 8192):  # bounded temporaries
        i, j = index[start:start + 8192].T
        scores += (z[i] * z[j]).mean(1).tolist()
    return scores


def _pair_counts(pairs, splits) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for i, j in pairs:
        counts["/".join(sorted((splits[i], splits[j])))] += 1
    return dict(sorted(counts.items()))


def _leaks(pairs, splits) -> dict[str, list[int]]:
    """Per non-train split: the images (sorted indices) with an exact or near copy in train."""
    leaked: dict[str, set[int]] = defaultdict(set)
    for i, j in pairs:
        for a, b in ((i, j), (j, i)):
            if splits[a] != "train" and splits[b] == "train":
                leaked[splits[a]].add(a)
    return {s: sorted(leaked[s]) for s in dict.fromkeys(splits) if s != "train"}


# --- black corners: the fill of the publisher's rotations -----------------------------------
# A public copy of the dataset was augmented before publication (rotations and shifts with a
# black fill), so many photos carry flat black triangles or strips at their corners: a cue a
# model may learn instead of the bird. A corner counts as flat black when every pixel of the
# right triangle with legs CORNER_LEG x the side, at that corner, has every channel at most
# CORNER_BLACK. Checked by eye on birds25 (2026-12): at 8 the flagged corners were fill, at 24
# dark natural backgrounds entered (3 of 9 one-corner cases viewed); val counts 441 of 1,500
# at 256 px and 444 at 32 px, so the rule does not depend on the prepared size. The region on
# the image is the near-black pixels connected to such corners (`black_corner_mask`).
CORNER_LEG = 0.06
CORNER_BLACK = 8



def _corner_triangles(darkest: np.ndarray, leg: float) -> np.ndarray:
    """(N, 4, T): each image's four corner triangles (top left, top right, bottom left,
    bottom right; T pixels with legs `leg` x the side) of a (N, S, S) array."""
    size = darkest.shape[-1]
    k = max(2, int(round(leg * size)))
    yy, xx = np.mgrid[:k, :k]
    triangle = (yy + xx) < k  # right triangle with its right angle at the corner
    corners = [darkest[:, :k, :k], darkest[:, :k, ::-1][:, :, :k],
               darkest[:, ::-1, :][:, :k, :k], darkest[:, ::-1, ::-1][:, :k, :k]]
    return np.stack([c[:, triangle] for c in corners], axis=1)


def black_corner_flags(images: np.ndarray, leg: float = CORNER_LEG,
                       black: int = CORNER_BLACK) -> np.ndarray:
    """Bool (N, 4): which corners of each uint8 (N, 3, S, S) image are flat black."""
    darkest = np.asarray(images).max(axis=1)  # a pixel is black when all its channels are
    return (_corner_triangles(darkest, leg) <= black).all(axis=2)


def black_corners(images: np.ndarray, leg: float = CORNER_LEG, black: int = CORNER_BLACK,
                  chunk: int = 2048) -> np.ndarray:
    """Per image of a uint8 (N, 3, S, S) array (memory-mapped is fine), how many of its four
    corners are flat black (read in chunks)."""
    return np.concatenate([black_corner_flags(images[i:i + chunk], leg, black).sum(axis=1)
                           for i in range(0, len(images), chunk)] or [np.zeros(0, np.int64)])


def black_corner_mask(image: np.ndarray, leg: float = CORNER_LEG,
                      black: int = CORNER_BLACK) -> np.ndarray:
    """Bool (S, S) mask of one uint8 (3, S, S) image's flat black corners: the near-black
    pixels connected (8-neighbours) to a flat black corner; all False when it has none."""
    from scipy import ndimage

    image = np.asarray(image)
    darkest = image.max(axis=0)
    size = darkest.shape[-1]
    regions, _ = ndimage.label(darkest <= black, structure=np.ones((3, 3)))
    mask = np.zeros((size, size), bool)
    corners = ((0, 0), (0, size - 1), (size - 1, 0), (size - 1, size - 1))
    for (y, x), flat in zip(corners, black_corner_flags(image[None], leg, black)[0]):
        if flat:
            mask |= regions == regions[y, x]
    return mask


def corner_audit(split_images: dict[str, np.ndarray]) -> dict:
    """The manifest's `black_corners`: per split, how many images have at least one flat black
    corner, and how many have all four; with the rule in words."""
    counts = {split: black_corners(images) for split, images in split_images.items()}
    return {"rule": f"a corner triangle with legs {CORNER_LEG:.0%} of the side whose pixels "
                    f"all have every channel at most {CORNER_BLACK} of 255",
            "images": {s: int((c > 0).sum()) for s, c in counts.items()},
            "all_four": {s: int((c == 4).sum()) for s, c in counts.items()},
            "total": {s: int(len(c)) for s, c in counts.items()}}
