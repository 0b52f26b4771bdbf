"""The 15 corruptions of Hendrycks & Dietterich (ICLR 2019), from a maintained library.

    noise    gaussian_noise, shot_noise, impulse_noise
    blur     defocus_blur, glass_blur, motion_blur, zoom_blur
    weather  snow, frost, fog
    digital  brightness, contrast, elastic_transform, pixelate, jpeg_compression

Each at severities 1-5. The pixels come from `imagecorruptions-imaug` (the imaug project's
maintained fork of bethgelab's `imagecorruptions`, which packages the ImageNet-C code): the
original `imagecorruptions` 1.1.2 calls scikit-image's removed `multichannel` argument and
fails on scikit-image >= 0.19; the fork passes `channel_axis`, seeds glass blur's numba loop
and runs on numpy 2 (checked: numpy 2.4, scikit-image 0.26). Not hand-written, and not
albumentations or kornia: their noise, blur, fog and snow transforms have their own
parameters, not ImageNet-C's five severities, so their numbers would not be comparable with
the benchmark's (docs/robustness.md).

The parameters are ImageNet-C's, calibrated for 224 px images; here they are applied at the
model's input size (the prepared cache's S x S pixels, as CIFAR-10-C applies its corruptions
at 32 x 32). Blur radii and fog scales are in pixels, so at 32 px those corruptions are
harsher than the same severity at 224 px; every model of a study sees the same images, so
comparisons between norms are unaffected. The library refuses images under 32 px.

Every image's randomness is seeded from (set seed, split, corruption, severity, row), so a
corrupted image does not depend on the order, the process or the machine that made it.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util

import numpy as np

from resnorm.errors import UsageError

__all__ = ["CORRUPTIONS", "GROUPS", "SEVERITIES", "MIN_SIZE", "LIBRARY", "INSTALL_HINT",
           "group_of", "library_version", "check_library", "image_seed", "corrupt_image"]

GROUPS = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog"),
    "digital": ("brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
CORRUPTIONS = tuple(name for names in GROUPS.values() for name in names)
SEVERITIES = (1, 2, 3, 4, 5)
MIN_SIZE = 32                       # the library refuses smaller images
LIBRARY = "imagecorruptions-imaug"  # the PyPI distribution (module: imagecorruptions)
INSTALL_HINT = "pip install 'resnorm[robustness]'"
# corruptions whose functions take a seed of their own (the others draw from np.random)
_OWN_SEED = ("glass_blur", "impulse_noise")


def group_of(name: str) -> str:
    """The benchmark's group of a corruption ('noise', 'blur', 'weather', 'digital')."""
    return next(g for g, names in GROUPS.items() if name in names)


def library_version() -> str | None:
    """The installed library's version (None when it is not installed)."""
    try:
        return importlib.metadata.version(LIBRARY)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_library() -> str:
    """The library's version; a one-line UsageError saying how to install it when absent."""
    version = library_version()
    if version is None or importlib.util.find_spec("imagecorruptions") is None:
        raise UsageError(f"robustness: the corruptions need {LIBRARY}: {INSTALL_HINT}")
    return version


def image_seed(seed: int, split: str, corruption: str, severity: int, row: int) -> int:
    """The seed of one corrupted image: a function of what it is, not of when it was made."""
    words = [seed, sum(split.encode()), CORRUPTIONS.index(corruption), severity, row]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def corrupt_image(image: np.ndarray, corruption: str, severity: int, seed: int) -> np.ndarray:
    """`image` (uint8 (3, S, S), the cache's layout) corrupted, the same layout back."""
    from imagecorruptions import corrupt

    np.random.seed(seed)  # the library draws from numpy's global generator
    extra = {"seed": seed} if corruption in _OWN_SEED else {}
    hwc = np.ascontiguousarray(image.transpose(1, 2, 0))
    out = corrupt(hwc, severity=severity, corruption_name=corruption, **extra)
    return np.ascontiguousarray(np.asarray(out, dtype=np.uint8).transpose(2, 0, 1))
