"""TrainConfig: recipes, schedules, the YAML/flag merge, and every invalid setting (exit 2)."""
from __future__ import annotations

import argparse
import dataclasses
import io
import math

import pytest
import torch
import yaml

from resnorm import cli
from resnorm.errors import EXIT_USAGE, DivergedError, UsageError
from resnorm.model import ResNet
from resnorm.rundir import RunDir
from resnorm.train import TrainConfig, config_from_dict, resolve_config, train
from resnorm.train.cli import config_from_args, configure_parser
from resnorm.train.optim import build_optimizer, build_scheduler, lr_factor

BASE = dict(data="some/data", out="runs/x")


def resolved(**overrides) -> TrainConfig:
    return resolve_config(TrainConfig(**{**BASE, **overrides}))


# --- recipes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_size, lr", [(8, 0.00625), (32, 0.025), (128, 0.1)])
def test_default_recipe_scales_the_sgd_lr_with_the_batch_size(batch_size, lr):
    cfg = resolved(batch_size=batch_size)
    assert cfg.lr == pytest.approx(lr)
    assert (cfg.optimizer, cfg.momentum, cfg.nesterov, cfg.weight_decay, cfg.schedule,
            cfg.warmup_epochs, cfg.augment) == ("sgd", 0.9, True, 5e-4, "cosine", 1.0, True)


def test_literal_recipe_is_the_assignments_and_explicit_values_win():
    cfg = resolved(recipe="literal")
    assert (cfg.optimizer, cfg.lr, cfg.nesterov, cfg.weight_decay, cfg.warmup_epochs,
            cfg.augment) == ("sgd", 1e-4, False, 0.0, 0.0, False)
    assert resolved(recipe="literal", augment=True, lr=0.01).augment is True
    assert resolved(recipe="literal", lr=0.01).lr == 0.01


def test_adaptive_optimizers_get_their_own_defaults_and_no_momentum():
    adam, adamw = resolved(optimizer="adam"), resolved(optimizer="adamw")
    assert (adam.lr, adam.weight_decay, adam.momentum, adam.nesterov) == (1e-3, 0.0, None, None)
    assert (adamw.lr, adamw.weight_decay) == (1e-3, 0.05)
    with pytest.raises(UsageError, match="momentum applies to the sgd optimizer only"):
        resolved(optimizer="adam", momentum=0.9)


def test_the_default_recipe_lr_follows_the_global_batch(monkeypatch):
    """Under torchrun, batch_size is per process and DDP averages the gradients of all
    processes: a step is the global batch's, and so is the lr."""
    assert resolve_config(TrainConfig(**BASE, batch_size=8), world_size=4).lr == \
        pytest.approx(0.025)
    monkeypatch.setenv("WORLD_SIZE", "4")  # as torchrun sets it
    assert resolved(batch_size=8).lr == pytest.approx(0.025)
    assert resolved(batch_size=8, lr=0.01).lr == 0.01            # an explicit lr is kept
    assert resolved(batch_size=8, optimizer="adam").lr == 1e-3    # not batch-scaled
    assert resolved(batch_size=8, recipe="literal").lr == 1e-4


def test_sync_bn_settings(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    # global statistics: one image per process still gives BN two values per channel
    assert resolved(batch_size=1, norm="bn", sync_bn=True).batch_size == 1
    with pytest.raises(UsageError, match="batch statistics"):
        resolved(batch_size=1, norm="bn")
    # PyTorch's SyncBatchNorm refuses CPU tensors; ours does not
    with pytest.raises(UsageError, match="sync_bn with norm torch_bn needs CUDA.*use norm bn"):
        resolved(norm="torch_bn", sync_bn=True, device="cpu")
    assert resolved(norm="bn", sync_bn=True, device="cpu").sync_bn is True
    assert resolved(norm="gn", sync_bn=True).sync_bn is True  # nothing to sync: accepted


def test_preset_warmup_never_takes_the_whole_run_but_an_explicit_one_must_fit():
    assert resolved(epochs=1).warmup_epochs == 0.0
    with pytest.raises(UsageError, match="warmup_epochs"):
        resolved(epochs=2, warmup_epochs=2.0)


def test_lr_factor_warmup_cosine_and_step():
    assert [lr_factor(s, 100, 4, "cosine") for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 100, 4, "cosine") == 1.0
    assert lr_factor(52, 100, 4, "cosine") == pytest.approx(0.5)
    assert lr_factor(99, 100, 4, "cosine") == pytest.approx(0.0, abs=1e-3)
    assert [lr_factor(s, 100, 0, "step") for s in (0, 49, 50, 74, 75, 99)] == \
        pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert lr_factor(80, 100, 0, "constant") == 1.0


def test_scheduler_drives_every_group_with_its_multiplier():
    cfg = resolved(norm="bin", epochs=2, warmup_epochs=1.0, lr=0.1)
    model = ResNet(1, 3, norm="bin")
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=4)
    seen = []
    for _ in range(8):
        seen.append({g["name"]: g["lr"] for g in opt.param_groups})
        opt.step()
        sched.step()
    assert [s["weights"] for s in seen[:4]] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert seen[7]["weights"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 3 / 4)))
    assert all(s["bin_gates"] == pytest.approx(10 * s["weights"]) for s in seen)
    # all of the optimizer's and scheduler's state survives weights_only loading
    buffer = io.BytesIO()
    torch.save({"o": opt.state_dict(), "s": sched.state_dict()}, buffer)
    buffer.seek(0)
    torch.load(buffer, weights_only=True)


# --- YAML, flags, and the resolved config ----------------------------------------------------

def parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(argv)


def test_flags_override_the_config_file(tmp_path):
    (tmp_path / "run.yaml").write_text("lr: 0.05\nepochs: 7\nbatch-size: 16\nnorm: gn:4\n")
    cfg = config_from_args(parse(["--config", str(tmp_path / "run.yaml"), "--epochs", "3",
                                  "--no-augment", "--data", "d", "--out", "o"]))
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.norm, cfg.augment) == \
        (0.05, 3, 16, "gn:4", False)
    assert config_from_args(parse(["--data", "d"])) == TrainConfig(data="d")


def test_a_runs_config_yaml_can_be_fed_back():
    cfg = dataclasses.replace(resolved(norm="ln"), num_classes=25)
    text = yaml.safe_dump({**dataclasses.asdict(cfg), "distributed": {"world_size": 2},
                           "environment": {"torch": "x"}})
    assert resolve_config(config_from_dict(yaml.safe_load(text))) == cfg


def test_help_documents_the_recipes_with_an_example():
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    text = parser.format_help()
    assert "literal" in text and "0.1 x batch_size/128" in text and "example" in text
    assert "--warmup-epochs" in text and "--no-augment" in text and "--restart" in text
    assert "--sync-bn" in text and "batch size per process" in text and "torchrun" in text


@pytest.mark.parametrize("overrides, message", [
    (dict(norm="wn"), "unknown norm kind"),
    (dict(norm="gn:5"), "divisible"),
    (dict(n=0), "n must be >= 1"),
    (dict(batch_size=1, norm="bn"), "batch statistics"),
    (dict(batch_size=1, norm="bin"), "batch statistics"),
    (dict(lr=0.0), "lr must be > 0"),
    (dict(lr=-1.0), "lr must be > 0"),
    (dict(epochs=0), "epochs must be >= 1"),
    (dict(momentum=1.5), "momentum"),
    (dict(nesterov=True, momentum=0.0), "nesterov needs momentum"),
    (dict(weight_decay=-1e-4), "weight_decay"),
    (dict(size=30), "divisible by 4"),
    (dict(patience=-1), "patience"),
    (dict(gate_lr_mult=0.0), "gate_lr_mult"),
    (dict(schedule="linear"), "schedule must be one of"),
    (dict(device="tpu"), "device must be one of"),
    (dict(num_classes=1), "num_classes"),
    (dict(data=None), "no dataset"),
    (dict(out=None), "no run folder"),
    (dict(lr="fast"), "lr must be float"),
    (dict(n=2.5), "n must be int"),
])
def test_invalid_settings_are_usage_errors(overrides, message):
    with pytest.raises(UsageError, match=message):
        resolved(**overrides)


def test_bad_config_files(tmp_path):
    for text, message in (("lr: 0.1\nlearning_rate: 2\n", "unknown setting 'learning_rate'"),
                          ("epochs: many\n", "epochs must be int"),
                          ("- 1\n- 2\n", "must hold a mapping"),
                          ("lr: [\n", "not valid YAML")):
        (tmp_path / "c.yaml").write_text(text)
        with pytest.raises(UsageError, match=message):
            config_from_args(parse(["--config", str(tmp_path / "c.yaml")]))
    with pytest.raises(UsageError, match="cannot read config"):
        config_from_args(parse(["--config", str(tmp_path / "missing.yaml")]))


@pytest.fixture(scope="module")
def data(synth_cache):
    """The session's prepared synthetic dataset (conftest.py): 5 classes, 80 train images."""
    return synth_cache.path


def run_cli_error(capsys, *argv) -> str:
    """Run `resnorm train ARGV`; assert exit 2 with one line on stderr; return that line."""
    assert cli.main(["train", "--quiet", *argv]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("resnorm train: error:"), err
    return err[0]


def test_command_line_errors_exit_2_with_one_line(data, tmp_path, capsys):
    common = ["--size", "32", "--n", "1", "--out", str(tmp_path / "r")]
    assert "unknown norm kind" in run_cli_error(capsys, "--data", str(data), "--norm", "xx",
                                                *common)
    assert "does not exist" in run_cli_error(capsys, "--data", str(tmp_path / "nope"), *common)
    assert "dataset has 5 classes" in run_cli_error(capsys, "--data", str(data),
                                                    "--num-classes", "25", *common)
    assert "nothing to resume" in run_cli_error(capsys, "--data", str(data), "--resume", *common)
    assert "fewer than one batch" in run_cli_error(capsys, "--data", str(data), "--batch-size",
                                                   "128", *common)
    assert "holds 32px images" in run_cli_error(capsys, "--data", str(data), "--size", "64",
                                                "--out", str(tmp_path / "r"))
    assert "needs CUDA" in run_cli_error(capsys, "--data", str(data), "--norm", "torch_bn",
                                         "--sync-bn", "--device", "cpu", *common)
    if not torch.cuda.is_available():
        assert "CUDA is not available" in run_cli_error(capsys, "--data", str(data), "--device",
                                                        "cuda", *common)


def test_restart_discards_a_run_and_trains_again(data, tmp_path):
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "r"), size=32, n=1, batch_size=16,
                      epochs=1)
    train(cfg, progress=False)
    (tmp_path / "r" / "keep.txt").write_text("not ours")
    first = (tmp_path / "r" / "final.json").stat().st_mtime_ns
    with pytest.raises(UsageError, match="epochs: 1 -> 2"):
        train(dataclasses.replace(cfg, epochs=2), progress=False)
    final = train(dataclasses.replace(cfg, epochs=2), resume="restart", progress=False)
    assert final["epochs_run"] == 2
    assert (tmp_path / "r" / "final.json").stat().st_mtime_ns != first
    assert (tmp_path / "r" / "keep.txt").exists()  # only the run's own files are removed


def test_restart_leaves_nothing_of_the_run_it_discards(data, tmp_path):
    """--restart removes every file the earlier run wrote, predictions.npz included: a new run
    that diverges before its first checkpoint writes none, and must not show the old one's."""
    run = tmp_path / "r"
    cfg = TrainConfig(data=str(data), out=str(run), size=32, n=1, batch_size=16, epochs=1)
    train(cfg, progress=False)
    assert (run / "predictions.npz").exists() and (run / "best.pt").exists()
    diverging = dataclasses.replace(cfg, norm="nn", lr=1e6, warmup_epochs=0.0)
    with pytest.raises(DivergedError):
        train(diverging, resume="restart", progress=False)
    assert not (run / "predictions.npz").exists() and not (run / "best.pt").exists()
    assert RunDir(run).final()["status"] == "diverged" and RunDir(run).predictions() is None


def test_compile_mode_reaches_torch_compile(data, tmp_path, monkeypatch):
    """--compile-mode is passed to torch.compile (recorded here; nothing is compiled), is a
    checked choice, and may change when a run resumes (it changes speed, not results)."""
    from resnorm.train import RESUMABLE_CHANGES

    modes = []

    def fake_compile(module, **kwargs):
        modes.append(kwargs.get("mode"))
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = config_from_args(parse(["--data", str(data), "--out", str(tmp_path / "r"), "--size",
                                  "32", "--n", "1", "--batch-size", "16", "--epochs", "1",
                                  "--device", "cpu", "--compile",
                                  "--compile-mode", "reduce-overhead"]))
    assert cfg.compile_mode == "reduce-overhead"
    train(cfg, progress=False)
    assert modes == ["reduce-overhead"]
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["compile_mode"] == \
        "reduce-overhead"
    modes.clear()
    train(dataclasses.replace(cfg, compile=False), progress=False)  # finished: a no-op
    assert modes == [] and TrainConfig().compile_mode == "default"
    assert "compile_mode" in RESUMABLE_CHANGES
    with pytest.raises(UsageError, match="compile_mode must be one of default, reduce-overhead"):
        resolved(compile_mode="fast")
    with pytest.raises(SystemExit):
        parse(["--compile-mode", "fast"])
    help_text = argparse.ArgumentParser()
    configure_parser(help_text)
    assert "CUDA graphs" in help_text.format_help()
