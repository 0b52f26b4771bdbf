"""Decode one image file into a uint8 (3, S, S) array, or say why it cannot be used.

Runs in `prepare`'s worker processes, so it imports only numpy and Pillow (no torch).
"""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = ["Decoded", "Skipped", "decode_file", "dhash", "thumbnail", "to_rgb", "MAX_PIXELS",
           "RESIZE_MODES"]

# Decompression-bomb guard: Pillow's own limit (89.5 Mpx, ~ a 9500 x 9500 image). A file that
# claims more pixels is skipped before its pixels are decoded.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
RESIZE_MODES = ("squash", "crop")
ORIENTATION = 0x0112  # EXIF tag
RESAMPLE = Image.Resampling.BILINEAR  # antialiased when shrinking, like torchvision's Resize

# Truncated files must fail loudly, not decode with a grey bottom half.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass
class Decoded:
    """A decoded image: pixels (3, S, S), content hash, perceptual hashes, channel sums."""

    pixels: np.ndarray         # (3, S, S) uint8, a transposed view of the (S, S, 3) image
    sha256: str
    dhash: int
    thumb: np.ndarray          # (768,) uint8, 16x16 RGB thumbnail (near-duplicate check)
    channel_sum: np.ndarray    # (3,) int64, sum of pixel values per channel
    channel_sumsq: np.ndarray  # (3,) int64, sum of squared pixel values per channel


@dataclass
class Skipped:
    """A file that cannot be used, why, and its content hash (None if it could not be read)."""

    reason: str
    sha256: str | None


def decode_file(path: str | Path, size: int, resize: str = "squash",
                max_pixels: int = MAX_PIXELS) -> Decoded | Skipped:
    """Decode `path` to a (3, size, size) uint8 array, or say why it cannot be used."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return Skipped(f"unreadable: {exc.strerror or exc}", None)
    sha = hashlib.sha256(data).hexdigest()
    image = _decode(data, size, resize, max_pixels) if data else "empty file (0 bytes)"
    if isinstance(image, str):
        return Skipped(image, sha)
    # channel sums from the 768-bin histogram: exact integers, no float pass over the pixels
    counts = np.array(image.histogram(), dtype=np.int64).reshape(3, 256)
    levels = np.arange(256, dtype=np.int64)
    return Decoded(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1), sha, dhash(image),
                   thumbnail(image), counts @ levels, counts @ (levels * levels))


def _decode(data: bytes, size: int, resize: str, max_pixels: int) -> Image.Image | str:
    """The RGB size x size image, or the reason it cannot be made."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _resize(to_rgb(_load(io.BytesIO(data), size, max_pixels)), size, resize)
    except _TooLarge as exc:
        return str(exc)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return f"too many pixels (decompression-bomb guard): {_one_line(exc, name=False)}"
    except UnidentifiedImageError:
        return "not an image (Pillow cannot identify it)"
    except (OSError, SyntaxError, EOFError) as exc:
        return f"corrupt or truncated: {_one_line(exc)}"
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop a 37k-image run
        return f"cannot decode: {_one_line(exc)}"


class _TooLarge(Exception):
    pass


def _load(fp: io.BytesIO, size: int, max_pixels: int) -> Image.Image:
    image = Image.open(fp)
    width, height = image.size
    if width * height > max_pixels:
        raise _TooLarge(f"too many pixels: {width}x{height} > {max_pixels:,} "
                        f"(decompression-bomb guard)")
    if image.format == "JPEG":
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the result still covers size x size:
        # most of the speed of `prepare` on photo-sized JPEGs comes from here.
        image.draft("RGB", (size, size))
    image.load()
    return _exif_transpose(image)


def _exif_transpose(image: Image.Image) -> Image.Image:
    try:
        if image.getexif().get(ORIENTATION, 1) == 1:
            return image  # exif_transpose would return a copy
        return ImageOps.exif_transpose(image)
    except Exception:  # a malformed EXIF block should not cost us an otherwise good image
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparent pixels become white."""
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        image = _high_depth_to_l(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    # Pillow's convert() clips 16-bit values at 255 (a white image); scale the range instead.
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or values.max(initial=0) > 255:
        values = values / 257.0
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")


def _resize(image: Image.Image, size: int, mode: str) -> Image.Image:
    if mode == "squash":
        return image.resize((size, size), RESAMPLE, reducing_gap=3.0)
    if mode == "crop":  # keep the aspect ratio, cut the centre square of the longer side
        return ImageOps.fit(image, (size, size), RESAMPLE)
    raise ValueError(f"resize must be one of {RESIZE_MODES}, got {mode!r}")


def dhash(image: Image.Image) -> int:
    """64-bit difference hash: is each pixel of a 9x8 greyscale thumbnail brighter than its
    right neighbour? Robust to re-encoding, resizing and small colour changes."""
    grey = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def thumbnail(image: Image.Image, side: int = 16) -> np.ndarray:
    """The image as side x side RGB, flattened: enough to confirm a near duplicate."""
    small = image.resize((side, side), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8).ravel()


def _one_line(exc: BaseException, name: bool = True) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(exc).__name__}: {text}" if name and text else text or type(exc).__name__
