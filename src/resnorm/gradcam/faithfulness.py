"""How faithful a run's Grad-CAM maps are, and how much of them falls on black corners.

Real photos carry no boxes, so the pointing game cannot score them. Faithfulness asks the
model instead: remove what the map calls relevant and the true class's probability should
fall; keep only that and it should hold. Both come from pytorch-grad-cam's metrics, each map
against a random map of the same coarseness, scored on the true class's softmax probability:

- ROAD (Rong et al. 2022, `ROADCombined`): at each percentile p the most relevant (100-p) %
  of pixels are imputed from their neighbours (MoRF) or the least relevant ones are (LeRF);
  the score is the mean over percentiles of (LeRF change - MoRF change) / 2: positive when
  the map ranks pixels the way the model uses them. The imputation's noise is seeded.
- Confidence change on the CAM-masked image (`CamMultImageConfidenceChange`): the image
  multiplied by its map; near 0 when the map keeps what the model needs, negative otherwise.

The random map is uniform noise at the last stage's resolution (a quarter of the input side),
upsampled bilinearly and scaled to [0, 1], as pytorch-grad-cam upsamples its own maps: the
baseline differs from Grad-CAM in where it points, not in how blocky it is.

Corners: for the validation images with flat black corners (resnorm.data.audit), the share of
each map's mass on those corners beside the corners' share of the image.
"""
from __future__ import annotations

import numpy as np
import torch

from resnorm.gradcam.maps import compute_cams

__all__ = ["PERCENTILES", "CORNER_SAMPLE", "random_maps", "faithfulness", "corner_mass"]

PERCENTILES = (25, 50, 75)
CORNER_SAMPLE = 200  # validation images with black corners explained per run, at most


def random_maps(count: int, size: int, seed: int) -> np.ndarray:
    """(count, S, S) maps in [0, 1]: seeded noise at S/4 x S/4, upsampled bilinearly."""
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.random((count, max(1, size // 4), max(1, size // 4))).astype(np.float32)
    maps = [cv2.resize(c, (size, size), interpolation=cv2.INTER_LINEAR) for c in coarse]
    return np.stack([(m - m.min()) / max(float(m.max() - m.min()), 1e-7) for m in maps]
                    ) if maps else np.zeros((0, size, size), np.float32)


def _normalized(images: np.ndarray, mean, std, device) -> torch.Tensor:
    """The images as the model sees them (training's normalization), in one batch."""
    from resnorm.data.stream import BatchStream

    labels = np.zeros(len(images), np.int64)
    stream = BatchStream(images, labels, len(images), device=device, mean=mean, std=std,
                         shuffle=False, augment=False, drop_last=False)
    return next(iter(stream))[0]


def faithfulness(model, images: np.ndarray, labels: np.ndarray, cams: np.ndarray, mean, std,
                 seed: int = 0, percentiles=PERCENTILES) -> dict:
    """Per image: ROAD and the masked-image confidence change, of `cams` and of random maps.

    `images` uint8 (N, 3, S, S) correctly classified images, `labels` their true classes,
    `cams` their Grad-CAM maps (N, S, S). The model is used in eval mode, as it is given."""
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    if len(images) == 0:
        return {"images": 0, "percentiles": list(percentiles)}
    device = next(model.parameters()).device
    x = _normalized(images, mean, std, device)
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in labels]
    baseline = random_maps(len(images), images.shape[-1], seed)
    out = {"images": int(len(images)), "percentiles": list(percentiles)}
    road, change = ROADCombined(percentiles=list(percentiles)), CamMultImageConfidenceChange()
    for name, maps in (("gradcam", np.asarray(cams, np.float32)), ("random", baseline)):
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)  # the imputation's noise: the same for every run
            scores = road(x, maps, targets, model)
        out[f"road_{name}"] = [round(float(v), 5) for v in np.ravel(scores)]
        with torch.no_grad():
            deltas = change(x, maps, targets, model)
        out[f"confidence_{name}"] = [round(float(v), 5) for v in np.ravel(deltas)]
    return out


def corner_mass(model, images: np.ndarray, labels: np.ndarray, mean, std,
                sample: int = CORNER_SAMPLE, seed: int = 0) -> dict:
    """Over (a seeded sample of) the images with flat black corners: per image the share of
    its Grad-CAM mass (true class) on the corners and the corners' share of the image; and,
    as a control, the mass a map puts on the same region of an image without black corners
    (a seeded partner per image): Grad-CAM maps may favour the border whatever it shows."""
    from resnorm.data.audit import black_corner_mask, black_corners

    counts = black_corners(images)
    rng = np.random.default_rng(seed)
    rows, plain = np.flatnonzero(counts > 0), np.flatnonzero(counts == 0)
    found = int(len(rows))
    if len(rows) > sample:
        rows = np.sort(rng.choice(rows, size=sample, replace=False))
    partners = rng.choice(plain, size=len(rows), replace=len(plain) < len(rows)) if len(
        plain) else np.zeros(0, np.int64)
    out = {"images_with_corners": found, "total": int(len(images)), "explained": int(len(rows)),
           "cam_share": [], "area_share": [], "control_share": []}
    if not len(rows):
        return out
    cams = compute_cams(model, images[rows], labels[rows], mean, std)
    controls = compute_cams(model, images[partners], labels[partners], mean, std)
    for i, (row, cam) in enumerate(zip(rows, cams)):
        mask = black_corner_mask(images[row])
        total = float(cam.sum())
        if total > 0:
            out["cam_share"].append(round(float(cam[mask].sum()) / total, 5))
            out["area_share"].append(round(float(mask.mean()), 5))
            control = controls[i] if i < len(controls) else None
            out["control_share"].append(
                round(float(control[mask].sum()) / max(float(control.sum()), 1e-12), 5)
                if control is not None else None)
    return out
