"""Grad-CAM galleries: where a trained ResNet looks, for right and wrong validation images.

Uses the pytorch-grad-cam package (PyPI `grad-cam`), as the assignment asks: `GradCAM` with
the last stage's 2n conv layers as target layers (`model.gradcam_layers()`, 64x64 maps at
256 input; the package averages the per-layer maps) and one `ClassifierOutputTarget` per
image for its TRUE class. For each chosen class it draws one PNG grid (a row of correctly and
a row of incorrectly classified images, heatmaps superimposed) and saves the raw maps as .npy.

On a dataset with object boxes (`boxes.json`, written by `resnorm synth`) it also scores each
run with the pointing game: the share of maps whose maximum lies inside the object's box.

example:
  resnorm gradcam studies/demo                 # best run of the study by val accuracy
  resnorm gradcam --run studies/demo/runs/gn --classes "Cattle Egret,Indian Peacock"
"""
from __future__ import annotations

from resnorm.gradcam.select import (ASSIGNMENT_CLASSES, PER_CLASS, match_classes,
                                    normalize_class_name, select_examples)
from resnorm.gradcam.maps import (POINTING_SAMPLE, TOP_SHARE, box_area_share, compute_cams,
                                  concentration, grad_cam, model_state_preserved, pointing_game,
                                  pointing_hit, scale_box, val_boxes)
from resnorm.gradcam.gallery import ClassGallery, render_class_grid
from resnorm.gradcam.run import run_gradcam, study_gradcam
from resnorm.gradcam.cli import configure_parser, format_summary, run_cli

__all__ = [
    "ASSIGNMENT_CLASSES",
    "normalize_class_name",
    "match_classes",
    "select_examples",
    "model_state_preserved",
    "grad_cam",
    "compute_cams",
    "concentration",
    "scale_box",
    "pointing_hit",
    "run_gradcam",
    "study_gradcam",
    "format_summary",
    "configure_parser",
    "run_cli",
]
