"""Drawing one synthetic image: a class-specific bird at a random position, scale and facing
over a cluttered background, then a random global style (brightness, contrast, gamma, colour
cast, noise) - the nuisance instance-style normalisation is meant to remove. Everything is
drawn from (seed, split, class name, index) alone: the same call draws the same pixels."""
from __future__ import annotations

import zlib

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageStat

from resnorm.data.species import SPECIES, Species

__all__ = ["SPLITS", "image_rng", "render_image"]

# a synthetic dataset's split folders, each with its own draws (test: only when asked for;
# its place here keeps the train and valid draws what they were)
SPLITS = ("train", "valid", "test")


def image_rng(seed: int, split: str, name: str, index: int,
              stream: int = 0) -> np.random.Generator:
    """The random stream of one image: drawn from (seed, split, class name, index) alone."""
    return np.random.default_rng([seed, SPLITS.index(split), zlib.crc32(name.encode()), index,
                                  stream])



def render_image(name: str, split: str, index: int, seed: int = 0,
                 side_range: tuple[int, int] = (48, 400), png_fraction: float = 0.2
                 ) -> tuple[Image.Image, list[int], str]:
    """Draw image `index` of class `name`: (RGB image, bird box [x0, y0, x1, y1], 'jpg'|'png')."""
    rng = image_rng(seed, split, name, index)
    lo, hi = side_range
    side = lo * (hi / lo) ** (rng.random() ** 2)      # skewed towards small images
    aspect = np.exp(rng.uniform(np.log(0.7), np.log(1.4)))
    w, h = max(lo, round(side * aspect ** 0.5)), max(lo, round(side / aspect ** 0.5))
    canvas = _background(w, h, rng)
    box = _draw_bird(canvas, SPECIES[name], rng)
    image = _global_style(canvas, rng)
    fmt = "png" if rng.random() < png_fraction else "jpg"
    return image, box, fmt


def _background(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """A smooth two-colour gradient with clutter: leaves, branches and random blobs."""
    c1, c2 = _scene_colour(rng), _scene_colour(rng)
    theta = rng.uniform(0, 2 * np.pi)
    # the gradient is linear, so a coarse grid resized up is exact and 16x cheaper
    gw, gh = w // 4 + 2, h // 4 + 2
    t = np.cos(theta) * np.arange(gw)[None, :] + np.sin(theta) * np.arange(gh)[:, None]
    t = ((t - t.min()) / max(float(np.ptp(t)), 1.0)).astype(np.float32)[..., None]
    coarse = Image.fromarray((c1 * (1 - t) + c2 * t).astype(np.uint8), "RGB")
    canvas = coarse.resize((w, h), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(canvas)
    size = min(w, h)
    for _ in range(rng.integers(2, 7)):   # blobs: foliage, rocks, out-of-focus shapes
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.3) * size
        draw.ellipse([cx - r, cy - r * rng.uniform(0.4, 1), cx + r, cy + r],
                     fill=_colour_tuple(_scene_colour(rng) if rng.random() < 0.7
                                        else rng.uniform(0, 255, 3)))
    for _ in range(rng.integers(0, 3)):   # branches
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(0.5, 1.5) * size
        draw.line([x0, y0, x0 + length * np.cos(angle), y0 + length * np.sin(angle)],
                  fill=_colour_tuple(rng.uniform([70, 45, 20], [140, 100, 60])),
                  width=max(1, int(rng.uniform(0.02, 0.06) * size)))
    return canvas


def _scene_colour(rng: np.random.Generator) -> np.ndarray:
    """A natural backdrop colour: foliage, sky, earth, water or stone."""
    palette = np.array([[70, 110, 50], [120, 150, 80], [150, 180, 210], [110, 90, 60],
                        [170, 150, 110], [80, 110, 130], [130, 130, 125], [200, 190, 160]],
                       dtype=np.float32)
    return np.clip(palette[rng.integers(len(palette))] + rng.normal(0, 20, 3), 0, 255)


def _colour_tuple(c) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.rint(c), 0, 255))


def _jitter(hex_colour: str, rng: np.random.Generator, sigma: float = 10.0):
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float32)
    return _colour_tuple(rgb + rng.normal(0, sigma, 3))


def _draw_bird(canvas: Image.Image, sp: Species, rng: np.random.Generator) -> list[int]:
    """Draw one bird of species `sp` at a random place and scale; return its pixel box."""
    shapes = _bird_shapes(sp, rng)
    # unit-size extent, then a body length that makes the bird span 45-90 % of the image
    us = [u for _, pts, *_ in shapes for u, _ in pts]
    vs = [v for _, pts, *_ in shapes for _, v in pts]
    w, h = canvas.size
    extent = max(max(us) - min(us), max(vs) - min(vs))
    length = rng.uniform(0.45, 0.9) * min(w, h) / extent
    facing = 1 if rng.random() < 0.5 else -1
    span_u, span_v = (max(us) - min(us)) * length, (max(vs) - min(vs)) * length
    left = rng.uniform(0, max(w - span_u, 0))
    top = rng.uniform(0, max(h - span_v, 0))
    origin_u = left - min(us) * length if facing > 0 else left + max(us) * length
    origin_v = top - min(vs) * length

    def to_px(pts):
        return [(origin_u + facing * u * length, origin_v + v * length) for u, v in pts]

    draw = ImageDraw.Draw(canvas)
    for kind, pts, colour, extra in shapes:
        px = to_px(pts)
        if kind == "line":
            draw.line(px, fill=colour, width=max(1, round(extra * length)))
        elif kind == "polygon":
            draw.polygon(px, fill=colour)
        else:  # ellipse given by two corners, optionally textured
            (x0, y0), (x1, y1) = px
            bbox = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
            draw.ellipse(bbox, fill=colour)
            if extra is not None:
                _texture(canvas, bbox, *extra, facing=facing, length=length)
    xs = [x for _, pts, *_ in shapes for x, _ in to_px(pts)]
    ys = [y for _, pts, *_ in shapes for _, y in to_px(pts)]
    return [max(0, int(np.floor(min(xs)))), max(0, int(np.floor(min(ys)))),
            min(w, int(np.ceil(max(xs)))), min(h, int(np.ceil(max(ys))))]


def _bird_shapes(sp: Species, rng: np.random.Generator) -> list[tuple]:
    """The bird as drawing primitives in body-length units, facing +u, v pointing down:
    (kind, points, fill colour, extra) in painting order."""
    j = lambda x: x * rng.uniform(0.85, 1.15)  # noqa: E731 - per-image shape jitter
    a, r, tl, bl = j(sp.aspect), j(sp.head_r), j(sp.tail_len), j(sp.beak_len)
    legs = j(sp.leg_len)
    hu, hv = 0.42, -a * 0.45 - sp.neck              # head centre
    shapes: list[tuple] = []
    # legs (behind the body), reaching below it
    for du in (-0.1, 0.08):
        shapes.append(("line", [(du, a * 0.3), (du + 0.03, a * 0.5 + legs)], _jitter(sp.legs, rng),
                       0.035))
    # tail: a wedge from the back of the body, tilted by tail_angle
    ang = np.radians(sp.tail_angle + rng.normal(0, 5))
    tip_u, tip_v = -0.42 - tl * np.cos(ang), -tl * np.sin(ang)
    spread = 0.06 + 0.12 * tl
    tail_colour = _jitter(sp.tail or sp.wing, rng)
    shapes.append(("polygon", [(-0.35, -a * 0.15), (-0.35, a * 0.2), (tip_u, tip_v + spread),
                               (tip_u, tip_v - spread)], tail_colour, None))
    if sp.tail_spots:  # eye spots along the tail
        spot = _jitter(sp.tail_spots, rng)
        for k in range(1, 5):
            f = k / 4.5
            cu, cv, rr = -0.42 + f * (tip_u + 0.42), f * tip_v, 0.03 + 0.05 * f * tl
            shapes.append(("ellipse", [(cu - rr, cv - rr), (cu + rr, cv + rr)], spot, None))
    if sp.neck:  # a neck joining head and body
        shapes.append(("line", [(0.3, -a * 0.2), (hu, hv)], _jitter(sp.head, rng), r * 0.9))
    # body, breast (lower front), wing (upper back, textured)
    shapes.append(("ellipse", [(-0.5, -a / 2), (0.5, a / 2)], _jitter(sp.body, rng), None))
    shapes.append(("ellipse", [(-0.1, -a * 0.1), (0.5, a / 2)], _jitter(sp.breast, rng), None))
    texture = None if sp.pattern == "plain" else (sp.pattern, _jitter(sp.pattern_colour, rng))
    shapes.append(("ellipse", [(-0.45, -a / 2), (0.22, a * 0.12)], _jitter(sp.wing, rng),
                   texture))
    return shapes + _head_shapes(sp, rng, (hu, hv), r, bl)


def _head_shapes(sp: Species, rng: np.random.Generator, centre: tuple[float, float], r: float,
                 bl: float) -> list[tuple]:
    """The crest, head, cap, beak, face patch and eye, drawn last (over the body)."""
    hu, hv = centre
    shapes: list[tuple] = []
    # crest behind the head
    if sp.crest:
        shapes.append(("polygon", [(hu - 0.2 * r, hv - 0.6 * r), (hu - 1.6 * r, hv - 1.7 * r),
                                   (hu + 0.3 * r, hv - 0.9 * r)], _jitter(sp.crest, rng), None))
    # head, cap, face patch, beak, eye
    shapes.append(("ellipse", [(hu - r, hv - r), (hu + r, hv + r)], _jitter(sp.head, rng), None))
    if sp.cap:
        shapes.append(("ellipse", [(hu - 0.8 * r, hv - r), (hu + 0.8 * r, hv - 0.1 * r)],
                       _jitter(sp.cap, rng), None))
    beak_w = sp.beak_w * r
    shapes.append(("polygon", [(hu + 0.7 * r, hv - beak_w / 2), (hu + 0.7 * r, hv + beak_w / 2),
                               (hu + r + bl, hv + 0.15 * r)], _jitter(sp.beak, rng), None))
    if sp.face:
        shapes.append(("ellipse", [(hu + 0.2 * r, hv - 0.3 * r), (hu + 0.85 * r, hv + 0.45 * r)],
                       _jitter(sp.face, rng), None))
    er = 0.2 * r
    shapes.append(("ellipse", [(hu + 0.35 * r - er, hv - 0.2 * r - er),
                               (hu + 0.35 * r + er, hv - 0.2 * r + er)], (15, 15, 15), None))
    return shapes


def _texture(canvas: Image.Image, bbox: list[float], kind: str, colour, *, facing: int,
             length: float) -> None:
    """Paint `kind` (bars, spots, streaks, stripes) in `colour` inside the ellipse `bbox`."""
    x0, y0, x1, y1 = (int(np.floor(bbox[0])), int(np.floor(bbox[1])),
                      int(np.ceil(bbox[2])) + 1, int(np.ceil(bbox[3])) + 1)
    w, h = x1 - x0, y1 - y0
    if w < 3 or h < 3:
        return
    inside = Image.new("L", (w, h), 0)
    ImageDraw.Draw(inside).ellipse([bbox[0] - x0, bbox[1] - y0, bbox[2] - x0, bbox[3] - y0],
                                   fill=255)
    pattern = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(pattern)
    period = max(3.0, 0.1 * length)
    thick = max(1, round(period * 0.4))
    if kind == "bars":          # bands across the wing
        for x in np.arange(period / 2, w, period):
            draw.line([x, 0, x, h], fill=255, width=thick)
    elif kind == "stripes":     # diagonal lines
        for x in np.arange(-h, w, period):
            draw.line([x, 0, x + facing * h, h] if facing > 0 else [x + h, 0, x, h], fill=255,
                      width=thick)
    elif kind == "spots":
        r = max(1.0, period * 0.22)
        for yy in np.arange(period / 2, h, period):
            for xx in np.arange(period / 2, w, period):
                draw.ellipse([xx - r, yy - r, xx + r, yy + r], fill=255)
    elif kind == "streaks":     # short dashes along the body
        for k, yy in enumerate(np.arange(period / 3, h, period * 0.6)):
            for xx in np.arange((k % 2) * period / 2, w, period):
                draw.line([xx, yy, xx + period * 0.5, yy], fill=255, width=max(1, thick // 2))
    mask = ImageChops.multiply(inside, pattern)
    canvas.paste(colour, (x0, y0), mask)


def _global_style(canvas: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Per-image photometric nuisance: contrast, brightness, colour cast, gamma, noise.

    All but the noise act on each channel value alone, so they are one lookup table."""
    mean = np.array(ImageStat.Stat(canvas).mean, dtype=np.float64)[:, None] / 255
    v = np.arange(256, dtype=np.float64)[None, :] / 255              # (1, 256)
    v = (v - mean) * rng.uniform(0.75, 1.25) + mean                  # contrast
    v = v * rng.uniform(0.75, 1.25) * rng.uniform(0.9, 1.1, (3, 1))  # brightness, cast
    v = np.clip(v, 0, 1) ** rng.uniform(0.85, 1.2)                   # gamma
    lut = np.rint(v * 255).astype(np.uint8).ravel().tolist()
    styled = np.asarray(canvas.point(lut), dtype=np.int16)
    sigma = rng.uniform(0.0, 6.0)                                    # sensor noise, in levels
    noisy = styled + (sigma * _noise(styled.shape, rng)).astype(np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


_NOISE_TILE = np.random.default_rng(12345).standard_normal((512, 512, 3), dtype=np.float32)


def _noise(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Unit Gaussian noise: a random window of a fixed tile (fast), fresh for huge images."""
    h, w, _ = shape
    th, tw, _ = _NOISE_TILE.shape
    if h > th or w > tw:
        return rng.standard_normal(shape, dtype=np.float32)
    y, x = rng.integers(0, th - h + 1), rng.integers(0, tw - w + 1)
    return _NOISE_TILE[y:y + h, x:x + w]
