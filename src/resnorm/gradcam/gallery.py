"""Drawing the galleries: for one class, a PNG grid of a row of correctly and a row of
incorrectly classified images with their heatmaps superimposed, and the raw maps as .npy."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from resnorm.gradcam.maps import compute_cams, concentration, pointing_hit
from resnorm.gradcam.select import select_examples
from resnorm.plots import mpl_text


# --- one tile, one grid -----------------------------------------------------------------------

def _short(name: str, width: int = 24) -> str:
    """A class name for a tile title: cut to `width`, and '$' escaped so that matplotlib
    draws a folder name such as 'A$b$' as text, not as mathtext."""
    name = name if len(name) <= width else name[: width - 1] + "…"
    return mpl_text(name)


def _overlay(image_u8: np.ndarray, cam: np.ndarray, display: int) -> np.ndarray:
    """RGB uint8 (display x display) of the heatmap superimposed on the (3,S,S) image."""
    import cv2
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = np.transpose(image_u8, (1, 2, 0)).astype(np.float32) / 255.0
    if display != rgb.shape[0]:  # small training images: upsample so the tile is legible
        rgb = cv2.resize(rgb, (display, display), interpolation=cv2.INTER_LINEAR)
        cam = cv2.resize(cam, (display, display), interpolation=cv2.INTER_LINEAR)
    return show_cam_on_image(np.clip(rgb, 0, 1), np.clip(cam, 0, 1), use_rgb=True)


def render_class_grid(path: Path, title: str, rows: dict[str, list[dict]], per_class: int) -> None:
    """One PNG: a 'correct' row and an 'incorrect' row of overlays, tiles titled true/pred/conf."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    from matplotlib.patches import Rectangle

    cols = max(per_class, 1)
    fig = Figure(figsize=(1.9 * cols + 0.6, 4.8), layout="constrained")
    axes = fig.subplots(2, cols, squeeze=False)
    for r, (row_name, tiles) in enumerate(rows.items()):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(tiles):
                t = tiles[c]
                ax.imshow(t["overlay"])
                if t.get("display_box") is not None:  # the object's box (synthetic data)
                    x0, y0, x1, y1 = t["display_box"]
                    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.2,
                                           ls="--", edgecolor="white"))
                ax.set_title(f"true: {_short(t['true'])}\npred: {_short(t['pred'])}\n"
                             f"conf {t['confidence']:.0%}", fontsize=7)
            else:
                for side in ax.spines.values():
                    side.set_visible(False)
                if c == 0:
                    ax.text(0.5, 0.5, "none", ha="center", va="center", fontsize=9,
                            color="0.5", transform=ax.transAxes)
            if c == 0:
                ax.set_ylabel(f"{row_name} ({len(tiles)})", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=150)  # ~220 dpi across an A4 page in the PDF report


# --- one class's gallery ----------------------------------------------------------------------

@dataclass
class ClassGallery:
    """What was drawn for one class."""

    name: str
    index: int
    png: str
    correct: list[dict] = field(default_factory=list)
    incorrect: list[dict] = field(default_factory=list)
    note: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "index": self.index, "png": self.png,
                "correct": self.correct, "incorrect": self.incorrect, "note": self.note}


def gallery_slug(name: str) -> str:
    """The file stem of a class's gallery: 'Cattle Egret' -> 'cattle-egret'."""
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "class"


def _tile(i: int, cam: np.ndarray, labels, preds, probs, classes, boxes: dict | None) -> dict:
    """What the report and gradcam.json say about one explained image."""
    tile = {"val_index": int(i), "true": classes[int(labels[i])], "pred": classes[int(preds[i])],
            "confidence": float(probs[i, preds[i]]), "true_prob": float(probs[i, labels[i]]),
            "concentration": concentration(cam)}
    box = (boxes or {}).get(int(i))
    if box is not None:
        tile["box"] = [round(v, 2) for v in box]
        tile["pointing_hit"] = pointing_hit(cam, box)
    return tile


def _shortfall_note(picks: dict[str, np.ndarray], per_class: int) -> str:
    short = [f"{len(idx)} {kind} (of {per_class})" for kind, idx in picks.items()
             if len(idx) < per_class]
    return "only " + " and ".join(short) + " in the validation set" if short else ""


def class_gallery(model, data, class_index: int, preds, probs, per_class: int, seed: int,
             out_dir: Path, run_name: str, boxes: dict | None) -> ClassGallery:
    """Choose one class's images, explain them, save the raw maps and draw the grid."""
    val = data.splits["val"]
    labels = np.asarray(val.labels)
    name = data.classes[class_index]
    slug = gallery_slug(name)
    picks = dict(zip(("correct", "incorrect"),
                     select_examples(labels, preds, class_index, per_class, seed)))
    gallery = ClassGallery(name, class_index, f"{slug}.png", note=_shortfall_note(picks, per_class))
    maps = {}
    for kind, idx in picks.items():
        maps[kind] = compute_cams(model, val.images[idx], labels[idx], data.mean, data.std)
        np.save(out_dir / f"{slug}_{kind}.npy", maps[kind])
        setattr(gallery, kind, [_tile(i, m, labels, preds, probs, data.classes, boxes)
                                for i, m in zip(idx, maps[kind])])
    _draw_gallery(out_dir / gallery.png, mpl_text(f"{name} — Grad-CAM for the true class "
                                                  f"(model: {run_name})"),
                  val.images, picks, gallery, maps, per_class)
    return gallery


def _draw_gallery(path: Path, title: str, images: np.ndarray, picks: dict, gallery: ClassGallery,
                  maps: dict, per_class: int) -> None:
    size = images.shape[-1]
    display = max(size, 128)  # small training images are upsampled so tiles stay legible
    rows = {}
    for kind, idx in picks.items():
        rows[kind] = [{**tile, "overlay": _overlay(images[i], m, display),
                       "display_box": [v * display / size for v in tile["box"]]
                       if "box" in tile else None}
                      for i, m, tile in zip(idx, maps[kind], getattr(gallery, kind))]
    render_class_grid(path, title, rows, per_class)
