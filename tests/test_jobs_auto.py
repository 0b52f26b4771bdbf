"""`resnorm study --jobs auto` (resnorm.study.execution.capacity): K from the GPU's free memory and SMs
or from the CPU cores, and the up-front refusal of an explicit K that cannot fit. The GPUs
are simulated: torch.cuda's functions are patched."""
from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import pytest
import torch

from resnorm.data.cache import CACHE_FORMAT, CACHE_VERSION, MANIFEST
from resnorm.errors import UsageError
from resnorm.model import ResNet
from resnorm.study.execution import capacity
from resnorm.study.execution.capacity import (CUDA_CONTEXT_BYTES, DeviceInfo, auto_jobs, check_jobs_fit,
                                    dataset_bytes, estimate_peak_bytes, saved_activation_bytes)
from resnorm.train.config import TrainConfig

GB = 10 ** 9


def fake_cache(folder, size, train, val):
    """A cache folder as far as the estimate reads it: its manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).write_text(json.dumps({
        "format": CACHE_FORMAT, "version": CACHE_VERSION, "params": {"size": size},
        "splits": {"train": {"count": train}, "val": {"count": val}}}))
    return folder


@pytest.fixture
def birds(tmp_path):
    """The birds set's shape at 256 px: 30,000 + 7,500 images, 7.4 GB of uint8."""
    return fake_cache(tmp_path / "birds-256", 256, 30000, 7500)


def runs(data, count, **overrides):
    settings = dict(data=str(data), out="unused", size=256, n=2, batch_size=32,
                    eval_batch_size=256, device="auto")
    return [TrainConfig(**{**settings, **overrides}) for _ in range(count)]


@pytest.fixture
def gpu(monkeypatch):
    """Simulate one GPU (free bytes, SMs) and a host with `cores` cores."""
    def install(name, free, total, sms, cores=16):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, total))
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None:
                            SimpleNamespace(name=name, total_memory=total,
                                            multi_processor_count=sms))
        monkeypatch.setattr(capacity, "_cores", lambda: cores)
    return install


def test_h200_is_bounded_by_its_sms(gpu, birds):
    gpu("NVIDIA H200", 141 * GB, 143 * GB, 132)
    k, why = auto_jobs(runs(birds, 12))
    assert k == 8  # 132 SMs // 16; memory allows 10 (12.5 GB each of 127 GB usable)
    assert "NVIDIA H200" in why and "limited by SMs" in why and "memory allows 10" in why
    assert "data on the GPU" in why and "\n" not in why
    assert check_jobs_fit(runs(birds, 12), 8).endswith("data on the GPU")
    # fewer runs than that: one job per run
    assert auto_jobs(runs(birds, 3))[0] == 3


def test_h200_with_big_batches_is_bounded_by_memory(gpu, birds):
    gpu("NVIDIA H200", 141 * GB, 143 * GB, 132)
    k, why = auto_jobs(runs(birds, 12, batch_size=256, lr=0.1))
    per_job = estimate_peak_bytes(runs(birds, 1, batch_size=256)[0]) + CUDA_CONTEXT_BYTES \
        + dataset_bytes(runs(birds, 1)[0])
    assert k == int(0.9 * 141 * GB // per_job) < 8 and "limited by memory" in why


def test_t4_fits_one_job_with_its_data_and_refuses_six(gpu, birds):
    gpu("Tesla T4", 15 * GB, 16 * GB, 40, cores=8)
    configs = runs(birds, 12)
    k, why = auto_jobs(configs)
    assert k == 1 and "Tesla T4" in why and "limited by memory" in why
    assert "data on the GPU" in why
    with pytest.raises(UsageError) as info:
        check_jobs_fit(configs, 6)
    message = str(info.value)
    assert "\n" not in message and message.startswith("--jobs 6: 6 job(s) at once need about")
    assert "Tesla T4 has 15.0 GB free" in message and "use --jobs 2 or fewer" in message
    # two fit only with their data streamed from host memory: allowed, and said so
    assert "streamed from host memory" in check_jobs_fit(configs, 2)


def test_a_gpu_too_small_for_one_job_is_refused_in_one_line(gpu, birds):
    gpu("Tiny GPU", 2 * GB, 4 * GB, 8, cores=4)
    with pytest.raises(UsageError) as info:
        auto_jobs(runs(birds, 2))
    message = str(info.value)
    assert "\n" not in message and "one job needs about" in message
    assert "Tiny GPU has 2.0 GB free" in message and "--device cpu" in message
    with pytest.raises(UsageError, match="train on --device cpu or lower batch_size"):
        check_jobs_fit(runs(birds, 2), 1)


def test_mixed_runs_are_counted_by_the_largest_that_run_together(gpu, tmp_path, birds):
    gpu("GPU", 40 * GB, 40 * GB, 640, cores=64)  # many SMs and cores: memory decides
    small = fake_cache(tmp_path / "small", 64, 30000, 7500)
    configs = runs(birds, 1, batch_size=128) + runs(small, 30, size=64)
    need = [estimate_peak_bytes(c) + CUDA_CONTEXT_BYTES + dataset_bytes(c) for c in configs]
    k, why = auto_jobs(configs)
    assert "limited by memory" in why and 1 < k < 30
    assert sum(sorted(need, reverse=True)[:k]) <= 0.9 * 40 * GB
    assert sum(sorted(need, reverse=True)[:k + 1]) > 0.9 * 40 * GB


def test_cpu_is_bounded_by_cores_threads_and_memory(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(capacity, "_cores", lambda: 8)
    monkeypatch.setattr(capacity, "_host_memory", lambda: (1000 * GB, 1000 * GB))
    data = fake_cache(tmp_path / "c", 64, 300, 100)
    configs = runs(data, 12, size=64)
    assert auto_jobs(configs)[0] == 8                 # 8 cores, one thread per job
    assert auto_jobs(configs, threads=2)[0] == 4      # the plan's threads per job
    assert auto_jobs(configs[:3])[0] == 3             # no more jobs than runs
    k, why = auto_jobs(configs)
    assert why.startswith("--jobs auto: 8 on the CPU (8 cores") and "\n" not in why
    one = estimate_peak_bytes(configs[0])             # float32 on the CPU (amp auto: off)
    assert one == estimate_peak_bytes(configs[0], "cpu") > estimate_peak_bytes(configs[0],
                                                                                "cuda")
    monkeypatch.setattr(capacity, "_host_memory", lambda: (int(3.5 * one / 0.9), None))
    assert auto_jobs(configs)[0] == 3                 # by host memory
    assert check_jobs_fit(configs, 6) == ""           # no up-front check on the CPU


def test_device_info_can_be_given():
    info = DeviceInfo("cuda", "Given", 100 * GB, 100 * GB, 32, 4)
    configs = [dict(n=2, size=64, batch_size=32, eval_batch_size=256, device="cpu", data="")]
    k, why = auto_jobs(configs * 5, info)
    assert k == 2 and "limited by SMs" in why     # 32 SMs // 16


def test_dataset_bytes_from_the_manifest(tmp_path, birds):
    assert dataset_bytes(runs(birds, 1)[0]) == 37500 * 3 * 256 * 256
    assert dataset_bytes(runs(tmp_path / "no-cache", 1)[0]) == 0


def test_estimate_grows_with_batch_size_and_precision(birds):
    def peak(**kw):
        return estimate_peak_bytes(runs(birds, 1, **kw)[0], "cuda")
    assert peak(batch_size=32) == peak(batch_size=8)        # evaluation at 256 dominates
    assert peak(batch_size=256) > peak(batch_size=128) > peak(batch_size=32)
    assert peak(amp="off") > peak(amp="bf16") == peak(amp="fp16") == peak()
    assert peak(eval_batch_size=64, batch_size=8) < peak(batch_size=8)
    assert peak(n=3, batch_size=128) > peak(batch_size=128)


def _measured_saved_bytes(norm: str, n: int, size: int, batch: int, bf16: bool,
                          shortcut: str = "A") -> int:
    """Bytes of the tensors a training step saves for its backward (one count per storage)."""
    torch.manual_seed(0)
    model = ResNet(n, 10, norm=norm, shortcut=shortcut)
    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0),
                                           storage.nbytes())
        return t
    x = torch.randn(batch, 3, size, size)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), torch.zeros(batch).long())
    loss.backward()
    return sum(storages.values())


@pytest.mark.parametrize("norm", ["torch_bn", "bn", "bin", "gn", "nn"])
@pytest.mark.parametrize("n, bf16, shortcut", [(1, False, "A"), (2, False, "A"),
                                               (1, True, "A"), (1, False, "B")])
def test_saved_activations_are_covered_by_the_estimate(norm, n, bf16, shortcut, one_thread):
    """The estimate's SAVED_TENSORS = 2.5 per conv output against what autograd saves."""
    size, batch = 32, 4
    measured = _measured_saved_bytes(norm, n, size, batch, bf16, shortcut)
    estimate = saved_activation_bytes(n, size, batch, 2 if bf16 else 4, shortcut)
    assert measured <= estimate
    assert estimate <= (2.5 if norm == "nn" else 1.3) * measured  # and not far above


def test_jobs_flag_accepts_auto():
    from resnorm.study.cli import configure_parser

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    base = ["--data", "d", "--plan", "p.yaml", "--out", "o"]
    assert parser.parse_args(base).jobs == 1
    assert parser.parse_args(base + ["--jobs", "auto"]).jobs == "auto"
    assert parser.parse_args(base + ["--jobs", "4"]).jobs == 4
    assert parser.parse_args(base + ["--jobs", "0"]).jobs == 0  # run_study refuses it (exit 2)
    for bad in ("many", "2.5"):
        with pytest.raises(SystemExit):
            parser.parse_args(base + ["--jobs", bad])
