"""The report's Grad-CAM section states each gallery's faithfulness and corner mass with
intervals, and compares the galleries of several norm variants."""
from __future__ import annotations

import json

import numpy as np
import pytest

from resnorm.report import write_report
from resnorm.report.faithfulness import points_ci, share_ci
from resnorm.statistics import t_interval

from test_report import fake_gradcam, fake_study  # noqa: E402  (hand-made study, no training)


def _scores(seed: int, gain: float, n: int = 12) -> dict:
    rng = np.random.default_rng(seed)
    rand = rng.normal(0.0, 0.05, n)
    return {"images": n, "percentiles": [25, 50, 75],
            "road_gradcam": (rand + gain + rng.normal(0, 0.02, n)).round(5).tolist(),
            "road_random": rand.round(5).tolist(),
            "confidence_gradcam": rng.normal(-0.2, 0.05, n).round(5).tolist(),
            "confidence_random": rng.normal(-0.3, 0.05, n).round(5).tolist()}


def _corners(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    area = rng.uniform(0.05, 0.15, 10)
    return {"images_with_corners": 40, "total": 200, "explained": 10,
            "cam_share": (area * 0.5).round(5).tolist(), "area_share": area.round(5).tolist(),
            "control_share": (area * 0.4).round(5).tolist()}


def test_faithfulness_and_corners_per_gallery_with_intervals(tmp_path):
    study = fake_study(tmp_path / "study")
    fake_gradcam(study, "A")
    g = json.loads((study / "gradcam" / "gradcam.json").read_text())
    g["variants"] = [{"run": "bn", "norm": "bn", "dir": ".", "val_acc": 0.5,
                      "faithfulness": _scores(0, 0.2), "corners": _corners(0)},
                     {"run": "gn", "norm": "gn", "dir": "runs/gn", "val_acc": 0.45,
                      "faithfulness": _scores(1, 0.1), "corners": _corners(1)}]
    (study / "gradcam" / "gradcam.json").write_text(json.dumps(g))
    _, md = write_report(study)
    page = md.read_text()
    assert "Faithfulness of the maps" in page and "Black corners" in page
    bn = g["variants"][0]
    gain = [a - b for a, b in zip(bn["faithfulness"]["road_gradcam"],
                                  bn["faithfulness"]["road_random"])]
    assert points_ci(t_interval(gain)) in page  # the paired ROAD gain, with its interval
    assert share_ci(bn["corners"]["cam_share"]) in page
    assert share_ci(bn["corners"]["control_share"]) in page  # the same region, plain images
    assert "40 of the 200 validation images have flat black corners" in page
    assert "Difference from bn" in page  # the variants compared


@pytest.mark.parametrize("ci,text", [((0.196, 0.151, 0.24), "+19.6 (+15.1 to +24.0)"),
                                     (None, "—")])
def test_points_with_interval(ci, text):
    assert points_ci(ci) == text
