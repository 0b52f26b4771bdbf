"""Decoding one file: every Pillow mode to RGB, EXIF orientation, JPEG draft, bad files."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnorm.data.decode import Decoded, Skipped, decode_file


def save(image: Image.Image, path: Path, fmt: str | None = None, **kwargs) -> Path:
    image.save(path, fmt, **kwargs)
    return path


def decoded_rgb(path: Path, size: int = 8, resize: str = "squash") -> np.ndarray:
    result = decode_file(path, size, resize)
    assert isinstance(result, Decoded), getattr(result, "reason", result)
    assert result.pixels.shape == (3, size, size) and result.pixels.dtype == np.uint8
    return result.pixels.reshape(3, -1).mean(1)  # mean colour


@pytest.mark.parametrize("name, make, expected", [
    ("l.png", lambda: Image.new("L", (20, 20), 100), (100, 100, 100)),
    ("one_bit.png", lambda: Image.new("1", (20, 20), 1), (255, 255, 255)),
    ("palette.png", lambda: Image.new("RGB", (20, 20), (10, 200, 30)).convert("P"),
     (10, 200, 30)),
    ("rgb.bmp", lambda: Image.new("RGB", (20, 20), (1, 2, 250)), (1, 2, 250)),
    ("cmyk.jpg", lambda: Image.new("CMYK", (20, 20), (0, 255, 255, 0)), (255, 0, 0)),
    ("opaque_rgba.png", lambda: Image.new("RGBA", (20, 20), (40, 80, 120, 255)),
     (40, 80, 120)),
    ("transparent_rgba.png", lambda: Image.new("RGBA", (20, 20), (0, 0, 0, 0)),
     (255, 255, 255)),
    ("transparent_la.png", lambda: Image.new("LA", (20, 20), (0, 0)), (255, 255, 255)),
    ("gif.gif", lambda: Image.new("RGB", (20, 20), (200, 100, 0)).convert("P"), (200, 100, 0)),
    ("webp.webp", lambda: Image.new("RGB", (20, 20), (90, 160, 220)), (90, 160, 220)),
])
def test_modes_convert_to_rgb(tmp_path, name, make, expected):
    mean = decoded_rgb(save(make(), tmp_path / name))
    tolerance = 12 if name.endswith((".jpg", ".webp")) else 1.5
    np.testing.assert_allclose(mean, expected, atol=tolerance)


def test_palette_transparency_becomes_white(tmp_path):
    image = Image.new("P", (20, 20), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 10, 20))           # left half: red, right half: index 0
    path = save(image, tmp_path / "p_trns.png", transparency=0)
    pixels = decode_file(path, 20).pixels
    assert tuple(pixels[:, 10, 2]) == (255, 0, 0)
    assert tuple(pixels[:, 10, 17]) == (255, 255, 255)  # transparent index, not black


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.full((20, 20), 32896, dtype=np.uint16)  # 50 % grey in 16 bits
    path = save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    np.testing.assert_allclose(decoded_rgb(path), 128, atol=1)


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40x20: left half red, right half blue. Orientation 6 = "rotate 90 CW to display",
    # so the displayed (portrait) image has red on top.
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(image, tmp_path / "rotated.jpg", quality=95, exif=exif.tobytes())
    pixels = decode_file(path, 16).pixels.astype(int)
    top, bottom = pixels[:, :6].reshape(3, -1).mean(1), pixels[:, -6:].reshape(3, -1).mean(1)
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


def test_large_jpeg_uses_draft_and_matches_a_full_decode(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize(
        (1600, 1200), Image.Resampling.BICUBIC)
    path = save(smooth, tmp_path / "photo.jpg", quality=92)
    calls = []
    from PIL import JpegImagePlugin
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = real_draft(self, mode, size)
        calls.append(self.size)
        return result
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    fast = decode_file(path, 64).pixels.astype(int)
    assert calls and calls[0][0] <= 1600 // 8 * 2  # decoded at a reduced scale
    full = np.asarray(Image.open(path).convert("RGB").resize((64, 64), Image.Resampling.BILINEAR))
    assert np.abs(fast - full.transpose(2, 0, 1)).mean() < 4


def test_crop_keeps_the_centre_squash_keeps_everything(tmp_path):
    image = Image.new("RGB", (90, 30), (0, 0, 255))      # wide: blue sides, red centre square
    image.paste((255, 0, 0), (30, 0, 60, 30))
    path = save(image, tmp_path / "wide.png")
    crop = decode_file(path, 12, "crop").pixels
    squash = decode_file(path, 12, "squash").pixels
    assert (crop[0] > 200).all() and (crop[2] < 50).all()           # all red
    assert squash[2, :, 0].min() > 200 and squash[0, :, 6].min() > 200  # blue edge, red middle


def test_same_bytes_same_hashes(tmp_path):
    image = Image.new("RGB", (30, 30), (5, 6, 7))
    a, b = save(image, tmp_path / "a.png"), save(image, tmp_path / "b.png")
    da, db = decode_file(a, 8), decode_file(b, 8)
    assert da.sha256 == db.sha256 and da.dhash == db.dhash


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG file that claims width x height pixels (its pixel data is one empty chunk)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


@pytest.mark.parametrize("name, content, reason", [
    ("empty.jpg", b"", "empty file"),
    ("text.png", b"this is not an image at all\n" * 4, "not an image"),
    ("random.jpg", bytes(np.random.default_rng(2).integers(0, 255, 500, dtype=np.uint8)),
     "not an image"),
    ("truncated.jpg", truncated_jpeg(), "truncated"),
    ("bomb.png", png_header_only(30_000, 30_000), "too many pixels"),
])
def test_bad_files_are_skipped_with_a_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    result = decode_file(path, 16)
    assert isinstance(result, Skipped)
    assert reason in result.reason, result.reason
    assert "\n" not in result.reason


def test_pixel_limit_is_configurable(tmp_path):
    path = save(Image.new("RGB", (50, 40)), tmp_path / "big.png")
    assert isinstance(decode_file(path, 16, max_pixels=2000), Decoded)
    skipped = decode_file(path, 16, max_pixels=1999)
    assert isinstance(skipped, Skipped) and "50x40" in skipped.reason


def test_unreadable_path(tmp_path):
    result = decode_file(tmp_path / "missing.jpg", 16)
    assert isinstance(result, Skipped) and result.reason.startswith("unreadable")
