"""End-to-end training runs on a tiny synthetic dataset (32x32, n=1, CPU, a few epochs)."""
from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml

from resnorm import cli
from resnorm.cpu_memory import keep_freed_memory
from resnorm.data import BatchStream, load_cache
from resnorm.errors import EXIT_DIVERGED, DivergedError
from resnorm.metrics import METRICS_COLUMNS, TIMING_COLUMNS
from resnorm.norms import BatchInstanceNorm2d
from resnorm.train import TrainConfig, load_run_model, resolve_config, train
from resnorm.train.loop import evaluate
from resnorm.train.optim import build_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")

FINAL_KEYS = {"name", "status", "epochs_run", "best_epoch", "wall_time_s", "parameters",
              "classes", "splits", "eval"}
SPLIT_KEYS = {"loss", "acc", "micro_f1", "macro_f1", "per_class_f1", "confusion"}


@pytest.fixture(scope="module")
def data(synth_cache):
    """The session's prepared synthetic dataset (conftest.py): 5 classes, 80 train and 30 val
    images at 32x32, passed to `train` as a cache folder."""
    assert (len(synth_cache.classes), len(synth_cache.splits["train"]),
            len(synth_cache.splits["val"])) == (5, 80, 30)
    return synth_cache.path


def config(data, out, **overrides) -> TrainConfig:
    settings = dict(data=str(data), out=str(out), size=32, n=1, batch_size=8, epochs=2,
                    eval_batch_size=32)
    return TrainConfig(**{**settings, **overrides})


def rows_without_timing(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS}
                for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def bn_run(data, tmp_path_factory):
    """A completed 3-epoch BN run (shared by the tests that only read its files)."""
    out = tmp_path_factory.mktemp("runs") / "bn"
    torch.set_num_threads(1)
    final = train(config(data, out, norm="bn", epochs=3), progress=False)
    return out, final


def test_run_writes_every_file_with_the_documented_contents(bn_run, data):
    out, final = bn_run
    names = {p.name for p in out.iterdir()}
    assert {"config.yaml", "metrics.csv", "last.pt", "best.pt", "final.json",
            "curves.png"} <= names
    assert any(n.startswith("events.out.tfevents.") for n in names)
    assert not any(n.startswith(".") for n in names)  # no temp files left behind

    # config.yaml: every field resolved, plus the environment it ran in
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["optimizer"] == "sgd" and saved["lr"] == pytest.approx(0.1 * 8 / 128)
    assert saved["num_classes"] == 5 and saved["name"] == "bn"
    env = saved["environment"]
    assert {"resnorm", "torch", "device", "git_commit", "data_cache"} <= set(env)
    assert env["device"] == "cpu"

    # metrics.csv: the documented columns, one row per epoch
    with open(out / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == METRICS_COLUMNS
        rows = list(reader)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert all(float(r["train_micro_f1"]) == float(r["train_acc"]) for r in rows)

    # final.json: the contract keys; the best checkpoint evaluated on train and val
    assert json.loads((out / "final.json").read_text()) == final
    assert set(final) == FINAL_KEYS
    assert final["splits"] == {"val": {"images": 30, "scored": 30, "leaked": 0}}
    assert final["status"] == "completed" and final["epochs_run"] == 3
    assert final["best_epoch"] == 1 + max(range(3), key=lambda i: (float(rows[i]["val_acc"]), -i))
    assert set(final["eval"]) == {"train", "val"}
    for split, count in (("train", 80), ("val", 30)):
        scores = final["eval"][split]
        assert set(scores) == SPLIT_KEYS
        assert len(scores["per_class_f1"]) == 5
        assert sum(map(sum, scores["confusion"])) == count
        assert scores["micro_f1"] == pytest.approx(scores["acc"], abs=1e-6)
    best_row = rows[final["best_epoch"] - 1]
    assert final["eval"]["val"]["acc"] == float(best_row["val_acc"])
    assert final["classes"] == load_cache(data).classes
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoints_load_safely_and_rebuild_the_best_model(bn_run, data):
    out, final = bn_run
    for name in ("last.pt", "best.pt"):
        state = torch.load(out / name, weights_only=True)  # tensors and plain containers only
        assert {"model", "optimizer", "scheduler", "rng", "state", "config"} <= set(state)
    model, cfg = load_run_model(out)
    assert not model.training and cfg["norm"] == "bn" and cfg["num_classes"] == 5
    # The rebuilt model reproduces final.json's val accuracy from the cache, independently.
    prepared = load_cache(data)
    val = prepared.splits["val"]
    stream = BatchStream(val.images, val.labels, 7, device="cpu", mean=prepared.mean,
                         std=prepared.std)
    assert evaluate(model, stream, 5)["acc"] == final["eval"]["val"]["acc"]
    last_model, _ = load_run_model(out, which="last")
    assert last_model.fc.weight.shape == (5, 64)


def test_tensorboard_has_the_epoch_scalars(bn_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = bn_run
    events = EventAccumulator(str(out))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "loss/val", "acc/val", "macro_f1/val", "run/lr"} <= tags
    assert [e.step for e in events.Scalars("acc/val")] == [1, 2, 3]


def test_rerunning_a_finished_run_is_a_no_op_that_says_so(bn_run, data, capsys):
    out, final = bn_run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert train(config(data, out, norm="bn", epochs=3), progress=False) == final
    assert "already finished" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_two_identical_cpu_runs_write_identical_metrics(bn_run, data, tmp_path):
    out, final = bn_run
    again = train(config(data, tmp_path / "again", norm="bn", epochs=3), progress=False)
    assert rows_without_timing(tmp_path / "again" / "metrics.csv") == \
        rows_without_timing(out / "metrics.csv")
    assert again["eval"] == final["eval"]


def test_changed_settings_are_refused_for_an_existing_run(bn_run, data):
    out, _ = bn_run
    with pytest.raises(ValueError, match="epochs: 3 -> 4"):
        train(config(data, out, norm="bn", epochs=4), progress=False)


def test_early_stopping_keeps_and_evaluates_the_best_epoch(data, tmp_path):
    # min_delta 1.0: no epoch after the first can count as an improvement
    final = train(config(data, tmp_path / "es", epochs=5, patience=2, min_delta=1.0),
                  progress=False)
    rows = rows_without_timing(tmp_path / "es" / "metrics.csv")
    assert final["status"] == "early_stopped"
    assert final["epochs_run"] == 3 and len(rows) == 3
    assert final["best_epoch"] == 1
    assert final["eval"]["val"]["acc"] == float(rows[0]["val_acc"])

    # Killed after the last epoch but before final.json: a re-run only does the final eval.
    (tmp_path / "es" / "final.json").unlink()
    again = train(config(data, tmp_path / "es", epochs=5, patience=2, min_delta=1.0),
                  progress=False)
    assert rows_without_timing(tmp_path / "es" / "metrics.csv") == rows
    assert {**again, "wall_time_s": 0} == {**final, "wall_time_s": 0}


def test_divergence_stops_cleanly_with_status_and_exit_code(data, tmp_path, capsys):
    cfg = config(data, tmp_path / "div", norm="nn", lr=1e6, warmup_epochs=0.0, epochs=3)
    with pytest.raises(DivergedError, match="non-finite loss at epoch 1"):
        train(cfg, progress=False)
    final = json.loads((tmp_path / "div" / "final.json").read_text())
    assert final["status"] == "diverged"
    assert final["diverged_at"]["epoch"] == 1 and final["diverged_at"]["step"] >= 1
    assert set(final) == FINAL_KEYS | {"diverged_at"}
    assert (tmp_path / "div" / "curves.png").exists()

    # the command line: exit code 3, one line, no traceback (also when re-run)
    capsys.readouterr()
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "div2"), "--size", "32",
            "--n", "1", "--norm", "nn", "--lr", "1e6", "--warmup-epochs", "0", "--quiet"]
    assert cli.main(argv) == EXIT_DIVERGED
    err = capsys.readouterr().err
    assert "diverged: non-finite loss" in err and "Traceback" not in err
    assert cli.main(argv) == EXIT_DIVERGED
    assert "already finished" in capsys.readouterr().err


def test_bin_gates_are_clamped_trained_and_not_decayed(data, tmp_path):
    cfg = config(data, tmp_path / "bin", norm="bin", epochs=1, lr=0.05, gate_lr_mult=1000.0)
    model_cfg = resolve_config(cfg)
    from resnorm.model import ResNet
    groups = {g["name"]: g for g in build_optimizer(ResNet(1, 5, norm="bin"),
                                                    model_cfg).param_groups}
    assert groups["bin_gates"]["weight_decay"] == 0.0
    assert groups["bin_gates"]["lr"] == pytest.approx(0.05 * 1000)
    assert groups["biases_and_norms"]["weight_decay"] == 0.0
    assert groups["weights"]["weight_decay"] == pytest.approx(5e-4)
    assert all(p.ndim >= 2 for p in groups["weights"]["params"])

    train(cfg, progress=False)
    model, _ = load_run_model(tmp_path / "bin")
    gates = torch.cat([m.gate.detach() for m in model.modules()
                       if isinstance(m, BatchInstanceNorm2d)])
    assert gates.min() >= 0.0 and gates.max() <= 1.0
    assert (gates != 1.0).any()  # they trained
    # with a 1000x learning rate the unclamped gates would leave [0, 1]: some sit on a bound
    assert ((gates == 0.0) | (gates == 1.0)).any()


def test_bf16_autocast_and_channels_last_run_on_cpu(data, tmp_path):
    final = train(config(data, tmp_path / "bf16", epochs=1, amp="bf16", channels_last="on"),
                  progress=False)
    assert final["status"] == "completed"
    assert 0.0 <= final["eval"]["val"]["acc"] <= 1.0
    env = yaml.safe_load((tmp_path / "bf16" / "config.yaml").read_text())["environment"]
    assert env["amp"] == "bfloat16" and env["channels_last"] is True
    # CPU training asks malloc to keep freed memory (where it can: glibc, not opted out)
    assert env["keeps_freed_memory"] is keep_freed_memory()


def test_progress_lines_when_stderr_is_not_a_terminal(data, tmp_path, capsys):
    train(config(data, tmp_path / "log", epochs=1), progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/1 step 3/10 loss" in err and "img/s" in err  # 25 % of 10 steps
    assert "epoch 1/1 lr" in err  # the epoch summary
