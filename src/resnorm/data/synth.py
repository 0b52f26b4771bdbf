"""`resnorm synth`: a synthetic stand-in for the 25-species Indian Birds dataset.

Same layout as the real data (`train/<Class>/*`, `valid/<Class>/*`, the 25 species folder
names), so every command runs on it unchanged; it is marked SYNTHETIC everywhere (the
`SYNTHETIC.txt` marker is copied into every cache's manifest).

Each image holds one drawn "bird" whose shape (body proportions, beak, tail, legs, crest),
colour pattern and texture (bars, spots, streaks on the wing) are specific to its class,
loosely after the real species, so similar species stay confusable (the two wagtails, the two
kingfishers, the two lapwings...). It sits at a random position, scale and facing over a
cluttered background, and each image gets a random global style - brightness, contrast,
gamma, colour cast - the nuisance instance-style normalisation is meant to remove. The
object's bounding box per image goes to `boxes.json` to score Grad-CAM localisation.

Everything is drawn from (seed, split, class name, index) alone: the same call writes the same
bytes, and a class looks the same whichever other classes are generated with it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageStat
from tqdm import tqdm

from resnorm.data.cache import publish, staging_dir
from resnorm.errors import UsageError

__all__ = ["make_synthetic", "SPECIES", "GRADCAM_CLASSES", "render_image",
           "configure_parser", "run_cli"]

GENERATOR_VERSION = 1  # bump when the images change, so old folders are regenerated
MARKER = "SYNTHETIC.txt"


@dataclass(frozen=True)
class Species:
    """How a class is drawn. Lengths are in units of the body length; colours are hex."""

    body: str
    wing: str
    breast: str
    head: str
    beak: str = "#3a3a3a"
    tail: str | None = None          # default: wing colour
    legs: str = "#5a5048"
    pattern: str = "plain"           # wing texture: plain, bars, spots, streaks, stripes
    pattern_colour: str = "#202020"
    aspect: float = 0.55             # body height / length
    head_r: float = 0.2
    beak_len: float = 0.2
    beak_w: float = 0.5              # beak base height, in head radii
    tail_len: float = 0.45
    tail_angle: float = 10.0         # degrees above horizontal
    leg_len: float = 0.15
    neck: float = 0.0                # extra head height
    cap: str | None = None           # top of the head
    face: str | None = None          # patch in front of the eye (wattle, eye stripe, mask)
    crest: str | None = None
    tail_spots: str | None = None    # eye spots on the tail (peacock)


SPECIES: dict[str, Species] = {
    "Asian-Green-Bee-Eater": Species("#3fae49", "#2f9a3c", "#7fd06a", "#c9a23a", beak="#1c1c1c",
                                     beak_len=0.38, beak_w=0.3, tail_len=0.95, tail_angle=0,
                                     face="#111111"),
    "Brown-Headed-Barbet": Species("#5d9b3c", "#4f8c32", "#8b6a4a", "#7a5434", beak="#e0906a",
                                   beak_w=0.7, beak_len=0.16, tail_len=0.3, pattern="streaks",
                                   pattern_colour="#b49c7c", head_r=0.25),
    "Cattle-Egret": Species("#f2f2ee", "#e9e9e4", "#ffffff", "#e8b86a", beak="#f2c21b",
                            beak_len=0.32, beak_w=0.35, leg_len=0.55, legs="#6b5d2a",
                            tail_len=0.2, neck=0.15, head_r=0.16),
    "Common-Kingfisher": Species("#1d8fbf", "#1a7fb0", "#e07b2a", "#1d8fbf", beak="#151515",
                                 beak_len=0.45, beak_w=0.4, head_r=0.27, tail_len=0.18,
                                 pattern="spots", pattern_colour="#6fd3ff", face="#e07b2a"),
    "Common-Myna": Species("#6b4a33", "#5d3f2b", "#7a563c", "#1b1b1b", beak="#f0c419",
                           face="#f0c419", beak_len=0.17, tail_len=0.4, pattern="bars",
                           pattern_colour="#f4f1ea", legs="#e2b81a"),
    "Common-Rosefinch": Species("#9b6b55", "#8a5e4a", "#d8405a", "#cc3a52", beak="#8a7060",
                                beak_len=0.11, beak_w=0.7, pattern="streaks",
                                pattern_colour="#5a3d2e"),
    "Common-Tailorbird": Species("#8aa04a", "#7c9442", "#f1eee0", "#a8b860", beak="#4a3a30",
                                 cap="#c8642a", beak_len=0.22, beak_w=0.3, tail_len=0.55,
                                 tail_angle=55, aspect=0.5),
    "Coppersmith-Barbet": Species("#4f9e3a", "#478f34", "#d9e59a", "#4f9e3a", beak="#262626",
                                  cap="#e0262b", face="#f2d21b", beak_len=0.15, beak_w=0.7,
                                  pattern="streaks", pattern_colour="#2f6e28", head_r=0.25,
                                  tail_len=0.25),
    "Forest-Wagtail": Species("#7d7456", "#6d6548", "#f0ece0", "#7d7456", pattern="bars",
                              pattern_colour="#1a1a1a", beak_len=0.15, tail_len=0.7,
                              tail_angle=0, face="#1a1a1a", aspect=0.45),
    "Gray-Wagtail": Species("#7b8690", "#6d7780", "#f2d530", "#7b8690", tail="#222222",
                            beak_len=0.15, tail_len=0.9, tail_angle=0, aspect=0.42,
                            legs="#c9a58c", face="#f0f0f0"),
    "Hoopoe": Species("#d9975a", "#222222", "#e3aa72", "#d9975a", beak="#262626",
                      pattern="bars", pattern_colour="#f5f0e8", crest="#d9975a",
                      beak_len=0.38, beak_w=0.3, tail="#222222", tail_len=0.4),
    "House-Crow": Species("#1d1d1d", "#151515", "#2a2a2a", "#7a7a7a", beak="#0d0d0d",
                          beak_len=0.25, beak_w=0.6, tail_len=0.45, head_r=0.22,
                          cap="#111111"),
    "Indian-Grey-Hornbill": Species("#8d8d86", "#7d7d76", "#b5b5ac", "#8d8d86",
                                    beak="#2a2a2a", beak_len=0.48, beak_w=0.9,
                                    tail_len=0.85, tail_angle=0, pattern="bars",
                                    pattern_colour="#3d3d3a", cap="#5a5a55"),
    "Indian-Peacock": Species("#1f4fb8", "#a07a4a", "#1a3f9a", "#2058c8", beak="#9a9a90",
                              tail="#2f8f4a", tail_len=1.5, tail_angle=5, crest="#2058c8",
                              tail_spots="#1a2a80", neck=0.12, leg_len=0.25,
                              pattern="stripes", pattern_colour="#5a4028"),
    "Indian-Pitta": Species("#4d9a3a", "#3f8a30", "#e9d39a", "#d8b36a", beak="#2a2a2a",
                            face="#111111", cap="#8b6a2a", tail="#2d2d2d", tail_len=0.14,
                            aspect=0.7, pattern="spots", pattern_colour="#42b6e8",
                            leg_len=0.25, legs="#d8a890"),
    "Indian-Roller": Species("#4b7fa8", "#1f5fb0", "#b07a6a", "#4b8fb8", beak="#2a2a2a",
                             pattern="bars", pattern_colour="#63d0f0", beak_len=0.2,
                             beak_w=0.6, tail="#2f78c0", tail_len=0.5),
    "Jungle-Babbler": Species("#8e8270", "#80745f", "#a39a88", "#8e8270", beak="#e8dca0",
                              pattern="streaks", pattern_colour="#5d5446", tail_len=0.65,
                              tail_angle=20, beak_len=0.15, beak_w=0.6),
    "Northern-Lapwing": Species("#234a3a", "#1f4235", "#f4f4f0", "#1d1d1d", beak="#1a1a1a",
                                crest="#1d1d1d", face="#f4f4f0", beak_len=0.14,
                                leg_len=0.35, legs="#b07a6a", tail_len=0.25),
    "Red-Wattled-Lapwing": Species("#a08a62", "#937d56", "#f4f4f0", "#161616", beak="#d2202a",
                                   face="#e0262b", beak_len=0.18, leg_len=0.5,
                                   legs="#e8c41a", tail_len=0.25),
    "Ruddy-Shelduck": Species("#d9782f", "#cc6c28", "#d47431", "#efd8b5", beak="#1d1d1d",
                              tail="#1b1b1b", aspect=0.48, beak_len=0.2, beak_w=0.55,
                              pattern="bars", pattern_colour="#f4f1ea", tail_len=0.2,
                              leg_len=0.12, neck=0.1),
    "Rufous-Treepie": Species("#b5652a", "#8b8b86", "#c77a3c", "#2a2320", beak="#1d1d1d",
                              tail="#6f6f6a", tail_len=1.25, tail_angle=-5, pattern="bars",
                              pattern_colour="#f0f0ea", beak_w=0.6),
    "Sarus-Crane": Species("#9aa3aa", "#8b949b", "#a9b1b7", "#d8303a", beak="#6a6a60",
                           beak_len=0.38, beak_w=0.35, leg_len=0.85, neck=0.35,
                           tail_len=0.25, cap="#b8c0c4", legs="#d88a8a", head_r=0.15),
    "White-Breasted-Kingfisher": Species("#1f8fd0", "#1a7fc0", "#f6f6f6", "#7a3a1a",
                                         beak="#e0262b", beak_len=0.5, beak_w=0.55,
                                         head_r=0.27, tail="#1f8fd0", tail_len=0.35,
                                         legs="#e0262b"),
    "White-Breasted-Waterhen": Species("#3a3d40", "#2f3235", "#f8f8f8", "#f8f8f8",
                                       beak="#e3d21b", cap="#2a2c2e", face="#e0262b",
                                       beak_len=0.18, beak_w=0.6, leg_len=0.45,
                                       legs="#d8c21a", tail="#c87a3a", tail_len=0.2,
                                       tail_angle=40),
    "White-Wagtail": Species("#7a7d80", "#1a1a1a", "#f6f6f6", "#f6f6f6", tail="#1a1a1a",
                             cap="#1a1a1a", beak_len=0.15, tail_len=0.95, tail_angle=0,
                             aspect=0.42, pattern="bars", pattern_colour="#f6f6f6"),
}
assert len(SPECIES) == 25 and list(SPECIES) == sorted(SPECIES)

GRADCAM_CLASSES = ("Cattle-Egret", "Coppersmith-Barbet", "Indian-Peacock", "Red-Wattled-Lapwing",
                   "Ruddy-Shelduck", "White-Breasted-Kingfisher", "White-Breasted-Waterhen")
SPLITS = ("train", "valid")


# --- the dataset ----------------------------------------------------------------------------

def make_synthetic(out: str | os.PathLike, num_classes: int = 25, train_per_class: int = 40,
                   val_per_class: int = 12, seed: int = 0, *,
                   class_names: list[str] | None = None, side_range: tuple[int, int] = (48, 400),
                   png_fraction: float = 0.2, progress: bool = False) -> Path:
    """Write the synthetic dataset to `out` (or reuse it) and return `out`.

    Classes: `class_names` if given, else the first `num_classes` species in sorted order.
    Image sides range over `side_range`, skewed small (about 3/4 under 160 px for the
    default). Re-running with the same parameters returns at once; different parameters
    regenerate the folder (only if it is a synthetic dataset: anything else is refused).
    """
    names = _class_names(num_classes, class_names)
    for count, what in ((train_per_class, "train_per_class"), (val_per_class, "val_per_class")):
        if not isinstance(count, int) or count < 1:
            raise UsageError(f"{what} must be a positive integer, got {count!r}")
    lo, hi = side_range
    if not 16 <= lo <= hi:
        raise UsageError(f"side_range must satisfy 16 <= min <= max, got {side_range}")
    params = {"classes": names, "train_per_class": train_per_class,
              "val_per_class": val_per_class, "seed": seed, "side_range": [lo, hi],
              "png_fraction": png_fraction, "generator_version": GENERATOR_VERSION}
    out = Path(out).expanduser()
    existing = read_marker(out)
    if existing == params:
        return out
    if existing is None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists and is not a synthetic dataset; refusing to overwrite")

    staging = staging_dir(out)
    try:
        counts = {"train": train_per_class, "valid": val_per_class}
        boxes = {}
        total = sum(counts.values()) * len(names)
        bar = tqdm(total=total, desc="synth", unit="img", dynamic_ncols=True, mininterval=0.5,
                   disable=not progress)
        for split in SPLITS:
            for name in names:
                (staging / split / name).mkdir(parents=True)
                for i in range(counts[split]):
                    image, box, fmt = render_image(name, split, i, seed, (lo, hi), png_fraction)
                    rel = f"{split}/{name}/{i:04d}.{fmt}"
                    _save(image, staging / rel, fmt, seed, split, name, i)
                    boxes[rel] = box
                    bar.update()
        bar.close()
        (staging / "boxes.json").write_text(_boxes_json(boxes))
        (staging / MARKER).write_text(_marker_text(params))  # last: marks it complete
        publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _boxes_json(boxes: dict[str, list[int]]) -> str:
    """One image per line: diff- and grep-friendly."""
    lines = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(boxes.items())]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def read_marker(out: Path) -> dict | None:
    """The parameters recorded in `out/SYNTHETIC.txt`, or None if there is no marker."""
    try:
        text = (Path(out) / MARKER).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("params: "):
            try:
                return json.loads(line[len("params: "):])
            except ValueError:
                return {}
    return {}


def _marker_text(params: dict) -> str:
    return (
        "SYNTHETIC DATASET - written by `resnorm synth`; these are drawings, not bird photos.\n"
        "Each image holds one class-specific drawn bird (shape, colour pattern, texture) at a\n"
        "random position and scale over a cluttered background, with a random global style\n"
        "(brightness, contrast, gamma, colour cast). boxes.json holds each bird's bounding box\n"
        "[x0, y0, x1, y1] in image pixels. Results on it say nothing about real birds.\n"
        f"params: {json.dumps(params)}\n"
    )


def _class_names(num_classes: int, class_names: list[str] | None) -> list[str]:
    if class_names is not None:
        unknown = [c for c in class_names if c not in SPECIES]
        if unknown:
            raise UsageError(f"unknown species {', '.join(unknown)}; choose from "
                             f"{', '.join(SPECIES)}")
        if len(set(class_names)) != len(class_names) or len(class_names) < 2:
            raise UsageError("class_names must hold at least 2 distinct species")
        return sorted(class_names)
    if not isinstance(num_classes, int) or not 2 <= num_classes <= len(SPECIES):
        raise UsageError(f"num_classes must be between 2 and {len(SPECIES)}, got {num_classes!r}")
    return list(SPECIES)[:num_classes]


def _rng(seed: int, split: str, name: str, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split), zlib.crc32(name.encode()), index,
                                  stream])


def _save(image: Image.Image, path: Path, fmt: str, seed: int, split: str, name: str,
          index: int) -> None:
    if fmt == "png":
        image.save(path, "PNG", compress_level=1)
    else:
        quality = int(_rng(seed, split, name, index, stream=1).integers(70, 96))
        image.save(path, "JPEG", quality=quality)


# --- drawing --------------------------------------------------------------------------------

def render_image(name: str, split: str, index: int, seed: int = 0,
                 side_range: tuple[int, int] = (48, 400), png_fraction: float = 0.2
                 ) -> tuple[Image.Image, list[int], str]:
    """Draw image `index` of class `name`: (RGB image, bird box [x0, y0, x1, y1], 'jpg'|'png')."""
    rng = _rng(seed, split, name, index)
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


# --- command line ---------------------------------------------------------------------------

def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="folder to write (reused if it already "
                        "holds a synthetic dataset with the same parameters)")
    parser.add_argument("--classes", type=int, default=25, metavar="K",
                        help="number of classes: the first K species in sorted order "
                        "(default 25)")
    parser.add_argument("--train-per-class", type=int, default=40, metavar="N",
                        help="train images per class (default 40)")
    parser.add_argument("--val-per-class", type=int, default=12, metavar="N",
                        help="validation images per class (default 12)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.epilog = (
        "example:\n"
        "  resnorm synth data/synth --classes 25 --train-per-class 40 --val-per-class 12\n\n"
        "Writes OUT/train/<Species>/*, OUT/valid/<Species>/* (JPEG and PNG, 48-400 px),\n"
        "OUT/boxes.json (bird box per image) and OUT/SYNTHETIC.txt. The images are drawings,\n"
        "not photos: a stand-in to run the whole pipeline without the real dataset."
    )


def run_cli(args: argparse.Namespace) -> int:
    out = make_synthetic(args.out, num_classes=args.classes,
                         train_per_class=args.train_per_class,
                         val_per_class=args.val_per_class, seed=args.seed,
                         progress=not args.quiet)
    print(out)
    return 0
