"""The robustness numbers on planted truths, without torch: mCE of a run that errs exactly twice
as often as the reference is 2; a variant planted more robust is found so by the family, and an
adaptation planted to help is found to help, adjusted jointly; equal variants are not told
apart; a stale evaluation (another key) is not read. And the plan's section: defaults, order,
one-line errors."""
from __future__ import annotations

import numpy as np
import pytest

from resnorm.errors import UsageError
from resnorm.robustness.measures import RunArrays, interval, mce
from resnorm.robustness.results import trial_folder, write_step, write_trial
from resnorm.robustness.summary import robustness_summary
from resnorm.study.plan.parse import parse_plan

CORRUPTIONS, SEVERITIES, N = ["gaussian_noise", "fog", "contrast"], [1, 3], 300
LABELS = np.random.default_rng(9).integers(0, 5, N)  # the held-out images every run scores
PLAN = {"defaults": {"n": 1}, "runs": [{"name": "bn", "norm": "bn"}]}


def test_mce_of_a_run_with_twice_the_reference_errors_is_two():
    rng = np.random.default_rng(0)
    seeds, k = [0, 1, 2], 3
    wrong_ref = rng.random((k, 3, 2, N)) < 0.2
    # the run errs on every image the reference errs on, and on as many others again
    extra = np.zeros_like(wrong_ref)
    for idx in np.ndindex(*wrong_ref.shape[:3]):
        free = np.flatnonzero(~wrong_ref[idx])
        extra[idx][rng.choice(free, wrong_ref[idx].sum(), replace=False)] = True
    clean = np.ones((k, N), bool)
    ref = RunArrays(seeds, clean, ~wrong_ref)
    run = RunArrays(seeds, clean, ~(wrong_ref | extra))
    out = mce(run, ref, CORRUPTIONS)
    assert abs(out["mean"] - 2.0) < 1e-12 and out["ci95"][0] <= 2.0 <= out["ci95"][1]
    assert all(abs(v - 2.0) < 1e-12 for v in out["ce"].values())
    assert mce(ref, ref, CORRUPTIONS)["mean"] == 1.0
    assert mce(run, RunArrays([7], clean[:1], ~wrong_ref[:1]), CORRUPTIONS) is None


def test_an_interval_is_over_seeds_and_images():
    rng = np.random.default_rng(1)
    values = (rng.random((3, N)) < 0.6).astype(float)
    out = interval(values)
    assert out["mean"] == values.mean() and out["ci95"][0] < out["mean"] < out["ci95"][1]
    wider = interval(values[:, :N // 4])
    assert wider["ci95"][1] - wider["ci95"][0] > out["ci95"][1] - out["ci95"][0]


def fake_trial(study, run: str, seed: int, rng, p_clean: float, p: float,
               p_adapted: float | None, key: str = "k") -> None:
    labels = LABELS

    def preds(prob: float, shape) -> np.ndarray:
        right = rng.random(shape) < prob
        return np.where(right, labels, (labels + 1) % 5).astype(np.int16)

    shape = (len(CORRUPTIONS), len(SEVERITIES), N)
    write_trial(trial_folder(study, run, seed),
                {"key": key, "corruptions": CORRUPTIONS, "severities": SEVERITIES},
                labels=labels, clean=preds(p_clean, (N,)), preds=preds(p, shape),
                adapted=preds(p_adapted, shape) if p_adapted is not None else None)


def test_the_family_finds_planted_differences_and_only_those(tmp_path):
    planted = {"torch_bn": (0.9, 0.5, 0.7), "bn": (0.9, 0.5, 0.7), "in": (0.85, 0.75, None),
               "gn": (0.9, 0.5, None)}
    labels = LABELS
    for run, (pc, p, pa) in planted.items():
        for seed in range(3):
            fake_trial(tmp_path, run, seed, np.random.default_rng([seed, len(run)]), pc, p, pa)
    write_trial(trial_folder(tmp_path, "gn", 9), {"key": "stale", "corruptions": CORRUPTIONS,
                                                  "severities": SEVERITIES},
                labels=labels, clean=labels, preds=np.zeros((3, 2, N), np.int16))
    write_step(tmp_path, {"settings": {}, "keys": {"gn/seed-9": "current"}})
    question = {"pairs": [["bn", "in"], ["bn", "gn"], ["in", "gn"]], "adapt": ["bn"],
                "reference": "torch_bn"}
    runs = [(r, [0, 1, 2, 9] if r == "gn" else [0, 1, 2]) for r in planted]
    out = robustness_summary(tmp_path, runs, question)
    assert out["runs"]["gn"]["seeds"] == [0, 1, 2]  # the stale seed 9 is not read
    verdicts = {(c["a"], c["b"]): c["verdict"] for c in out["comparisons"]}
    assert verdicts == {("bn", "in"): "b higher", ("bn", "gn"): "no clear difference",
                        ("in", "gn"): "a higher", ("bn (adapted)", "bn"): "adapted higher"}
    assert {c["adjustment"] for c in out["comparisons"]} == {"max-T"}
    assert abs(out["runs"]["in"]["drop"]["mean"] - 0.10) < 0.03
    assert out["runs"]["in"]["mce"]["ci95"][1] < 1.0 < out["runs"]["gn"]["mce"]["ci95"][1]
    assert out["gaps"]["bn"]["leader"] == "in"
    assert len(out["exploratory"]) == len(CORRUPTIONS) * 4
    assert all(e["family"] == "exploratory" for e in out["exploratory"])


@pytest.mark.parametrize("section, message", [
    ({"corruptions": ["fog", "rain"]}, "robustness.corruptions: unknown corruption 'rain'"),
    ({"severities": [1, 6]}, "robustness.severities: severity 6 is not one of 1, 2, 3, 4, 5"),
    ({"severities": []}, "robustness.severities must be a list of severities"),
    ({"images": 0}, "robustness.images must be an integer of at least 1"),
    ({"adapt": "yes"}, "robustness.adapt must be true or false"),
    ({"noise": 1}, "robustness: unknown key 'noise'"),
])
def test_a_bad_section_is_one_line(section, message):
    with pytest.raises(UsageError) as e:
        parse_plan({**PLAN, "robustness": section}, "p.yaml")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_section_defaults_and_round_trips():
    plan = parse_plan({**PLAN, "robustness": {}}, "p.yaml")
    assert plan.robustness.to_yaml_dict() == {"corruptions": "all", "severities": [1, 3, 5],
                                              "images": 500, "adapt": True, "seed": 0}
    again = parse_plan({**PLAN, "robustness": {"corruptions": ["contrast", "gaussian_noise"],
                                               "severities": [5, 1]}}, "p.yaml")
    assert again.robustness.corruptions == ["gaussian_noise", "contrast"]  # benchmark order
    assert again.robustness.middle_severity == 1
    assert parse_plan(PLAN, "p.yaml").robustness is None
