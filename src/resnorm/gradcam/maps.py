"""Computing maps with pytorch-grad-cam, and scoring them.

Uses the pytorch-grad-cam package (PyPI `grad-cam`), as the assignment asks: `GradCAM` with
the last stage's 2n conv layers as target layers (`model.gradcam_layers()`, 64x64 maps at
256 input; the package averages the per-layer maps) and one `ClassifierOutputTarget` per
image for its TRUE class.

On a dataset with object boxes (`boxes.json`, written by `resnorm synth`) a run is scored
with the pointing game: the share of maps whose maximum lies inside the object's box.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

# The pointing game scores at most this many validation images per run (a seeded sample),
# so that scoring every run of a big study stays a matter of seconds.
POINTING_SAMPLE = 1000
# A map's concentration: the share of its total mass in its brightest TOP_SHARE of pixels
# (TOP_SHARE for a flat map, 1.0 when all mass sits in that top share).
TOP_SHARE = 0.10


# --- running the model ------------------------------------------------------------------------

@contextmanager
def model_state_preserved(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every module's train/eval flag and every parameter's .grad on exit.

    pytorch-grad-cam calls `model.eval()` and leaves gradients on the parameters; a caller
    that hands us a model in training mode must get it back exactly as it was.
    """
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.grad) for p in model.parameters()]
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training  # not .train(): that would recurse over children
        for param, grad in grads:
            param.grad = grad


@contextmanager
def grad_cam(model: nn.Module, target_layers: Sequence[nn.Module] | None = None):
    """The package's GradCAM over `target_layers` (default `model.gradcam_layers()`).

    On exit its hooks are released through its own context-manager exit, and the model's
    modes and gradients are restored. The package's `__exit__` is called without the
    exception on purpose: it returns True for an IndexError, which would swallow the error.
    """
    from pytorch_grad_cam import GradCAM

    layers = list(target_layers) if target_layers is not None else model.gradcam_layers()
    with model_state_preserved(model):
        cam = GradCAM(model=model, target_layers=layers)
        try:
            yield cam
        finally:
            cam.__exit__(None, None, None)


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _batches(images: np.ndarray, labels: np.ndarray, mean, std, batch_size: int,
             device: torch.device):
    """In-order, unaugmented batches normalized exactly as training normalizes them."""
    from resnorm.data.stream import BatchStream

    return BatchStream(images, labels, batch_size, device=device, mean=mean, std=std,
                       shuffle=False, augment=False, drop_last=False)


def compute_cams(model: nn.Module, images: np.ndarray, targets: np.ndarray, mean, std,
                 batch_size: int = 64) -> np.ndarray:
    """Grad-CAM maps (N, S, S) in [0, 1] for `images` (uint8), each for its class in `targets`."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    size = images.shape[-1]
    if len(images) == 0:
        return np.zeros((0, size, size), np.float32)
    maps = []
    stream = _batches(images, np.asarray(targets, np.int64), mean, std, batch_size,
                      _model_device(model))
    # torch.enable_grad: Grad-CAM needs a backward pass even if a caller disabled autograd.
    with grad_cam(model) as cam, torch.enable_grad():
        for x, y in stream:
            maps.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in y]))
    return np.concatenate(maps).astype(np.float32)


# --- scoring maps -----------------------------------------------------------------------------

def concentration(cam: np.ndarray, top_share: float = TOP_SHARE) -> float:
    """Share of a map's total mass in its brightest `top_share` of pixels (nan if all zero)."""
    flat = np.sort(cam.ravel())[::-1]
    total = float(flat.sum())
    if total <= 0:
        return float("nan")
    k = max(1, int(round(top_share * flat.size)))
    return float(flat[:k].sum() / total)


def scale_box(box: Sequence[float], source_size: tuple[int, int], size: int,
              resize: str = "squash") -> tuple[float, float, float, float]:
    """A box [x0, y0, x1, y1] in source-image pixels mapped to the prepared S x S image.

    `source_size` is (width, height). "squash" stretches the whole image to S x S; "crop"
    scales the short side to S and takes the centre crop (the box may then leave the frame).
    """
    width, height = source_size
    x0, y0, x1, y1 = (float(v) for v in box)
    if resize == "squash":
        sx, sy = size / width, size / height
        return x0 * sx, y0 * sy, x1 * sx, y1 * sy
    if resize == "crop":
        scale = size / min(width, height)
        off_x, off_y = (width * scale - size) / 2, (height * scale - size) / 2
        return x0 * scale - off_x, y0 * scale - off_y, x1 * scale - off_x, y1 * scale - off_y
    raise ValueError(f"unknown resize mode {resize!r} (squash or crop)")


def pointing_hit(cam: np.ndarray, box: Sequence[float]) -> bool:
    """Pointing game: does the map's maximum (pixel centre) fall inside the box (map pixels)?"""
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    cx, cy = x + 0.5, y + 0.5
    x0, y0, x1, y1 = box
    return bool(x0 <= cx <= x1 and y0 <= cy <= y1)


# --- object boxes and the pointing game -------------------------------------------------------

def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file as decoded upright (EXIF orientation applied)."""
    from PIL import Image

    with Image.open(path) as im:  # reads the header only
        width, height = im.size
        orientation = im.getexif().get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def val_boxes(data, split: str = "val") -> dict[int, tuple[float, float, float, float]] | None:
    """Object boxes of a split's images in prepared-image pixels, by row; None without boxes.

    `boxes.json` gives [x0, y0, x1, y1] in source-image pixels keyed by 'split/Class/file';
    the prepared images are S x S, so each box is scaled by its source image's size (read
    from the image file's header) and the cache's resize mode.
    """
    root = Path(data.root)
    if not (root / "boxes.json").is_file():
        return None
    boxes = json.loads((root / "boxes.json").read_text())
    resize = data.manifest.get("params", {}).get("resize", "squash")
    out = {}
    for row, rel in enumerate(data.splits[split].files):
        if rel in boxes and (root / rel).is_file():
            out[row] = scale_box(boxes[rel], _image_size(root / rel), data.size, resize)
    return out


def pointing_game(model, data, boxes: dict[int, tuple], sample: int = POINTING_SAMPLE,
                  seed: int = 0) -> dict:
    """Pointing-game score of `model` over (a seeded sample of) the boxed validation images."""
    rows = np.array(sorted(boxes), dtype=np.int64)
    if len(rows) > sample:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=sample, replace=False))
    labels = np.asarray(data.splits["val"].labels)
    images = data.splits["val"].images
    cams = compute_cams(model, images[rows], labels[rows], data.mean, data.std)
    hits = sum(pointing_hit(m, boxes[int(r)]) for m, r in zip(cams, rows))
    size = images.shape[-1]
    # A map pointing at a uniformly random pixel hits a box with probability = its area share:
    # the chance level the score should be read against.
    chance = np.mean([box_area_share(boxes[int(r)], size) for r in rows]) if len(rows) else np.nan
    return {"hits": int(hits), "total": int(len(rows)),
            "score": float(hits / len(rows)) if len(rows) else float("nan"),
            "chance": float(chance)}


def box_area_share(box: Sequence[float], size: int) -> float:
    """Share of an S x S image covered by a box (clipped to the image)."""
    x0, y0, x1, y1 = (min(max(v, 0.0), size) for v in box)
    return max(0.0, x1 - x0) * max(0.0, y1 - y0) / (size * size)
