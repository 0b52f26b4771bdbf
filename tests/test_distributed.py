"""Cross-process statistics on CPU with gloo: 2 ranks x batch B against 1 process x batch 2B."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from forked import fork_server
from resnorm.distributed import (DistInfo, contiguous_shard, in_turn, init_from_env,
                                 launched_world_size, parse_shard, shard_indices,
                                 sync_batch_mean_var)

TOL = dict(rtol=1e-10, atol=1e-10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _normalize(x, mean, var):
    return (x - mean.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + 1e-5)


def _stats_worker(rank, world_size, port, x, upstream, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        local = x.chunk(world_size)[rank].clone().requires_grad_(True)
        mean, var, count = sync_batch_mean_var(local)
        # each rank's loss covers its own samples: their sum is the single-process loss
        _normalize(local, mean, var).mul(upstream.chunk(world_size)[rank]).sum().backward()
        results[rank] = (mean.detach(), var.detach(), count, local.grad)
    finally:
        dist.destroy_process_group()


def test_sync_batch_stats_and_gradients_equal_one_process_with_the_global_batch():
    torch.manual_seed(0)
    x = (torch.randn(6, 4, 3, 5, dtype=torch.float64) * 3 + 10)
    upstream = torch.randn(x.shape, dtype=torch.float64)
    results = mp.Manager().dict()
    mp.start_processes(_stats_worker, args=(2, _free_port(), x, upstream, results), nprocs=2,
                       start_method=fork_server())

    ref_x = x.clone().requires_grad_(True)
    var, mean = torch.var_mean(ref_x, dim=(0, 2, 3), unbiased=False)
    _normalize(ref_x, mean, var).mul(upstream).sum().backward()
    grads = []
    for rank in range(2):
        r_mean, r_var, r_count, r_grad = results[rank]
        torch.testing.assert_close(r_mean, mean.detach(), **TOL)
        torch.testing.assert_close(r_var, var.detach(), **TOL)
        assert r_count == 6 * 3 * 5
        grads.append(r_grad)
    torch.testing.assert_close(torch.cat(grads), ref_x.grad, **TOL)


def test_single_process_stats_need_no_process_group():
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    mean, var, count = sync_batch_mean_var(x)
    ref_var, ref_mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(mean, ref_mean, **TOL)
    torch.testing.assert_close(var, ref_var, **TOL)
    assert count == 16


@pytest.mark.parametrize("num_items", [0, 1, 5, 12, 13])
@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_shards_cover_each_item_exactly_once(num_items, count):
    shards = [shard_indices(num_items, i, count) for i in range(count)]
    flat = sorted(i for shard in shards for i in shard)
    assert flat == list(range(num_items))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("text,expected", [("0/1", (0, 1)), ("2/4", (2, 4))])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["4/4", "-1/2", "1", "a/b", "0/0"])
def test_parse_shard_rejects_bad_values(text):
    with pytest.raises(ValueError, match="shard"):
        parse_shard(text)


@pytest.mark.parametrize("num_items", [0, 1, 5, 30])
@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_contiguous_shards_cover_each_row_exactly_once(num_items, count):
    blocks = [contiguous_shard(num_items, i, count) for i in range(count)]
    assert [i for start, stop in blocks for i in range(start, stop)] == list(range(num_items))
    sizes = [stop - start for start, stop in blocks]
    assert max(sizes) - min(sizes) <= 1


def test_outside_torchrun_nothing_is_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launched_world_size() == 1
    info = init_from_env("cpu")
    assert info == DistInfo() and info.is_main and not info.enabled
    assert not dist.is_initialized()
    calls = []
    assert in_turn(info, lambda: calls.append(1) or "built") == "built" and calls == [1]
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert launched_world_size() == 4
