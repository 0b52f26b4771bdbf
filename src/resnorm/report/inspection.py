"""Looking inside the models: the learned gates of BIN runs (from their best checkpoints) and
the Grad-CAM results `resnorm gradcam` left in STUDY/gradcam/."""
from __future__ import annotations

import json
from pathlib import Path

from resnorm.norms import norm_info
from resnorm.plots import mpl_text
from resnorm.report.document import Bold, Img, Para, Section, Sub, Table
from resnorm.report.faithfulness import corner_blocks, faithfulness_blocks
from resnorm.report.figures import plot_gates, slug
from resnorm.report.format import metric_label, num, pct, val
from resnorm.report.gallery_data import gallery_tiles, hit_counts, mean_ci, proportion_ci
from resnorm.report.roles import norm_kind
from resnorm.rundir import BEST_FILE, RunDir
from resnorm.study.execution.records import RunRecord, read_state
from resnorm.studydir import StudyDir


def bin_gates(run: RunRecord) -> list[dict]:
    """Per BIN layer of the run's best checkpoint: gate statistics (rho per channel)."""
    from resnorm.norms import BatchInstanceNorm2d
    from resnorm.train import load_run

    model = load_run(run.dir, device="cpu").model
    layers = []
    for name, module in model.named_modules():
        if isinstance(module, BatchInstanceNorm2d):
            g = module.gate.detach().float().cpu()
            layers.append({"layer": name, "channels": g.numel(), "mean": float(g.mean()),
                           "min": float(g.min()), "max": float(g.max()),
                           "below_half": int((g < 0.5).sum())})
    return layers


def section_gates(runs: list[RunRecord], assets: Path) -> tuple[Section, dict | None]:
    s = Section("BIN gates")
    s.add(Para("Each BIN layer mixes BN and IN per channel: "
               "y = γ(ρ·BN(x) + (1−ρ)·IN(x)) + β, "
               "with ρ starting at 1 (pure BN) and clamped to [0, 1]. 1 − ρ is how far a "
               "channel moved toward IN."))
    bins = [r for r in runs if r.ok and norm_info(norm_kind(r)).gated
            and RunDir(r.dir).has(BEST_FILE)]
    if not bins:
        s.add(Para("No finished BIN run in this study yet."))
        return s, None
    summary = None
    for r in bins:
        layers = bin_gates(r)
        if not layers:
            continue
        channels = sum(l["channels"] for l in layers)
        overall = sum(l["mean"] * l["channels"] for l in layers) / channels
        below = sum(l["below_half"] for l in layers)
        s.add(Sub(r.name))
        s.add(Img(plot_gates(layers, mpl_text(f"{r.name}: learned gates per layer"),
                             assets / f"gates-{slug(r.name)}.png"),
                  f"{r.name}: mean gate per layer (points) and its range over channels."))
        s.add(Table(["Layer", "Channels", "Mean ρ", "Min ρ", "Max ρ", "Channels with ρ < 0.5"],
                    [[l["layer"], str(l["channels"]), num(l["mean"]), num(l["min"]), num(l["max"]),
                      str(l["below_half"])] for l in layers]
                    + [[Bold("all layers"), str(channels), Bold(num(overall)), "", "",
                        str(below)]]))
        if summary is None:
            furthest = min(layers, key=lambda l: l["mean"])
            summary = {"run": r.name, "mean": overall, "below": below, "channels": channels,
                       "furthest": furthest}
    return s, summary


def section_gradcam(study: Path, runs: list[RunRecord], summary: dict | None = None
                    ) -> tuple[Section, dict | None]:
    s = Section("Grad-CAM")
    path = StudyDir.gallery_json(StudyDir(study).gradcam)
    error = read_state(study).get("gradcam_error")
    if error:
        s.add(Para(f"Grad-CAM failed in the last study run: {error} (the traceback was printed "
                   f"there; `resnorm gradcam {study}` retries it)."))
    if not path.is_file():
        s.add(Para("No Grad-CAM results yet (they are made after the runs; `resnorm gradcam "
                   f"{study}`)."))
        return s, None
    g = json.loads(path.read_text())
    s.add(Para(f"Model: {_model_text(g)}.{_chance_text(g['run'], summary or {})} Gradients of "
               f"the true class's score, taken at the last stage's conv layers "
               f"({', '.join(g.get('target_layers', []))}) and averaged over those layers by "
               f"pytorch-grad-cam; maps at {g.get('map_size')}×{g.get('map_size')}. "
               f"Up to {g.get('per_class')} correctly and {g.get('per_class')} incorrectly "
               "classified validation images per class, a seeded random choice."))
    if g.get("note"):
        s.add(Para(f"Note: {g['note']}."))
    s.add(_concentration_table(g))
    if g.get("pointing"):
        s.add(*_pointing_blocks(g, runs))
    s.add(*faithfulness_blocks(g), *corner_blocks(g))
    for c in g["classes"]:
        s.add(Sub(c["name"]))
        if c.get("note"):
            s.add(Para(f"Note: {c['note']}."))
        img = StudyDir(study).gradcam / c["png"]
        if img.is_file():
            s.add(Img(img, f"{c['name']}: correctly classified (top row) and misclassified "
                           "(bottom row) validation images, Grad-CAM for the true class."))
    return s, g


def _model_text(g: dict) -> str:
    if g.get("seeds") and len(g["seeds"]) > 1:
        return (f"run {g['run']}, seed {g.get('seed')} (the run with the highest mean val "
                f"accuracy over its {len(g['seeds'])} seeds, {pct(g.get('mean_val_acc'))}; of "
                "its seeds the one closest to that mean: a representative model, not the "
                f"luckiest; {pct(g.get('val_acc'))} on the validation images used here)")
    return (f"run {g['run']} (the run with the highest val accuracy, "
            f"{pct(g.get('val_acc'))} on the validation images used here)")


def _chance_text(run: str, summary: dict) -> str:
    """Whether the explained run is among the runs that cannot be excluded from best."""
    rk = summary.get("ranking") or {}
    if "best_set" not in rk:
        return ""
    if run not in rk["runs"]:
        return (f" It is not one of the {len(rk['runs'])} runs the ranking orders (see "
                "Comparisons).")
    chosen = rk["best_set"]
    if chosen == [run]:
        return (f" It is the best of the {len(rk['runs'])} ranked runs on "
                f"{metric_label(rk['metric'])} by the primary family's simultaneous intervals.")
    if run in chosen:
        return (f" On {metric_label(rk['metric'])} it is one of the {len(chosen)} ranked runs "
                f"that cannot be excluded from best ({', '.join(chosen)}).")
    return (f" On {metric_label(rk['metric'])} another run is above it by the primary "
            f"family's simultaneous intervals: the best set is {', '.join(chosen)}.")


def _concentration_table(g: dict) -> Table:
    share = g.get("concentration_top_share", 0.1)
    tiles = gallery_tiles(g)
    header = ["Images", "Maps", f"Mass in brightest {share:.0%} of pixels (mean, 95 % CI)"]
    rows = [["correctly classified", str(len(tiles["correct"])),
             mean_ci([t["concentration"] for t in tiles["correct"]])],
            ["misclassified", str(len(tiles["incorrect"])),
             mean_ci([t["concentration"] for t in tiles["incorrect"]])]]
    if g.get("gallery_pointing"):
        header.append("Maximum inside the object's box (95 % CI)")
        for row, kind in zip(rows, ("correct", "incorrect")):
            row.append(proportion_ci(*hit_counts(tiles[kind])))
    return Table(header, rows, caption=f"The galleries' maps below. A flat map scores "
                 f"{share:.0%} on concentration; a map focused on one spot approaches 100%. "
                 "Intervals: t over the maps (concentration), Wilson (box hits).")


def _pointing_blocks(g: dict, runs: list[RunRecord]) -> list:
    return [Sub("Pointing game (synthetic boxes)"),
            Para("Share of validation maps whose maximum falls inside the object's box; "
                 "chance is the boxes' mean share of the image (a map pointing at a random "
                 "pixel)."),
            Table(["Run", "Norm", "Hits", "Score (95 % CI)", "Chance"],
                  [[name, _norm_of(runs, name), f"{p['hits']}/{p['total']}",
                    proportion_ci(p["hits"], p["total"]), pct(p.get("chance"))]
                   for name, p in g["pointing"].items()],
                  caption="Wilson 95 % interval over the scored images; one model (the "
                          "run's representative seed) per run.")]


def _norm_of(runs: list[RunRecord], name: str) -> str:
    return next((val(r.config.get("norm")) for r in runs if r.name == name), "—")
