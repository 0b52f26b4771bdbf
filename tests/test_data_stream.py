"""BatchStream: shapes, normalisation, last-batch policy, determinism, augmentation, sharding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from resnorm.data import BatchStream
from resnorm.data.stream import random_crop_flip
from resnorm.errors import UsageError

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def dataset(n=37, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8), np.arange(n)


def stream(images, labels, batch_size=8, **kwargs):
    kwargs = {"device": "cpu", "mean": MEAN, "std": STD, **kwargs}
    return BatchStream(images, labels, batch_size, **kwargs)


def unnormalise(x):
    return x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


def test_evaluation_yields_every_image_once_in_order_normalised():
    images, labels = dataset(37)
    s = stream(images, labels, 8)
    batches = list(s)
    assert len(s) == len(batches) == 5 and [len(y) for _, y in batches] == [8, 8, 8, 8, 5]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.dtype == torch.float32 and x.shape == (37, 3, 16, 16)
    assert y.dtype == torch.int64 and y.tolist() == list(range(37))
    torch.testing.assert_close(unnormalise(x), torch.from_numpy(images).float() / 255,
                               atol=1e-5, rtol=0)


def test_training_drops_the_partial_batch_so_bn_never_sees_one_image():
    images, labels = dataset(33)                 # 4 x 8 + 1
    s = stream(images, labels, 8, shuffle=True, drop_last=True)
    sizes = [len(y) for _, y in s]
    assert len(s) == 4 and sizes == [8, 8, 8, 8]


def test_too_few_images_for_one_training_batch_is_a_usage_error():
    images, labels = dataset(5)
    with pytest.raises(UsageError, match="fewer than one batch of 8"):
        stream(images, labels, 8, drop_last=True)
    assert len(stream(images, labels, 8)) == 1  # evaluation is fine


def test_order_and_augmentation_depend_only_on_seed_and_epoch():
    images, labels = dataset(40)
    kwargs = dict(shuffle=True, augment=True, drop_last=True)
    a, b = stream(images, labels, seed=3, **kwargs), stream(images, labels, seed=3, **kwargs)
    a.set_epoch(2)
    b.set_epoch(2)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    again = [y for _, y in a]                   # re-iterating the same epoch repeats it
    assert all(torch.equal(p, q) for p, q in zip(again, [y for _, y in b]))
    a.set_epoch(3)
    assert not torch.equal(torch.cat([y for _, y in a]), torch.cat(again))
    other_seed = stream(images, labels, seed=4, **kwargs)
    other_seed.set_epoch(2)
    assert not torch.equal(torch.cat([y for _, y in other_seed]), torch.cat(again))


def test_a_shuffled_epoch_is_a_permutation():
    images, labels = dataset(40)
    s = stream(images, labels, shuffle=True, drop_last=True)
    seen = torch.cat([y for _, y in s])
    assert sorted(seen.tolist()) == list(range(40)) and seen.tolist() != list(range(40))


@pytest.mark.parametrize("pad_mode", ["reflect", "zeros"])
def test_augmented_images_are_padded_crops_or_their_mirror(pad_mode):
    images, labels = dataset(16, size=16)
    s = stream(images, labels, 16, augment=True, seed=1, pad_mode=pad_mode)
    x, y = next(iter(s))
    pixels = (unnormalise(x) * 255).round()
    pad = 16 // 8
    # the reference: torch's own padding of the raw images (zeros = black pixels)
    padded = torch.nn.functional.pad(torch.from_numpy(images).float(), (pad,) * 4,
                                     mode="reflect" if pad_mode == "reflect" else "constant")
    flips, shifts = 0, set()
    for i in range(16):
        matches = [(dy, dx, flip) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                   for flip in (False, True)
                   if torch.equal(pixels[i], (lambda w: w.flip(2) if flip else w)(
                       padded[y[i], :, dy:dy + 16, dx:dx + 16]))]
        assert matches, f"image {i} is not a crop of its padded original"
        flips += matches[0][2]
        shifts.add(matches[0][:2])
    assert 0 < flips < 16 and len(shifts) > 3  # both flips and several offsets occur


@pytest.mark.parametrize("pad_mode", ["reflect", "zeros"])
def test_random_crop_flip_matches_explicit_padding_for_every_offset(pad_mode):
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.int64).view(2, 3, 8, 8) + 1
    pad = 3
    padded = torch.nn.functional.pad(x.float(), (pad,) * 4,
                                     mode="reflect" if pad_mode == "reflect" else "constant")
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            offsets = torch.tensor([[dy, dx], [dy, dx]])
            out = random_crop_flip(x, offsets, torch.tensor([False, True]), pad, pad_mode)
            window = padded[:, :, dy:dy + 8, dx:dx + 8].long()
            assert torch.equal(out[0], window[0]) and torch.equal(out[1], window[1].flip(2))


def test_ranks_get_disjoint_equal_shares():
    images, labels = dataset(50)
    shards = [stream(images, labels, 4, shuffle=True, drop_last=True, rank=r, world_size=3)
              for r in range(3)]
    for s in shards:
        s.set_epoch(1)
    seen = [torch.cat([y for _, y in s]).tolist() for s in shards]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == 4  # 50 // 3 = 16 -> 4 x 4
    assert all(len(v) == 16 for v in seen)
    assert not set(seen[0]) & set(seen[1]) and not set(seen[1]) & set(seen[2])
    assert not set(seen[0]) & set(seen[2])


def test_evaluation_ranks_cover_everything_with_equal_batch_counts():
    images, labels = dataset(10)
    shards = [stream(images, labels, 3, rank=r, world_size=4) for r in range(4)]
    assert {len(s) for s in shards} == {1}
    seen = [y for s in shards for _, y in s]
    assert set(torch.cat(seen).tolist()) == set(range(10))


def test_cpu_stream_uses_the_array_without_copying_it(tmp_path):
    images, labels = dataset(12)
    path = tmp_path / "images.u8"
    images.tofile(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=images.shape)
    s = stream(mm, labels)
    assert s.on_device
    assert s.images.data_ptr() == mm.ctypes.data  # same memory, no copy
    torch.testing.assert_close(unnormalise(next(iter(s))[0]),
                               torch.from_numpy(images[:8]).float() / 255, atol=1e-5, rtol=0)


def test_accepts_torch_tensors_and_channels_last():
    images, labels = dataset(12)
    s = stream(torch.from_numpy(images), torch.from_numpy(labels), channels_last=True)
    x, _ = next(iter(s))
    assert x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("kwargs, error", [
    (dict(images=np.zeros((4, 3, 8, 8), np.float32)), "uint8"),
    (dict(images=np.zeros((4, 8, 8), np.uint8)), r"\(N, 3, S, S\)"),
    (dict(labels=np.arange(3)), "4 images but 3 labels"),
    (dict(rank=2, world_size=2), "rank"),
    (dict(std=(0.1, 0.0, 0.1)), "std > 0"),
])
def test_bad_arguments(kwargs, error):
    args = dict(images=np.zeros((4, 3, 8, 8), np.uint8), labels=np.arange(4))
    args.update(kwargs)
    with pytest.raises(ValueError, match=error):
        stream(args.pop("images"), args.pop("labels"), 2, **args)


def test_the_synthetic_cache_streams(synth_cache):
    train = synth_cache.splits["train"]
    s = BatchStream(train.images, train.labels, 16, device="cpu", mean=synth_cache.mean,
                    std=synth_cache.std, shuffle=True, augment=True, seed=0, drop_last=True)
    x, y = next(iter(s))
    assert x.shape == (16, 3, 32, 32) and y.max() < len(synth_cache.classes)
    # normalised by the train statistics: roughly zero mean, unit spread over the epoch
    everything = torch.cat([b for b, _ in BatchStream(
        train.images, train.labels, 80, device="cpu", mean=synth_cache.mean,
        std=synth_cache.std)])
    assert everything.mean(dim=(0, 2, 3)).abs().max() < 1e-3
    assert (everything.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_cpu_batches_whether_the_split_fits_or_not(monkeypatch):
    import importlib
    images, labels = dataset(40, size=32)
    kwargs = dict(shuffle=True, augment=True, drop_last=True, seed=5)
    cpu = stream(images, labels, **kwargs)
    gpu = stream(images, labels, device="cuda", **kwargs)
    assert gpu.on_device and gpu.images.device.type == "cuda"
    stream_module = importlib.import_module("resnorm.data.stream")
    monkeypatch.setattr(stream_module, "_DEVICE_MEMORY_FRACTION", 0.0)  # "does not fit"
    host = stream(images, labels, device="cuda", **kwargs)
    assert not host.on_device and host.images.device.type == "cpu"
    for s in (cpu, gpu, host):
        s.set_epoch(4)
    for (xc, yc), (xg, yg), (xh, yh) in zip(cpu, gpu, host):
        assert xg.device.type == "cuda" and xh.device.type == "cuda"
        assert torch.equal(yc, yg.cpu()) and torch.equal(yc, yh.cpu())
        torch.testing.assert_close(xg.cpu(), xc, atol=1e-5, rtol=0)
        torch.testing.assert_close(xh.cpu(), xc, atol=1e-5, rtol=0)
