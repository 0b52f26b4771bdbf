"""The study report, built from hand-made run folders (no training): sections, tables,
observations backed by numbers, unfinished runs, HTML escaping, self-contained images."""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from resnorm import cli
from resnorm.metrics import write_metrics_csv
from resnorm.report import build_report, render_html, write_report
from resnorm.report.build import study_design
from resnorm.report.roles import study_roles
from resnorm.study import collect_runs
from study_files import write_plan

SECTIONS = ["Answer sheet", "Setup", "Results", "Comparisons", "Curves", "Sanity check: PyTorch BN vs own BN",
            "Batch size: BN vs GN", "BIN gates", "Grad-CAM", "Observations"]
BASE = dict(n=1, size=32, resize="squash", batch_size=32, epochs=4, recipe="default",
            optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
            schedule="cosine", warmup_epochs=0.0, gate_lr_mult=10.0, augment=True, patience=0,
            min_delta=0.0, seed=0, shortcut="A", device="cpu")
MARKUP = "<img src=x onerror=alert(1)>"


N_VAL = 200  # validation images of the hand-made runs (labels shared by every run)


def fake_predictions(name: str, seed: int, acc: float, k: int, n: int = N_VAL) -> dict:
    """Per-image predictions with accuracy `acc`: which images are right depends on the run
    and seed (a fixed draw), the wrong ones predict the next class."""
    labels = np.arange(n) % k
    rng = np.random.default_rng([seed, *name.encode()])
    right = np.zeros(n, bool)
    right[rng.permutation(n)[:round(acc * n)]] = True
    preds = np.where(right, labels, (labels + 1) % k)
    return {"labels": labels, "preds": preds, "probs": np.eye(k)[preds]}


def fake_run(study: Path, name: str, final_acc: float, *, status: str = "completed",
             epochs: int = 4, classes=("A", "B", "C"), drift: float = 0.0, curves: bool = True,
             seeds=(0,), spread: float = 0.0, **config) -> Path:
    """A run trained with `seeds`, each a folder runs/<name>/seed-<s>/: config.yaml,
    metrics.csv (linear curves), predictions.npz, final.json, and a placeholder curves.png
    (training draws the real one; without it the report draws it). Seed i scores
    final_acc + spread * (i - mean), on N_VAL val images."""
    from resnorm.rundir import RunDir

    for i, seed in enumerate(seeds):
        acc_s = final_acc + spread * (i - (len(seeds) - 1) / 2)
        _fake_trial(study / "runs" / name / f"seed-{seed}", name, seed, acc_s, status, epochs,
                    classes, drift, curves, config)
        if status != "diverged":
            k = len(classes)
            RunDir(study / "runs" / name / f"seed-{seed}").write_predictions(
                {"val": fake_predictions(name, seed, acc_s, k),
                 "train": fake_predictions(name, seed, acc_s + 0.05, k)})
    return study / "runs" / name


def _fake_trial(run: Path, name: str, seed: int, final_acc: float, status: str, epochs: int,
                classes, drift: float, curves: bool, config: dict) -> None:
    run.mkdir(parents=True, exist_ok=True)
    cfg = {**BASE, **config, "seed": seed, "name": name, "out": str(run),
           "environment": {"device": "cpu", "torch": "2.x", "resnorm": "0.1.0"}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = []
    for e in range(1, epochs + 1):
        f = e / epochs
        acc = final_acc * f + drift * f
        rows.append(dict(epoch=e, lr=0.1 * (1 - f), train_loss=2 - f, train_acc=acc + 0.05,
                         train_micro_f1=acc + 0.05, train_macro_f1=acc, val_loss=2.1 - f,
                         val_acc=acc, val_micro_f1=acc, val_macro_f1=acc - 0.01,
                         epoch_time_s=1.5 * 32 / cfg["batch_size"], images_per_s=400.0))
    write_metrics_csv(rows, run / "metrics.csv")
    if curves:
        Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(run / "curves.png")
    k = len(classes)

    def ev(a):
        return {"loss": 1.0, "acc": a, "micro_f1": a, "macro_f1": a - 0.01,
                "per_class_f1": [round(a + 0.01 * i, 4) for i in range(k)],
                "confusion": [[N_VAL // k // k] * k] * k}

    final = {"name": name, "status": status, "epochs_run": epochs, "best_epoch": epochs,
             "wall_time_s": 6.0, "parameters": 78_000, "classes": list(classes),
             "eval": {"train": ev(final_acc + 0.05), "val": ev(final_acc)}}
    if status == "diverged":
        final["diverged_at"] = {"epoch": epochs, "step": 3, "global_step": 9}
        final["eval"] = {}
    (run / "final.json").write_text(json.dumps(final))


PLAN_RUNS = [("torch_bn", 0.50, {"norm": "torch_bn"}), ("bn", 0.505, {"norm": "bn"}),
             ("in", 0.40, {"norm": "in"}), ("gn", 0.45, {"norm": "gn"}),
             ("nn", 0.30, {"norm": "nn"}),
             ("bn_b8", 0.35, {"norm": "bn", "batch_size": 8, "lr": 0.025, "patience": 2}),
             ("gn_b8", 0.44, {"norm": "gn", "batch_size": 8, "lr": 0.025, "patience": 2}),
             ("literal", 0.10, {"norm": "torch_bn", "recipe": "literal", "lr": 1e-4})]


def fake_study(study: Path, classes=("A", "B", "C"), sanity_drift: float = 0.0,
               curves: bool = True, seeds=(0,), spread: float = 0.0) -> Path:
    for name, acc, cfg in PLAN_RUNS:
        fake_run(study, name, acc, classes=classes, curves=curves, seeds=seeds, spread=spread,
                 drift=sanity_drift if name == "bn" else 0.0, **cfg)
    plan = {"description": "hand-made", "lr_rule": "linear", "base_batch_size": 32,
            "seeds": len(seeds), "defaults": {"n": 1},
            "runs": [{"name": n, **c} for n, _, c in PLAN_RUNS] + [{"name": "ln", "norm": "ln"}]}
    write_plan(study, plan, lr_rule_text="linear scaling: lr = base lr x batch size / 32")
    return study


def fake_gradcam(study: Path, class_name: str) -> None:
    out = study / "gradcam"
    out.mkdir()
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(out / "cls.png")
    tile = {"val_index": 0, "true": class_name, "pred": class_name, "confidence": 0.9,
            "true_prob": 0.9, "concentration": 0.4}
    summary = {"run": "bn", "val_acc": 0.505, "target_layers": ["layer3.0.conv1"],
               "map_size": 32, "per_class": 5, "note": "",
               "classes": [{"name": class_name, "index": 0, "png": "cls.png", "correct": [tile],
                            "incorrect": [], "note": "only 0 incorrect (of 5)"}],
               "concentration": {"correct": 0.4, "incorrect": 0.3},
               "concentration_top_share": 0.1,
               "pointing": {"bn": {"hits": 3, "total": 4, "score": 0.75, "chance": 0.25},
                            "gn": {"hits": 1, "total": 4, "score": 0.25, "chance": 0.25}}}
    (out / "gradcam.json").write_text(json.dumps(summary))


def img_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', page)


def test_report_has_every_section_and_only_embedded_images(tmp_path):
    study = fake_study(tmp_path / "s", curves=False)  # the report draws each run's curves
    fake_gradcam(study, "A")
    html_path, md_path = write_report(study)
    page, md = html_path.read_text(), md_path.read_text()
    for i, title in enumerate(SECTIONS, 1):
        assert f"<h2>{i}. {title}</h2>" in page
        assert f"## {i}. " in md and title.split(":")[0] in md
    sources = img_sources(page)
    # overlay, 8 run curves, sanity, batch size, one Grad-CAM gallery
    assert len(sources) >= 12
    for src in sources:  # self-contained: every image is a PNG inside the page
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in page and "https://" not in page
    # the Markdown twin points at files that exist
    for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (study / rel).is_file(), rel


def test_results_table_and_unfinished_runs(tmp_path):
    study = fake_study(tmp_path / "s")
    md = write_report(study)[1].read_text()
    # train and val accuracy, micro F1 and macro F1 of the best checkpoint for each run, each
    # as mean ± CI half-width (one seed: the image bootstrap)
    results = md.split("## 3. Results")[1].split("## 4.")[0]
    row = next(line for line in results.splitlines() if line.startswith("| in |"))
    assert re.search(r"\| 45\.0 ± \d+\.\d \|", row) and re.search(r"\| 40\.0 ± \d+\.\d \|", row)
    assert re.search(r"\*\*50\.5 ± \d+\.\d\*\*", md)  # the best val accuracy is highlighted
    # ln is in the plan but has no folder: listed as not started, in results and observations
    assert "- ln: not started" in md
    assert "have not finished: ln" in md


def test_observations_cite_numbers_shown_in_the_report(tmp_path):
    study = fake_study(tmp_path / "s")
    fake_gradcam(study, "A")
    md = write_report(study)[1].read_text()
    body, observations = md.split("## 10. Observations")
    items = [line for line in observations.splitlines() if line.startswith("- ")]
    assert len(items) >= 5
    text = "\n".join(items)
    # what the study can detect first, then the primary family, its method named once
    assert re.match(r"- What this study can detect: .* about \d+\.\d points", items[0])
    assert items[1].startswith("- The study's questions form the primary family")
    assert text.count("step-down") == 1 and text.count("Benjamini") == 1
    # one seed, 200 val images: bn 50.5 against nn 30.0 is called, bn against gn (5.5) is not
    assert re.search(r"Primary family, val accuracy: \d of the 6 pairs differ: .*bn higher than "
                     r"nn by \+20\.5 points", text)
    assert "bn higher than gn" not in text and "gn higher than bn" not in text
    assert re.search(r"The run with the highest mean val accuracy, bn, scored \d+\.\d ± \d+\.\d "
                     r"on train", text)
    assert "pointing game" in text
    # every mean ± half-width an observation states appears in the tables above it
    for number in re.findall(r"\d+\.\d ± \d+\.\d", text):
        assert number in body, number
    # and every interval, as a − b in the Comparisons table or the other way round (b − a)
    for lo, hi in re.findall(r"95 % CI ([−+]\d+\.\d) to ([−+]\d+\.\d)", text):
        flip = {"+": "−", "−": "+"}
        negated = f"95 % CI {flip[hi[0]]}{hi[1:]} to {flip[lo[0]]}{lo[1:]}"
        assert f"95 % CI {lo} to {hi}" in body or negated in body, (lo, hi)


def _with_tolerance(study, **tolerance):
    plan = yaml.safe_load((study / "plan.yaml").read_text())
    plan["sanity_tolerance"] = tolerance
    (study / "plan.yaml").write_text(yaml.safe_dump(plan))
    return write_report(study)[1].read_text()


def test_sanity_check_verdict_follows_the_tolerance(tmp_path):
    # bn's curves drift away from torch_bn's linearly: 1.5 points after epoch 1, 6 at the end
    study = fake_study(tmp_path / "s", sanity_drift=0.06)
    md = write_report(study)[1].read_text()  # the defaults: 1 point after epoch 1, 2 overall
    assert "Curve verdict over 4 epochs: FAILED" in md
    assert "Curve by curve (seed 0): the curves differ beyond tolerance already after epoch 1" \
        in md.split("## 2.")[0]  # the answer sheet
    assert "| val\\_acc | 1.62 points | **no** |" in md  # the sanity section's table
    md = _with_tolerance(study, first_epoch=0.02, metric=0.02, loss=0.05)
    assert "the curves agree after epoch 1" in md and "drifted apart" in md
    assert "agree after epoch 1 and drift apart beyond tolerance later" in md.split("## 2.")[0]
    assert "6.50 points" in md
    md = _with_tolerance(study, first_epoch=0.02, metric=0.1, loss=0.05)
    assert "Curve verdict over 4 epochs: HELD" in md
    assert "the curves agree within tolerance at every epoch" in md.split("## 2.")[0]


def test_a_hand_made_study_gets_its_plan_copys_design(tmp_path):
    study = fake_study(tmp_path / "s")  # hand-made: plan.yaml, the manifest's derived design
    roles = study_roles(study_design(study), collect_runs(study))
    # ln is a variant of the plan not trained yet: listed, never silently left out
    assert [r.name for r in roles.variants] == ["torch_bn", "bn", "in", "gn", "nn", "ln"]
    assert tuple(r.name for r in roles.sanity) == ("torch_bn", "bn")
    assert {k: [r.name for r in v] for k, v in roles.batch.items()} == {
        "bn": ["bn_b8", "bn"], "gn": ["gn_b8", "gn"]}
    assert [(a.name, b.name) for a, b in roles.literal] == [("literal", "torch_bn")]


def test_dataset_names_are_escaped(tmp_path):
    study = fake_study(tmp_path / "s", classes=(MARKUP, "B & C", "D"))
    fake_gradcam(study, MARKUP)
    html_path, md_path = write_report(study)
    page, md = html_path.read_text(), md_path.read_text()
    assert MARKUP not in page and MARKUP not in md
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "B &amp; C" in page
    # the only tags in the page are the renderer's own
    tags = set(re.findall(r"<([a-z0-9]+)[\s>]", page))
    assert tags <= {"html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "h3",
                    "p", "nav", "ol", "ul", "li", "a", "section", "div", "table", "thead",
                    "tbody", "tr", "th", "td", "b", "caption", "figure", "img", "figcaption"}


def test_failed_and_diverged_runs_are_reported(tmp_path):
    study = fake_study(tmp_path / "s")
    fake_run(study, "nn", 0.2, status="diverged", norm="nn")
    (study / "runs" / "ln" / "seed-0").mkdir(parents=True)
    state = json.loads((study / "study.json").read_text())
    state["runs"] = {"ln/seed-0": {"status": "failed", "error": "UsageError: 10 images are "
                                   "fewer than one batch of 32"}}
    (study / "study.json").write_text(json.dumps(state))
    md = write_report(study)[1].read_text()
    assert "- ln: failed — UsageError: 10 images are fewer than one batch of 32" in md
    assert "nn diverged at epoch 4, step 3" in md


def test_report_cli(tmp_path, capsys):
    study = fake_study(tmp_path / "s")
    assert cli.main(["report", str(study)]) == 0
    assert "report.html" in capsys.readouterr().out
    assert cli.main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("resnorm report: error:") and "\n" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["report", str(empty)]) == 2


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "chromium-headless-shell", "google-chrome",
                 "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary")
def test_report_renders_in_headless_chromium_with_every_image_loaded(tmp_path):
    study = fake_study(tmp_path / "s")
    fake_gradcam(study, MARKUP)
    page = render_html(build_report(study))
    # A probe script (added to a copy only) writes how many images decoded into the DOM.
    probe = ("<script>window.addEventListener('load',()=>{const i=[...document.images];"
             "document.body.setAttribute('data-probe',i.length+':'+i.filter(x=>x.complete&&"
             "x.naturalWidth>0).length);});</script>")
    copy = tmp_path / "probe.html"
    copy.write_text(page.replace("</body>", probe + "</body>"))
    dom = subprocess.run([_chromium(), "--headless", "--disable-gpu", "--no-sandbox",
                          "--virtual-time-budget=5000", "--dump-dom", copy.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    total, loaded = re.search(r'data-probe="(\d+):(\d+)"', dom).groups()
    assert int(total) == len(img_sources(page)) > 0
    assert loaded == total
    assert 'src="x"' not in dom  # the class name stayed text


# --- the statistics: summary.json, seeds, degenerate studies ----------------------------------

def _strict_json(path: Path) -> dict:
    def no_nan(token):
        raise AssertionError(f"{path.name} holds {token}")
    return json.loads(path.read_text(), parse_constant=no_nan)


def test_summary_json_contract_with_three_seeds(tmp_path):
    study = fake_study(tmp_path / "s", seeds=(0, 1, 2), spread=0.02)
    md = write_report(study)[1].read_text()
    summary = _strict_json(study / "summary.json")
    bn = summary["runs"]["bn"]
    assert bn["seeds"] == [0, 1, 2]
    acc = bn["val_acc"]
    assert acc["mean"] == pytest.approx(0.505) and acc["std"] == pytest.approx(0.02, abs=1e-3)
    assert acc["ci95"][0] < acc["mean"] < acc["ci95"][1] and acc["n"] == 3
    for metric in ("train_acc", "train_micro_f1", "train_macro_f1", "val_micro_f1",
                   "val_macro_f1"):
        assert set(bn[metric]) >= {"mean", "std", "ci95"}
    by_pair = {(c["a"], c["b"], c["metric"]): c for c in summary["comparisons"]}
    c = by_pair[("bn", "nn", "val_acc")]
    assert set(c) >= {"a", "b", "metric", "diff", "ci95", "p", "verdict", "method"}
    assert c["diff"] == pytest.approx(0.505 - 0.30) and c["verdict"] == "a higher"
    assert c["differs_in"] == "norm" and c["ci95"][0] > 0 and c["p"] < 0.05
    assert by_pair[("torch_bn", "bn", "val_acc")]["verdict"] == "no clear difference"
    # the batch pairs differ in batch size, lr and patience: compared all the same
    # as the plan resolves them: bn's lr by the linear rule at batch 32 equals bn_b8's own
    assert by_pair[("bn_b8", "bn", "val_acc")]["differs_in"] == "batch_size, patience"
    inter = summary["interaction"]
    assert inter["runs"] == {"gn_small": "gn_b8", "gn_large": "gn", "bn_small": "bn_b8",
                             "bn_large": "bn"} and inter["batch_sizes"] == [8, 32]
    assert inter["diff"] == pytest.approx((0.44 - 0.45) - (0.35 - 0.505))
    assert inter["verdict"] == "GN's small-batch recipe loses less"
    assert summary["sanity"]["equivalence"] in ("equivalent", "inconclusive", "not equivalent")
    _check_families(summary)
    # the report: mean ± CI with the seed count, the curves' band, the representative seed
    assert "Seeds per run: 3" in md and "bands: lowest to highest seed" in md
    assert "(seed 1, the representative of its 3 seeds)" in md
    runs = {r.name: r for r in collect_runs(study)}
    assert runs["bn"].representative.seed == 1  # the middle seed is the closest to the mean


def _check_families(summary: dict) -> None:
    """The families' contract: the variants pairwise on the primary metric (not PyTorch BN:
    the sanity check's reference), the sanity equivalence and the interaction are primary,
    with an adjusted p and a simultaneous interval wider than the 95 % one; everything else is
    exploratory, with a Benjamini–Hochberg p; the ranking orders the primary variants."""
    variants = {"bn", "in", "gn", "nn"}
    primary = [c for c in summary["comparisons"] if c["family"] == "primary"]
    # the plan's variant ln was never trained: its pairs are listed, not computable
    untested = [c for c in primary if "ln" in (c["a"], c["b"])]
    assert len(untested) == 4 and all(c["p"] is None and c["reason"] for c in untested)
    primary = [c for c in primary if c not in untested]
    assert {(c["a"], c["b"]) for c in primary} == {
        (a, b) for a, b in [("bn", "in"), ("bn", "gn"), ("bn", "nn"), ("in", "gn"),
                            ("in", "nn"), ("gn", "nn")]}
    assert all(c["metric"] == "val_acc" for c in primary)
    for c in primary + [summary["sanity"], summary["interaction"]]:
        # (max-T may exceed Holm's p: its null carries the variance heterogeneity the model
        # allows, which the raw t p-values Holm adjusts do not)
        assert c["family"] == "primary" and c["p"] <= c["p_adjusted"] and c["p"] <= c["p_holm"]
        lo, hi = c["ci95_simultaneous"]
        assert lo < c["ci95"][0] and c["ci95"][1] < hi
    explore = [c for c in summary["comparisons"] if c["family"] == "exploratory"]
    assert all(c["adjustment"] == "Benjamini-Hochberg" and "ci95_simultaneous" not in c
               for c in explore if c["p"] is not None)
    assert {(c["a"], c["b"]) for c in explore if c["metric"] == "val_acc"} >= {
        ("torch_bn", "bn"), ("bn_b8", "bn"), ("torch_bn", "literal")}
    assert summary["sanity"]["test"] == "equivalence" and "p_difference" in summary["sanity"]
    fam = summary["families"]
    assert fam["primary"]["size"] == 8 and fam["metric"] == "val_acc"
    ranking = summary["ranking"]
    assert ranking["metric"] == "val_acc" and set(ranking["p_best"]) == variants
    assert sum(ranking["p_best"].values()) == pytest.approx(1.0)
    assert sorted(ranking["expected_rank"], key=ranking["expected_rank"].get)[0] == "bn"


def test_a_plan_names_its_own_primary_family(tmp_path):
    from resnorm.errors import UsageError
    from resnorm.study.plan.parse import parse_plan

    study = fake_study(tmp_path / "s", seeds=(0, 1, 2), spread=0.02)
    plan = yaml.safe_load((study / "plan.yaml").read_text())
    with pytest.raises(UsageError, match="design.primary: 'nope' is not a run of the plan"):
        parse_plan({**plan, "primary": [["gn", "nope"]]}, "p.yaml")
    assert parse_plan({**plan, "primary": [["gn", "bn_b8"]]}, "p.yaml").design == {
        "primary": [("gn", "bn_b8")]}
    write_plan(study, {**plan, "primary": [["gn", "gn_b8"], ["bn", "gn"]]})
    write_report(study)
    summary = _strict_json(study / "summary.json")
    primary = {(c["a"], c["b"]) for c in summary["comparisons"] if c["family"] == "primary"}
    assert primary == {("gn", "gn_b8"), ("bn", "gn")}
    assert summary["families"]["primary"]["size"] == 4  # + the sanity and the interaction
    assert summary["ranking"]["runs"] == ["gn", "gn_b8", "bn"]
    assert next(c for c in summary["comparisons"] if (c["a"], c["b"], c["metric"]) == (
        "bn", "in", "val_acc"))["family"] == "exploratory"


def test_identical_predictions_give_a_zero_interval_not_nan(tmp_path):
    study = fake_study(tmp_path / "s", seeds=(0, 1))
    for seed in (0, 1):  # bn predicts exactly what torch_bn predicts
        shutil.copy(study / "runs" / "torch_bn" / f"seed-{seed}" / "predictions.npz",
                    study / "runs" / "bn" / f"seed-{seed}" / "predictions.npz")
    write_report(study)
    summary = _strict_json(study / "summary.json")
    c = next(c for c in summary["comparisons"]
             if (c["a"], c["b"], c["metric"]) == ("torch_bn", "bn", "val_acc"))
    assert c["diff"] == 0 and c["ci95"] == [0, 0] and c["p"] == 1
    assert c["verdict"] == "no clear difference"
    assert summary["sanity"]["equivalence"] == "equivalent"


def test_a_run_diverged_on_every_seed_has_its_comparisons_say_why(tmp_path):
    study = fake_study(tmp_path / "s", seeds=(0, 1))
    shutil.rmtree(study / "runs" / "nn")
    fake_run(study, "nn", 0.2, status="diverged", norm="nn", seeds=(0, 1))
    md = write_report(study)[1].read_text()
    summary = _strict_json(study / "summary.json")
    absent = [c for c in summary["comparisons"] if "nn" in (c["a"], c["b"])]
    assert absent and all(c["verdict"] == "not computable" and c["diff"] is None
                          for c in absent)
    assert all(c["reason"] == "nn has no finished seed (diverged)" for c in absent)
    assert "nn (seed 1) diverged at epoch 4" in md
    assert "not computable (nn has no finished seed (diverged))" in md


def test_a_lead_over_a_variant_never_compared_is_not_claimed(tmp_path):
    """bn is above in and gn after adjustment, but nn diverged on every seed: no comparison
    with it was made, so the report must not say bn is above every other variant."""
    study = fake_study(tmp_path / "s", seeds=(0, 1, 2), spread=0.005)
    shutil.rmtree(study / "runs" / "nn")
    fake_run(study, "nn", 0.2, status="diverged", norm="nn", seeds=(0, 1, 2))
    md = write_report(study)[1].read_text()
    assert "above every other variant" not in md
    # the answer sheet's best set names the runs it could not rank: nn, and ln, a variant the
    # plan declares but no run trained
    assert ("is {bn} (not ranked: nn has no finished seed (diverged); ln was not trained)."
            in md.split("## 2.")[0])


def test_a_diverged_seed_counts_and_is_scored_at_its_last_good_checkpoint(tmp_path):
    """gn's seed 2 diverged after its best checkpoint was evaluated (predictions kept): it is
    counted and scored with the other seeds; in's seed 2 diverged without one: counted, and
    the mean says it is over the survivors."""
    study = fake_study(tmp_path / "s", seeds=(0, 1, 2), spread=0.01)
    for name, keep in (("gn", True), ("in", False)):
        trial = study / "runs" / name / "seed-2"
        final = json.loads((trial / "final.json").read_text())
        final.update(status="diverged", diverged_at={"epoch": 3, "step": 1, "global_step": 7})
        (trial / "final.json").write_text(json.dumps(final))
        if not keep:
            (trial / "predictions.npz").unlink()
    md = write_report(study)[1].read_text()
    summary = _strict_json(study / "summary.json")
    gn, in_ = summary["runs"]["gn"], summary["runs"]["in"]
    assert gn["diverged"] == 1 and gn["seeds"] == [0, 1, 2] and gn["val_acc"]["n"] == 3
    assert "scored at the best checkpoint before the divergence" in gn["val_acc"]["method"]
    assert in_["diverged"] == 1 and in_["seeds"] == [0, 1] and in_["val_acc"]["n"] == 2
    assert "over the seeds that survived" in in_["val_acc"]["method"]
    assert "| Diverged |" in md
