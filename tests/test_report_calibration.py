"""The study's own calibration (resnorm.statistics.calibration, report.calibration): its
rates come from simulating the study's design, respond to it, are cached in summary.json by
the fingerprint of their inputs, and the report states them with their Monte Carlo SE."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from calibration_rates import PAIRS, SANITY, primary_family
from calibration_sim import INTERACTION, SIX, TOLERANCE, draw
from resnorm.errors import UsageError
from resnorm.report import write_report
from resnorm.report.calibration import calibration_studies
from resnorm.statistics import FamilyDesign, calibrate, moments_from_correct
from resnorm.statistics.joint import fit_paired
from test_report import fake_study


def _design(planted: float) -> FamilyDesign:
    correct = draw(np.random.default_rng(7), 1)[0]
    _, pairs, model = primary_family(correct)
    d = correct[0].astype(np.float64) - correct[1]
    paired = fit_paired(d.mean(axis=1), moments_from_correct(d[None]))
    return FamilyDesign(model, PAIRS + [INTERACTION], [("a higher", "b higher")] * 16, SIX,
                        SANITY, paired, TOLERANCE, ("bn", "bin", planted))


def test_the_rates_come_from_the_design_and_carry_their_se():
    """The same design gives the same rates (seeded from the study); a larger planted gap is
    found more often; every rate has its Monte Carlo SE."""
    small = calibrate(_design(5.0), 40)
    assert calibrate(_design(5.0), 40) == {**small, "seconds": pytest.approx(small["seconds"],
                                                                              abs=60)}
    large = calibrate(_design(40.0), 40)
    assert large["power"]["rate"] > small["power"]["rate"]
    assert large["power"]["rate"] > 0.9 and small["power"]["rate"] < 0.5
    for key in ("fwer", "coverage", "best_set", "false_equivalent"):
        rate, se = small[key]["rate"], small[key]["se"]
        assert 0 <= rate <= 1 and se == pytest.approx(np.sqrt(rate * (1 - rate) / 40))
    assert small["power"]["studies"] == 20 and small["null_draws"] == 2000


def test_the_setting_is_an_argument_then_the_environment(monkeypatch):
    monkeypatch.setenv("RESNORM_CALIBRATION_STUDIES", "12")
    assert calibration_studies() == 12 and calibration_studies(5) == 5
    monkeypatch.setenv("RESNORM_CALIBRATION_STUDIES", "many")
    with pytest.raises(UsageError, match="whole number"):
        calibration_studies()
    with pytest.raises(UsageError, match=">= 0"):
        calibration_studies(-1)


def test_the_report_states_the_studys_rates_and_reuses_them(tmp_path):
    """summary.json keeps the calibration with its fingerprint: a second render reuses it
    (same numbers, same time spent; another setting changes the fingerprint: below), 0
    simulates none and the report then says so; no rate is stated that was not measured here."""
    study = fake_study(tmp_path / "s", seeds=(0, 1, 2), spread=0.02)
    md = write_report(study, calibration_studies=16)[1].read_text()
    first = json.loads((study / "summary.json").read_text())["calibration"]
    assert first["studies"] == 16 and first["fingerprint"]
    fwer = first["fwer"]
    assert (f"In 16 simulated studies of this study's own design" in md
            and f"{100 * fwer['rate']:.1f} % of them (Monte Carlo SE {100 * fwer['se']:.1f} "
                "points)" in md)
    write_report(study, calibration_studies=16)
    assert json.loads((study / "summary.json").read_text())["calibration"] == first
    md = write_report(study, calibration_studies=0)[1].read_text()
    assert json.loads((study / "summary.json").read_text())["calibration"] is None
    assert "not simulated for this study" in md
    for constant in ("5.2–6.4", "94–95", "3–7 %"):
        assert constant not in md


def test_a_changed_model_changes_the_fingerprint():
    from resnorm.report.calibration import fingerprint
    design = _design(5.0)
    moved = dataclasses.replace(design, model=dataclasses.replace(
        design.model, means=design.model.means + 0.01))
    assert fingerprint(design, 10) != fingerprint(moved, 10)
    assert fingerprint(design, 10) != fingerprint(design, 11)
    assert fingerprint(design, 10) == fingerprint(_design(5.0), 10)
