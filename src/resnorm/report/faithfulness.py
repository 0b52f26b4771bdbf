"""The Grad-CAM section's numbers beyond the galleries: how faithful each gallery's maps are
(ROAD and the masked-image confidence, each against a random map) and how much of their mass
falls on the black corners a publisher's rotations left (resnorm.gradcam.faithfulness)."""
from __future__ import annotations

from resnorm.report.document import Para, Sub, Table
from resnorm.report.format import pct, signed_pts
from resnorm.statistics import t_interval, welch_difference

__all__ = ["faithfulness_blocks", "corner_blocks", "points_ci", "share_ci", "variants_of",
           "paired_ci"]


def variants_of(g: dict) -> list[dict]:
    """The galleries of gradcam.json: a study's `variants`, or a single run's one gallery."""
    return g.get("variants") or [{"run": g.get("run"), "norm": None, "val_acc": g.get("val_acc"),
                                  "faithfulness": g.get("faithfulness"),
                                  "corners": g.get("corners")}]


def points_ci(ci: tuple[float, float, float] | None) -> str:
    """'+19.6 (+15.1 to +24.0)': a change of probability in points with its 95 % interval."""
    if ci is None:
        return "—"
    mean, lo, hi = ci
    return f"{signed_pts(mean)} ({signed_pts(lo)} to {signed_pts(hi)})"


def share_ci(values: list[float]) -> str:
    """'12.0% (10.1–13.9%)': a mean share with its 95 % t interval."""
    ci = t_interval(values)
    if ci is None:
        return pct(values[0]) if values else "—"
    return f"{pct(ci[0])} ({100 * ci[1]:.1f}–{100 * ci[2]:.1f}%)"


def paired_ci(a: list[float], b: list[float | None]):
    """The mean of a − b over the images both have, with its 95 % t interval (or None)."""
    return t_interval([x - y for x, y in zip(a, b) if x is not None and y is not None])


def faithfulness_blocks(g: dict) -> list:
    scored = [v for v in variants_of(g) if (v.get("faithfulness") or {}).get("images")]
    if not scored:
        return []
    pcts = ", ".join(str(p) for p in scored[0]["faithfulness"].get("percentiles", []))
    rows = []
    for v in scored:
        f = v["faithfulness"]
        rows.append([v["run"], str(f["images"]),
                     points_ci(t_interval(f["road_gradcam"])),
                     points_ci(t_interval(f["road_random"])),
                     points_ci(paired_ci(f["road_gradcam"], f["road_random"])),
                     points_ci(t_interval(f["confidence_gradcam"])),
                     points_ci(t_interval(f["confidence_random"])),
                     points_ci(paired_ci(f["confidence_gradcam"], f["confidence_random"]))])
    blocks = [Sub("Faithfulness of the maps"),
              Para("Does the model use what the map points at? Measured on each gallery's "
                   "correctly classified images, on the true class's probability, with "
                   "pytorch-grad-cam's metrics. ROAD: the most relevant or the least relevant "
                   f"pixels (at the {pcts} percentiles of the map) are imputed from their "
                   "neighbours; the score is the mean of (drop after removing the least "
                   "relevant − drop after removing the most relevant) / 2, positive when the "
                   "map ranks pixels the way the model uses them. Masked image: the change of "
                   "the probability when the image is multiplied by the map (0: the map keeps "
                   "all the model needs). Each beside a random map of the same coarseness "
                   "(seeded)."),
              Table(["Gallery", "Images", "ROAD Grad-CAM", "ROAD random", "ROAD Grad-CAM − random",
                     "Masked Grad-CAM", "Masked random", "Masked Grad-CAM − random"], rows,
                    caption="Points of the true class's probability; mean over the images with "
                            "its 95 % t interval (differences paired by image).")]
    if len(scored) > 1:
        blocks.append(_across_variants(scored))
    return blocks


def _across_variants(scored: list[dict]) -> Table:
    """Each gallery's ROAD gain over random beside the first (the best run's): Welch."""
    gain = {v["run"]: [a - b for a, b in zip(v["faithfulness"]["road_gradcam"],
                                             v["faithfulness"]["road_random"])] for v in scored}
    first = scored[0]["run"]
    rows = [[v["run"], str(v.get("norm") or "—"), pct(v.get("val_acc")),
             points_ci(t_interval(gain[v["run"]])),
             "—" if v["run"] == first else points_ci(welch_difference(gain[v["run"]],
                                                                      gain[first]))]
            for v in scored]
    return Table(["Gallery", "Norm", "Val acc", "ROAD gain over random",
                  f"Difference from {first}"], rows,
                 caption="Across the norm variants: the ROAD gain of Grad-CAM over a random map "
                         "(paired t interval over the images) and its difference from the "
                         f"best run's ({first}; Welch 95 % interval). Exploratory: each model "
                         "is explained on its own correctly classified images, and the scores "
                         "are changes of probability, so a model that is unsure of its "
                         "answers moves less: read them beside the accuracy.")


def corner_blocks(g: dict) -> list:
    scored = [v for v in variants_of(g) if (v.get("corners") or {}).get("cam_share")]
    if not any((v.get("corners") or {}).get("images_with_corners") for v in variants_of(g)):
        return []
    first = (variants_of(g)[0].get("corners") or {})
    text = (f"{first.get('images_with_corners', 0):,} of the {first.get('total', 0):,} "
            "validation images have flat black corners (the fill a rotation or shift leaves; "
            "rule in the dataset audit). For up to 200 of them (a seeded sample), the share "
            "of each Grad-CAM map's mass (true class) that lies on those corners, beside the "
            "corners' share of the image, and the mass a map puts on the same region of a "
            "validation image without black corners (a seeded partner per image: maps may "
            "favour the border whatever it shows). More mass on the corners than on the same "
            "region of a plain image means the model looks at the black corners.")
    rows = []
    for v in scored:
        c = v["corners"]
        control = [x for x in c.get("control_share") or [] if x is not None]
        rows.append([v["run"], str(len(c["cam_share"])), share_ci(c["cam_share"]),
                     share_ci(c["area_share"]),
                     points_ci(paired_ci(c["cam_share"], c["area_share"])),
                     share_ci(control) if control else "—",
                     points_ci(paired_ci(c["cam_share"], c["control_share"]))
                     if control else "—"])
    return [Sub("Black corners"), Para(text),
            Table(["Gallery", "Images", "CAM mass on the corners", "Corners' share of the image",
                   "Mass − share (points)", "Same region, image without corners",
                   "Mass − same region (points)"], rows,
                  caption="Mean over the images with its 95 % t interval (the difference "
                          "paired by image).")]
