"""What ranks compute together, on CPU with gloo (2 processes, loopback), in float64.

- Synced BN and BIN: 2 ranks x batch B give what 1 process gives with batch 2B: outputs,
  input gradients, parameter gradients (summed over ranks, as DDP's average of per-rank
  gradients of per-rank losses is the single process's gradient of their mean), running
  statistics, and eval outputs. Checked over two training steps, so the running statistics
  are updated twice.
- Unsynced BN: each rank normalizes by its own B samples (one process with batch B).
- IN, LN, GN: per-sample statistics, nothing to sync; each rank's outputs are the rows of the
  single-process outputs.
- The collective helpers `train` relies on (first diverged step over ranks, rank 0's buffers).

One start of two processes serves every test of this file.
"""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from forked import fork_server
from resnorm.distributed import broadcast_buffers_, is_main_process
from resnorm.norms import BatchNorm2d, enable_sync_, make_norm
from resnorm.train.loop import _first_bad_on_any_rank

TOL = dict(rtol=1e-10, atol=1e-10)
WORLD = 2
C = 4
STEPS = 2
SYNCED = ("bn", "bin")
PER_SAMPLE = ("in", "ln", "gn:2")
KINDS = SYNCED + PER_SAMPLE + ("bn_unsynced",)
# (rank 0's, rank 1's first non-finite step; -1: none) -> the step every rank must report
FIRST_BAD = [((-1, -1), -1), ((-1, 3), 3), ((5, 2), 2)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_layer(kind: str, sync: bool) -> nn.Module:
    """A float64 layer whose parameters (weight, bias, BIN gate) are not at their defaults."""
    layer = make_norm(kind.removesuffix("_unsynced"), C).double()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in layer.parameters():  # in [0.1, 0.9]: a gate strictly between BN and IN
            p.copy_(torch.rand(p.shape, generator=generator, dtype=p.dtype) * 0.8 + 0.1)
    return enable_sync_(layer) if sync else layer


def run_steps(layer: nn.Module, inputs, upstreams) -> dict:
    """STEPS training steps (gradients accumulate), then one eval forward of inputs[0]."""
    layer.train()
    out, grad = [], []
    for x, u in zip(inputs, upstreams):
        x = x.clone().requires_grad_(True)
        y = layer(x)
        (y * u).sum().backward()
        out.append(y.detach())
        grad.append(x.grad)
    layer.eval()
    with torch.no_grad():
        evaluated = layer(inputs[0])
    return {"out": out, "grad": grad, "eval": evaluated,
            "params": {n: p.grad.clone() for n, p in layer.named_parameters()},
            "buffers": {n: b.clone() for n, b in layer.named_buffers()}}


def _worker(rank, port, inputs, upstreams, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        mine = lambda ts: [t.chunk(WORLD)[rank] for t in ts]  # noqa: E731
        out = {kind: run_steps(make_layer(kind, sync=kind in SYNCED), mine(inputs),
                               mine(upstreams)) for kind in KINDS}
        # helpers: the first bad step over ranks; rank 0's buffers on every rank
        out["first_bad"] = [int(_first_bad_on_any_rank(torch.tensor(steps[rank])))
                            for steps, _ in FIRST_BAD]
        layer = BatchNorm2d(C)
        layer.running_mean.fill_(rank + 1.0)
        broadcast_buffers_(layer)
        out["broadcast"] = layer.running_mean.clone()
        out["is_main"] = is_main_process()
        results[rank] = out
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def data():
    generator = torch.Generator().manual_seed(0)
    # 2B = 6 samples; a large mean and odd spatial size make the statistics non-trivial
    inputs = [torch.randn(6, C, 3, 5, generator=generator, dtype=torch.float64) * 3 + 10
              for _ in range(STEPS)]
    upstreams = [torch.randn(6, C, 3, 5, generator=generator, dtype=torch.float64)
                 for _ in range(STEPS)]
    return inputs, upstreams


@pytest.fixture(scope="module")
def ranks(data):
    """What each of the 2 ranks computed."""
    inputs, upstreams = data
    results = mp.Manager().dict()
    mp.start_processes(_worker, args=(_free_port(), inputs, upstreams, results), nprocs=WORLD,
                       start_method=fork_server())
    return [results[r] for r in range(WORLD)]


def assert_rank_split_of(ranks, kind, want):
    """The ranks' results put together equal `want`, computed by one process."""
    got = [r[kind] for r in ranks]
    for step in range(STEPS):
        torch.testing.assert_close(torch.cat([g["out"][step] for g in got]), want["out"][step],
                                   **TOL)
        torch.testing.assert_close(torch.cat([g["grad"][step] for g in got]),
                                   want["grad"][step], **TOL)
    torch.testing.assert_close(torch.cat([g["eval"] for g in got]), want["eval"], **TOL)
    assert want["params"].keys() == got[0]["params"].keys()
    for name, grad in want["params"].items():
        torch.testing.assert_close(sum(g["params"][name] for g in got), grad, **TOL)
    for g in got:
        assert g["buffers"].keys() == want["buffers"].keys()
        for name, buffer in want["buffers"].items():
            torch.testing.assert_close(g["buffers"][name], buffer, **TOL)


@pytest.mark.slow
@pytest.mark.parametrize("kind", SYNCED + PER_SAMPLE)
def test_two_ranks_equal_one_process_with_the_global_batch(ranks, data, kind):
    """Synced bn/bin and per-sample in/ln/gn: the single-process layer (fast path, unsynced)
    on the whole batch 2B."""
    want = run_steps(make_layer(kind, sync=False), *data)
    assert_rank_split_of(ranks, kind, want)


def test_per_sample_norms_have_no_sync_switch():
    for kind in PER_SAMPLE:
        assert not any(isinstance(m, BatchNorm2d) for m in make_norm(kind, C).modules())


@pytest.mark.slow
def test_unsynced_bn_normalizes_each_rank_by_its_own_batch(ranks, data):
    inputs, upstreams = data
    for rank, got in enumerate(ranks):
        mine = lambda ts: [t.chunk(WORLD)[rank] for t in ts]  # noqa: E731
        want = run_steps(make_layer("bn", sync=False), mine(inputs), mine(upstreams))
        for step in range(STEPS):
            torch.testing.assert_close(got["bn_unsynced"]["out"][step], want["out"][step], **TOL)
        torch.testing.assert_close(got["bn_unsynced"]["buffers"]["running_mean"],
                                   want["buffers"]["running_mean"], **TOL)
    # ... which is not the global batch's normalization
    whole = run_steps(make_layer("bn", sync=False), inputs, upstreams)
    assert not torch.allclose(torch.cat([g["bn_unsynced"]["out"][0] for g in ranks]),
                              whole["out"][0])


@pytest.mark.parametrize("kind", SYNCED)
def test_sync_without_a_process_group_is_the_local_layer(data, kind):
    synced = run_steps(make_layer(kind, sync=True), *data)
    local = run_steps(make_layer(kind, sync=False), *data)
    for key in ("out", "grad"):
        for a, b in zip(synced[key], local[key]):
            torch.testing.assert_close(a, b, **TOL)
    for key in ("params", "buffers"):
        for name in local[key]:
            torch.testing.assert_close(synced[key][name], local[key][name], **TOL)


def test_enable_sync_switches_our_batch_norms_only():
    from resnorm.model import ResNet
    for kind, synced in (("bn", 1 + 2 * 3 * 1), ("bin", 1 + 2 * 3 * 1), ("gn", 0)):
        model = enable_sync_(ResNet(n=1, num_classes=3, norm=kind))
        assert sum(getattr(m, "sync", False) for m in model.modules()) == synced, kind
        enable_sync_(model, False)
        assert not any(getattr(m, "sync", False) for m in model.modules())


@pytest.mark.slow
def test_collective_helpers(ranks):
    for rank, got in enumerate(ranks):
        assert got["first_bad"] == [want for _, want in FIRST_BAD]
        torch.testing.assert_close(got["broadcast"], torch.full((C,), 1.0))
        assert got["is_main"] == (rank == 0)
