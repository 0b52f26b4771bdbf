"""`resnorm synth`: a synthetic stand-in for the 25-species Indian Birds dataset.

Same layout as the real data (`train/<Class>/*`, `valid/<Class>/*`, with `test_per_class` a
held-out `test/<Class>/*`, the 25 species folder names), so every command runs on it
unchanged; it is marked SYNTHETIC everywhere (the
`SYNTHETIC.txt` marker is copied into every cache's manifest).

Each image holds one drawn "bird" whose shape (body proportions, beak, tail, legs, crest),
colour pattern and texture (bars, spots, streaks on the wing) are specific to its class
(resnorm.data.species), drawn at a random position, scale and facing over a cluttered
background with a random global style (resnorm.data.drawing). The object's bounding box per
image goes to `boxes.json` to score Grad-CAM localisation.

Everything is drawn from (seed, split, class name, index) alone: the same call writes the same
bytes, and a class looks the same whichever other classes are generated with it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from resnorm.data.cache import publish, staging_dir
from resnorm.data.drawing import SPLITS, image_rng, render_image
from resnorm.data.species import GRADCAM_CLASSES, SPECIES
from resnorm.errors import UsageError

__all__ = ["make_synthetic", "SPECIES", "GRADCAM_CLASSES", "render_image",
           "configure_parser", "run_cli"]

GENERATOR_VERSION = 1  # bump when the images change, so old folders are regenerated
MARKER = "SYNTHETIC.txt"




# --- the dataset ----------------------------------------------------------------------------

def make_synthetic(out: str | os.PathLike, num_classes: int = 25, train_per_class: int = 40,
                   val_per_class: int = 12, seed: int = 0, *,
                   class_names: list[str] | None = None, side_range: tuple[int, int] = (48, 400),
                   png_fraction: float = 0.2, progress: bool = False,
                   test_per_class: int = 0) -> Path:
    """Write the synthetic dataset to `out` (or reuse it) and return `out`.

    `test_per_class` > 0 adds a test split (test/<Class>/*): images no run sees while it
    trains or chooses its epochs, so a study's verdicts rest on held-out images.

    Classes: `class_names` if given, else the first `num_classes` species in sorted order.
    Image sides range over `side_range`, skewed small (about 3/4 under 160 px for the
    default). Re-running with the same parameters returns at once; different parameters
    regenerate the folder (only if it is a synthetic dataset: anything else is refused).
    """
    names = _class_names(num_classes, class_names)
    _check_counts(train_per_class, val_per_class, test_per_class)
    lo, hi = side_range
    if not 16 <= lo <= hi:
        raise UsageError(f"side_range must satisfy 16 <= min <= max, got {side_range}")
    params = {"classes": names, "train_per_class": train_per_class,
              "val_per_class": val_per_class, "seed": seed, "side_range": [lo, hi],
              "png_fraction": png_fraction, "generator_version": GENERATOR_VERSION}
    if test_per_class:  # absent otherwise: a folder made before test splits stays valid
        params["test_per_class"] = test_per_class
    out = Path(out).expanduser()
    existing = read_marker(out)
    if existing == params:
        return out
    if existing is None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} exists and is not a synthetic dataset; refusing to overwrite")

    staging = staging_dir(out)
    try:
        counts = {"train": train_per_class, "valid": val_per_class, "test": test_per_class}
        boxes = _draw_splits(staging, names, counts, seed, (lo, hi), png_fraction, progress)
        (staging / "boxes.json").write_text(_boxes_json(boxes))
        (staging / MARKER).write_text(_marker_text(params))  # last: marks it complete
        publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _check_counts(train_per_class: int, val_per_class: int, test_per_class: int) -> None:
    for count, what in ((train_per_class, "train_per_class"), (val_per_class, "val_per_class")):
        if not isinstance(count, int) or count < 1:
            raise UsageError(f"{what} must be a positive integer, got {count!r}")
    if not isinstance(test_per_class, int) or test_per_class < 0:
        raise UsageError(f"test_per_class must be a whole number >= 0, got {test_per_class!r}")


def _draw_splits(staging: Path, names: list[str], counts: dict[str, int], seed: int,
                 sides: tuple[int, int], png_fraction: float, progress: bool) -> dict:
    """Draw and save every image of every split into `staging`; return their boxes."""
    boxes = {}
    bar = tqdm(total=sum(counts.values()) * len(names), desc="synth", unit="img",
               dynamic_ncols=True, mininterval=0.5, disable=not progress)
    for split in (s for s in SPLITS if counts[s]):
        for name in names:
            (staging / split / name).mkdir(parents=True)
            for i in range(counts[split]):
                image, box, fmt = render_image(name, split, i, seed, sides, png_fraction)
                rel = f"{split}/{name}/{i:04d}.{fmt}"
                _save(image, staging / rel, fmt, seed, split, name, i)
                boxes[rel] = box
                bar.update()
    bar.close()
    return boxes


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


def _save(image: Image.Image, path: Path, fmt: str, seed: int, split: str, name: str,
          index: int) -> None:
    if fmt == "png":
        image.save(path, "PNG", compress_level=1)
    else:
        quality = int(image_rng(seed, split, name, index, stream=1).integers(70, 96))
        image.save(path, "JPEG", quality=quality)


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
    parser.add_argument("--test-per-class", type=int, default=0, metavar="N",
                        help="held-out test images per class (default 0: no test split)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.epilog = (
        "example:\n"
        "  resnorm synth data/synth --classes 25 --train-per-class 40 --val-per-class 12\n"
        "  resnorm synth data/synth --classes 10 --train-per-class 60 --val-per-class 15 "
        "--test-per-class 15\n\n"
        "Writes OUT/train/<Species>/*, OUT/valid/<Species>/* (with --test-per-class also\n"
        "OUT/test/<Species>/*, held out) (JPEG and PNG, 48-400 px),\n"
        "OUT/boxes.json (bird box per image) and OUT/SYNTHETIC.txt. The images are drawings,\n"
        "not photos: a stand-in to run the whole pipeline without the real dataset."
    )


def run_cli(args: argparse.Namespace) -> int:
    out = make_synthetic(args.out, num_classes=args.classes,
                         train_per_class=args.train_per_class,
                         val_per_class=args.val_per_class, seed=args.seed,
                         test_per_class=args.test_per_class, progress=not args.quiet)
    print(out)
    return 0
