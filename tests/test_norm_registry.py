"""The norm registry: a kind registered from outside the package trains and reports like the
built-in ones, with the facts its entry gives (label, colour, place in tables, batch
statistics), and no other module has to know about it."""
from __future__ import annotations

import pytest
import torch
import yaml
from matplotlib.axes import Axes
from torch import nn

from resnorm.errors import UsageError
from resnorm.model import ResNet
from resnorm.norms import NORM_KINDS, get_norm, make_norm, norm_info, register_norm
from resnorm.report import write_report
from resnorm.report.build import study_design
from resnorm.report.roles import study_roles
from resnorm.report.figures import plot_batch
from resnorm.report.roles import norm_kind
from resnorm.study import collect_runs
from resnorm.train import TrainConfig, load_run_model, resolve_config, train
from study_files import write_plan

TOY = "rms"
TOY_COLOR = "#123456"
TOY_LABEL = "RMS (toy)"


class RMSNorm2d(nn.Module):
    """The toy kind, from scratch: each sample divided by its root mean square over (C, H, W),
    then a per-channel affine."""

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = x.pow(2).mean(dim=(1, 2, 3), keepdim=True).add(self.eps).rsqrt()
        return x * rms * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


@pytest.fixture
def toy_kind():
    """The toy registered for one test (order 0.5: between torch_bn and bn in tables)."""
    entry = register_norm(TOY, RMSNorm2d, label=TOY_LABEL, color=TOY_COLOR, order=0.5)
    yield entry
    del NORM_KINDS[TOY]


def config(data, out, **overrides) -> TrainConfig:
    settings = dict(data=str(data), out=str(out), size=32, n=1, batch_size=8, epochs=1,
                    eval_batch_size=32)
    return TrainConfig(**{**settings, **overrides})


@pytest.mark.usefixtures("one_thread")
def test_a_registered_toy_kind_trains_and_reports(toy_kind, synth_cache, tmp_path, monkeypatch):
    study = tmp_path / "study"
    for norm in (TOY, "nn"):  # two variants that differ only in their norm
        final = train(config(synth_cache.path, study / "runs" / norm / "seed-0", norm=norm),
                      progress=False)
        assert final["status"] == "completed"

    # trained with the toy's layers; per-sample statistics, as its entry says
    model, saved = load_run_model(study / "runs" / TOY / "seed-0")
    assert saved["norm"] == TOY
    assert sum(isinstance(m, RMSNorm2d) for m in model.modules()) == 1 + 3 * 2  # n=1
    record = yaml.safe_load((study / "runs" / TOY / "seed-0" / "config.yaml").read_text())
    assert record["distributed"]["bn_statistics"] == "none"

    # the report: the toy's place in tables, and its curves in its colour; the plan's
    # design (derived: the runs differ only in their norm) makes both variants
    write_plan(study, {
        "defaults": {"size": 32, "n": 1, "batch_size": 8, "epochs": 1},
        "runs": [{"name": TOY, "norm": TOY}, {"name": "nn", "norm": "nn"}]})
    drawn = []
    plot = Axes.plot

    def spy(self, *args, **kwargs):
        drawn.append((kwargs.get("label"), kwargs.get("color")))
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", spy)
    write_report(study)
    assert TOY in (study / "report.md").read_text()
    runs = collect_runs(study)
    assert [norm_kind(r) for r in study_roles(study_design(study), runs).variants] == [TOY, "nn"]
    assert (TOY, TOY_COLOR) in drawn and ("nn", norm_info("nn").color) in drawn

    # its label in a figure legend (the batch-size figure, drawn for the toy's runs)
    drawn.clear()
    toy_run = next(r for r in runs if r.name == TOY)
    plot_batch({TOY: [toy_run]}, {TOY: 8}, tmp_path / "batch.png", {})
    assert (TOY_LABEL, TOY_COLOR) in drawn


def test_a_toy_kind_with_batch_statistics_gets_the_batch_checks(tmp_path):
    register_norm("toy_bn", lambda c: nn.BatchNorm2d(c), label="toy BN", batch_stats=True)
    try:
        cfg = config("data", tmp_path / "run", norm="toy_bn")
        assert resolve_config(cfg).norm == "toy_bn"
        with pytest.raises(UsageError, match="computes batch statistics; batch_size must be"):
            resolve_config(config("data", tmp_path / "run", norm="toy_bn", batch_size=1))
        with pytest.raises(UsageError, match="cannot sync"):
            resolve_config(config("data", tmp_path / "run", norm="toy_bn", sync_bn=True))
    finally:
        del NORM_KINDS["toy_bn"]


def test_register_norm_validates_and_the_resolver_names_new_kinds(toy_kind):
    assert get_norm("RMS") is toy_kind and type(make_norm(TOY, 16)) is RMSNorm2d
    assert type(ResNet(1, 3, norm=TOY).norm1) is RMSNorm2d
    with pytest.raises(ValueError, match="valid kinds: torch_bn, bn, in, bin, ln, gn, nn, rms"):
        make_norm("rmsnorm", 16)
    with pytest.raises(ValueError, match="takes no parameter"):
        make_norm("rms:2", 16)
    with pytest.raises(ValueError, match="already registered"):
        register_norm(TOY, RMSNorm2d)
    with pytest.raises(ValueError, match="lowercase"):
        register_norm("Bad:kind", RMSNorm2d)
    with pytest.raises(ValueError, match="sync must be"):
        register_norm("toy_sync", RMSNorm2d, sync="resnorm")  # sync without batch statistics
    # a kind this process has not registered (a study trained elsewhere) still reads
    assert (norm_info("other:3").label, norm_info("other").color) == ("other", "k")
    assert norm_info("other").order > max(k.order for k in NORM_KINDS.values())
