"""--amp auto (bf16 where the GPU has it natively, else fp16 + GradScaler) and the fp16
skipped-step bookkeeping, on the CPU: the GPU's compute capability is patched, and the loss
scaler is torch's own GradScaler on the CPU."""
from __future__ import annotations

import math

import pytest
import torch

from resnorm.data import BatchStream
from resnorm.errors import UsageError
from resnorm.metrics import METRICS_COLUMNS, read_metrics_csv, write_metrics_csv
from resnorm.model import ResNet
from resnorm.checkpoint import Checkpoint
from resnorm.train.config import TrainConfig
from resnorm.train.loop import (LossScaleCollapsed, NonFiniteLoss, TrainParts,
                                train_one_epoch)
from resnorm.train.progress import Progress
from resnorm.train.runtime import Runtime, choose_amp

CUDA0 = torch.device("cuda", 0)


@pytest.fixture
def capability(monkeypatch):
    """Set the (patched) compute capability of the GPU."""
    def set_to(major: int, minor: int) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major,
                                                                                      minor))
    return set_to


@pytest.mark.parametrize("cc, dtype, reason", [
    ((7, 0), torch.float16, "fp16 with GradScaler: sm_70 has no native bf16"),
    ((7, 5), torch.float16, "fp16 with GradScaler: sm_75 has no native bf16"),
    ((8, 0), torch.bfloat16, "bf16: sm_80 has native bf16"),
    ((8, 6), torch.bfloat16, "bf16: sm_86 has native bf16"),
    ((9, 0), torch.bfloat16, "bf16: sm_90 has native bf16"),
])
def test_auto_picks_bf16_where_native_else_fp16(capability, cc, dtype, reason):
    capability(*cc)
    assert choose_amp("auto", CUDA0) == (dtype, reason, None)


def test_auto_is_off_without_cuda():
    dtype, reason, warning = choose_amp("auto", torch.device("cpu"))
    assert dtype is None and warning is None
    assert reason == "off: amp auto uses autocast on CUDA only (device cpu)"


def test_explicit_bf16_without_native_bf16_is_allowed_with_a_warning(capability):
    capability(7, 5)
    dtype, reason, warning = choose_amp("bf16", CUDA0)
    assert dtype is torch.bfloat16
    assert reason == "bf16: --amp bf16 (sm_75 has no native bf16: emulated, slow)"
    assert "sm_75" in warning and "--amp auto" in warning and "\n" not in warning
    capability(8, 0)  # where it is native: no warning
    assert choose_amp("bf16", CUDA0) == (torch.bfloat16, "bf16: --amp bf16", None)


def test_explicit_choices(capability):
    capability(9, 0)
    assert choose_amp("fp16", CUDA0) == (torch.float16, "fp16 with GradScaler: --amp fp16",
                                         None)
    assert choose_amp("off", CUDA0) == (None, "off: --amp off", None)
    assert choose_amp("bf16", torch.device("cpu"))[0] is torch.bfloat16
    with pytest.raises(UsageError, match="fp16 needs a CUDA device"):
        choose_amp("fp16", torch.device("cpu"))


@pytest.fixture
def cuda_flags():
    """Runtime.for_config sets these process-wide flags on CUDA: restored afterwards."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)
    yield
    (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
     torch.backends.cuda.matmul.allow_tf32) = saved


def test_runtime_records_the_choice(monkeypatch, capability, cuda_flags):
    """Runtime.for_config on a (patched) T4: fp16, which enables train.run's GradScaler
    (`enabled=rt.amp is torch.float16`), and the reason for config.yaml."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    capability(7, 5)
    rt = Runtime.for_config(TrainConfig(device="cuda"))
    assert rt.device == CUDA0 and rt.amp is torch.float16 and rt.amp_warning is None
    assert rt.amp_reason == "fp16 with GradScaler: sm_75 has no native bf16"
    capability(9, 0)
    rt = Runtime.for_config(TrainConfig(device="cuda", amp="auto"))
    assert rt.amp is torch.bfloat16 and rt.amp_reason == "bf16: sm_90 has native bf16"
    assert Runtime.for_config(TrainConfig(device="cpu")).amp_reason.startswith("off:")


# --- skipped steps ----------------------------------------------------------------------------

STEPS = 4  # batches per epoch below


def _parts(init_scale: float = 2.0 ** 16):
    torch.manual_seed(0)
    model = ResNet(1, 3, norm="bn")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, enabled=True)
    return TrainParts(model, model, optimizer, scheduler, scaler)


def _stream():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (STEPS * 4, 3, 8, 8), dtype=torch.uint8, generator=gen)
    labels = torch.arange(STEPS * 4) % 3
    return BatchStream(images, labels, 4, device="cpu", mean=(0.5,) * 3, std=(0.25,) * 3,
                       shuffle=True, drop_last=True)


def _inf_gradient_at(parts: TrainParts, bad_steps) -> None:
    """Make the fc weight's gradient inf in the given steps (1-based), as an fp16 overflow."""
    calls = {"n": 0}

    def hook(grad):
        calls["n"] += 1
        return grad * math.inf if calls["n"] in bad_steps else grad
    parts.model.fc.weight.register_hook(hook)


def _epoch(parts, epoch=1, global_step=0):
    rt = Runtime(torch.device("cpu"), None, False)
    return train_one_epoch(parts, _stream(), rt, Progress(False, 1, every=1), epoch,
                           global_step, 3)


def test_an_inf_gradient_is_a_skipped_step_not_divergence(recwarn):
    parts = _parts()
    _inf_gradient_at(parts, {1})  # the run's very first step
    before = {k: v.clone() for k, v in parts.model.state_dict().items()}
    stats, _, _ = _epoch(parts)
    assert stats["skipped_steps"] == 1
    assert parts.scaler.get_scale() == 2.0 ** 15  # halved once, not grown back (2000 steps)
    assert parts.scheduler.last_epoch == STEPS    # the schedule counts skipped steps too
    after = parts.model.state_dict()
    assert not torch.equal(before["fc.weight"], after["fc.weight"])  # the other steps trained
    assert all(torch.isfinite(v.float()).all() for v in after.values())
    assert math.isfinite(stats["loss"])
    # torch's "lr_scheduler.step() before optimizer.step()" warning is not shown for it
    assert not [w for w in recwarn if "lr_scheduler.step()" in str(w.message)]


def test_no_skipped_steps_without_overflow_or_without_a_scaler():
    stats, _, _ = _epoch(_parts())
    assert stats["skipped_steps"] == 0
    parts = _parts()
    parts.scaler = torch.amp.GradScaler("cpu", enabled=False)  # bf16 / float32 runs
    assert _epoch(parts)[0]["skipped_steps"] == 0


def test_a_collapsed_loss_scale_is_divergence():
    """Every step overflowing: the scale halves per step; below 1 the run diverged."""
    parts = _parts(init_scale=4.0)
    _inf_gradient_at(parts, set(range(1, 100)))
    with pytest.raises(LossScaleCollapsed) as info:
        _epoch(parts)
    assert isinstance(info.value, NonFiniteLoss)  # train.run records it as diverged
    assert info.value.where == {"epoch": 1, "step": STEPS, "global_step": STEPS}
    assert "loss scale fell to 0.25" in str(info.value) and f"{STEPS} of {STEPS}" in str(
        info.value)


def test_a_few_skips_from_a_high_scale_are_not_divergence():
    parts = _parts(init_scale=8.0)
    _inf_gradient_at(parts, {1, 2, 3})  # 8 -> 1: still >= MIN_LOSS_SCALE
    assert _epoch(parts)[0]["skipped_steps"] == 3
    assert parts.scaler.get_scale() == 1.0


def test_a_non_finite_loss_is_still_divergence_under_fp16():
    """A non-finite float32 loss (the forward overflowed) is divergence, scaler or not."""
    parts = _parts()
    calls = {"n": 0}

    def poison(module, args, output):
        calls["n"] += 1
        return output * math.nan if calls["n"] == 2 else output
    parts.model.fc.register_forward_hook(poison)
    with pytest.raises(NonFiniteLoss) as info:
        _epoch(parts)
    assert not isinstance(info.value, LossScaleCollapsed)
    assert info.value.where["step"] == 2


# --- metrics.csv: the skipped_steps column ----------------------------------------------------

def test_metrics_csv_has_skipped_steps_and_reads_files_without_it(tmp_path):
    assert METRICS_COLUMNS[-1] == "skipped_steps"
    row = {c: 1.0 for c in METRICS_COLUMNS} | {"epoch": 1, "skipped_steps": 2}
    write_metrics_csv([row], tmp_path / "new.csv")
    assert read_metrics_csv(tmp_path / "new.csv")[0]["skipped_steps"] == 2
    # a row kept from before the column (a resumed run's history) still writes, as 0
    old_row = {k: v for k, v in row.items() if k != "skipped_steps"}
    write_metrics_csv([old_row], tmp_path / "kept.csv")
    assert read_metrics_csv(tmp_path / "kept.csv")[0]["skipped_steps"] == 0
    # a metrics.csv written before the column reads, with skipped_steps 0
    old = [c for c in METRICS_COLUMNS if c != "skipped_steps"]
    (tmp_path / "old.csv").write_text(",".join(old) + "\n" + ",".join(
        "1" if c == "epoch" else "0.5" for c in old) + "\n")
    back = read_metrics_csv(tmp_path / "old.csv")[0]
    assert back["skipped_steps"] == 0 and back["epoch"] == 1 and back["val_acc"] == 0.5
    # and an older reader (columns by name, extra ones ignored) reads the new file
    import csv
    with open(tmp_path / "new.csv", newline="") as f:
        assert [r["val_acc"] for r in csv.DictReader(f)] == ["1.0"]


def test_a_cpu_run_records_amp_and_skipped_steps(synth_cache, tmp_path, one_thread):
    """End to end on the CPU: config.yaml says which amp and why; metrics.csv has the
    skipped_steps column (0: no loss scaler without fp16)."""
    import yaml

    from resnorm.train import train

    out = tmp_path / "run"
    train(TrainConfig(data=str(synth_cache.path), out=str(out), size=32, n=1, batch_size=16,
                      epochs=1, eval_batch_size=64), progress=False)
    env = yaml.safe_load((out / "config.yaml").read_text())["environment"]
    assert env["amp"] == "off" and env["amp_reason"].startswith("off: amp auto")
    assert [row["skipped_steps"] for row in read_metrics_csv(out / "metrics.csv")] == [0]


def test_resuming_under_fp16_from_a_checkpoint_without_it():
    """amp may change on resume: a bf16/float32 checkpoint (empty scaler state) resumes under
    fp16 with a fresh scale, and an fp16 checkpoint resumes without a scaler."""
    without = _parts()
    without.scaler = torch.amp.GradScaler("cpu", enabled=False)
    saved = _checkpoint(without)
    assert saved.scaler == {}
    fp16 = _parts()
    _restore(fp16, saved)
    assert fp16.scaler.get_scale() == 2.0 ** 16
    _epoch(fp16)  # trains
    back = _parts()
    back.scaler = torch.amp.GradScaler("cpu", enabled=False)
    _restore(back, _checkpoint(fp16))
    assert not back.scaler.is_enabled()


def _checkpoint(parts: TrainParts) -> Checkpoint:
    return Checkpoint.capture(model=parts.model, optimizer=parts.optimizer,
                              scheduler=parts.scheduler, scaler=parts.scaler, config={},
                              model_args={}, classes=[], distributed={}, state={})


def _restore(parts: TrainParts, checkpoint: Checkpoint) -> None:
    checkpoint.restore(parts.model, parts.optimizer, parts.scheduler, parts.scaler)
