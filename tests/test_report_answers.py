"""The answer sheet (the report's first section) and the Observations stating each fact once:
built from hand-made run folders (tests/test_report.py's fake_study), no training."""
from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml

from resnorm.report import build_report
from resnorm.report.answers import ITEMS, TITLE
from resnorm.report.document import Bold, Bullets, Table

from study_files import write_plan
from test_report import fake_gradcam, fake_study

INTERVAL = re.compile(r"([−+]\d+\.\d) points \(95 % CI ([−+]\d+\.\d) to ([−+]\d+\.\d)\)")
FLIP = {"+": "−", "−": "+"}


def stated_comparisons(text: str) -> set[tuple[str, str, str]]:
    """The comparisons a text states, each as its difference with its 95 % CI, the sign made
    canonical (a − b and b − a are the same comparison): every comparison the report states
    carries these three numbers."""
    found = set()
    for diff, lo, hi in INTERVAL.findall(text):
        if diff.startswith("−"):
            diff, lo, hi = FLIP[diff[0]] + diff[1:], FLIP[hi[0]] + hi[1:], FLIP[lo[0]] + lo[1:]
        found.add((diff, lo, hi))
    return found


def repeated(texts: list[str]) -> set[tuple[str, str, str]]:
    """The comparisons stated by more than one of `texts`."""
    seen: set = set()
    twice: set = set()
    for text in texts:
        for fact in stated_comparisons(text):
            (twice if fact in seen else seen).add(fact)
    return twice


def with_faithfulness(study, corners: bool) -> None:
    """fake_gradcam's summary with a faithfulness score and (optionally) black corners."""
    path = study / "gradcam" / "gradcam.json"
    g = json.loads(path.read_text())
    g["faithfulness"] = {"images": 4, "percentiles": [25, 50, 75],
                         "road_gradcam": [0.20, 0.25, 0.15, 0.22],
                         "road_random": [0.01, 0.02, -0.01, 0.00],
                         "confidence_gradcam": [0.1] * 4, "confidence_random": [0.0] * 4}
    g["corners"] = ({"images_with_corners": 5, "total": 200, "explained": 5,
                     "cam_share": [0.10, 0.12, 0.08, 0.11, 0.09],
                     "area_share": [0.05, 0.05, 0.06, 0.04, 0.05]}
                    if corners else {"images_with_corners": 0, "total": 200})
    path.write_text(json.dumps(g))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    study = fake_study(tmp_path_factory.mktemp("answers") / "s")
    fake_gradcam(study, "A")
    with_faithfulness(study, corners=True)
    return build_report(study)


def answers(report) -> dict[str, str]:
    section = report.sections[0]
    table = next(b for b in section.blocks if isinstance(b, Table))
    return {row[0].text if isinstance(row[0], Bold) else row[0]: row[2] for row in table.rows}


def observations(report) -> list[str]:
    section = report.sections[-1]
    assert section.title == "Observations"
    return [i for b in section.blocks if isinstance(b, Bullets) for i in b.items]


def sentences(text: str) -> int:
    return len(re.findall(r"[.!?](?=\s+[A-Z]|\s*$)", text))


def test_the_answer_sheet_is_first_and_answers_each_item_in_order(report):
    assert report.sections[0].title == TITLE
    sheet = answers(report)
    assert list(sheet) == ["1.1", "2.4", "2.5", "2.6", "2.7"] == [i for i, _, _ in ITEMS]
    for item, text in sheet.items():
        assert 1 <= sentences(text) <= 2, (item, text)
        assert "Not run" not in text
        assert "95 % CI" in text or "±" in text, (item, text)  # each with its interval
    # 1.1: PyTorch BN's accuracy, micro and macro F1 on train and val (one seed: the image
    # bootstrap), and the literal recipe beside it
    assert re.match(r"torch_bn \(PyTorch's nn.BatchNorm2d, 1 seed\(s\)\): train accuracy "
                    r"55\.0 ± \d+\.\d, micro F1 55\.0 ± \d+\.\d, macro F1 \d+\.\d ± \d+\.\d; val "
                    r"accuracy 50\.0 ± \d+\.\d, micro F1 50\.0 ± \d+\.\d, macro F1 \d", sheet["1.1"])
    assert "torch_bn higher than literal by +40.0 points (95 % CI" in sheet["1.1"]
    assert "torch_bn − bn −0.5 points (95 % CI" in sheet["2.4"]
    assert "the curves agree within tolerance at every epoch" in sheet["2.4"]
    # one seed, 200 images: bn's 5.5-point lead over gn does not exclude gn from best
    assert re.match(r"By val accuracy: bn 50\.5 ± \d+\.\d, gn 45\.0 ± \d+\.\d, in 40\.0 ± "
                    r"\d+\.\d, nn 30\.0 ± \d+\.\d; the best set .* is \{bn, gn, in\}", sheet["2.5"])
    # GN loses 1 point at batch 8, BN 15.5: the raw interval excludes 0, the family does not
    assert ("Interaction (GN's change − BN's) +14.5 points" in sheet["2.6"]
            and "not distinguishable at this scale after adjustment" in sheet["2.6"])
    assert "GN gn_b8 − gn −1.0 points" in sheet["2.6"] and "BN bn_b8 − bn −15.5" in sheet["2.6"]
    assert "above a random map: faithful" in sheet["2.7"]
    assert ("the maps put 10.0% (8.0–12.0%) of their mass on the corners, which cover "
            "5.0% (4.1–5.9%) of the image (+5.0 points (95 % CI +2.4 to +7.6))") in sheet["2.7"]
    assert "the model looks at the black corners" in sheet["2.7"]


def test_each_comparison_is_stated_once(report):
    """No two Observations state the same comparison, and none states one the answer sheet
    states; the best set is named once."""
    obs, sheet = observations(report), list(answers(report).values())
    assert repeated(obs) == set()
    assert not (set().union(*map(stated_comparisons, obs))
                & set().union(*map(stated_comparisons, sheet)))
    assert sum("best set" in text for text in obs + sheet) == 1
    assert stated_comparisons(" ".join(obs)), "the observations state the differing pairs"


def test_the_repetition_check_catches_a_repeated_comparison():
    """The check above fails on the old Observations, which stated BIN's lead over IN twice
    (as a primary pair and as best against worst), the other way round once."""
    old = ["Primary family, val accuracy: 2 of the 15 pairs differ: bin higher than in by "
           "+37.8 points (95 % CI +29.7 to +45.8); bn higher than nn by +19.3 points (95 % CI "
           "+13.3 to +25.4).",
           "Among the 6 norm variants, bin had the highest mean val accuracy and in the lowest: "
           "in − bin −37.8 points (95 % CI −45.8 to −29.7)."]
    assert repeated(old) == {("+37.8", "+29.7", "+45.8")}


def test_items_the_plan_did_not_run_are_named_as_not_run(tmp_path):
    study = fake_study(tmp_path / "s")
    for name in ("bn_b8", "gn_b8", "literal"):
        shutil.rmtree(study / "runs" / name)
    plan = yaml.safe_load((study / "plan.yaml").read_text())
    plan["runs"] = [r for r in plan["runs"] if r["name"] not in ("bn_b8", "gn_b8", "literal")]
    write_plan(study, plan)  # the plan copy and its manifest, as resnorm study writes them
    sheet = answers(build_report(study))
    assert sheet["2.6"].startswith("Not run: the plan has no BN and GN runs at two batch sizes")
    assert sheet["2.7"].startswith("Not run: no Grad-CAM results")
    assert "literal recipe" not in sheet["1.1"] and sheet["2.5"].startswith("By val accuracy")
