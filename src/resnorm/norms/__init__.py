"""Normalization layers written from scratch: BN, IN, BIN, LN, GN and a no-norm placeholder,
and the registry of norm kinds.

Every layer computes its statistics with plain tensor ops (no `F.batch_norm`,
`F.group_norm`, ... — tests check the source) and is verified against PyTorch's own ops in
float64. `make_norm(kind, num_channels)` is the one resolver the model uses; `torch_bn` is the
only kind that is PyTorch's built-in (the Part 1.1 baseline). Every fact about a kind (does
it take batch statistics, how does it sync, its label and colour in the report) is its
registry entry's (`get_norm(kind)`, `register_norm`).

Two paths compute the same function:
- the fast path (default): one `torch.autograd.Function` per layer with the analytic backward
  (`resnorm.norm_functions`), whose passes over the activations run as eager ops, or are compiled
  into fused loops when a training run is long enough to pay the compile back
  (`norm_functions.plan_kernels`, `set_kernel_mode`), so a layer costs about what PyTorch's
  built-in kernel does;
- the reference path (`layer.reference = True`, or `use_reference(model)`): readable
  composite code, differentiated op by op by autograd. Tests check the fast path against it
  and both against PyTorch.

BN and BIN take `sync=True` (or `enable_sync_(model)`): under torch.distributed with several
processes, training takes the batch statistics over every process's batch
(`resnorm.distributed.sync_batch_mean_var`, differentiable), so N processes with batch B
compute what one process with batch N*B computes. Synced layers take the reference path.

Shared conventions:
- inputs are (N, C, H, W); statistics are computed in float32 when the input is float16 or
  bfloat16 (as PyTorch's kernels do under autocast), and the output has the input's dtype;
- normalization and affine are folded into one per-(sample, channel) scale and shift, so the
  output keeps the input's memory format (channels_last in, channels_last out).

Modules: layers (the layer classes, model-wide switches, BIN gates) | registry (the kinds).
"""
from resnorm.norms.layers import (BatchInstanceNorm2d, BatchNorm2d, GroupNorm2d, InstanceNorm2d,
                                  LayerNorm2d, NoNorm, clamp_gates_, enable_sync_,
                                  gate_parameters, use_reference)
from resnorm.norms.registry import (DEFAULT_GN_GROUPS, NORM_KINDS, SYNC_MODES, NormKind,
                                    get_norm, make_norm, norm_factory, norm_info, register_norm,
                                    split_kind)

__all__ = [
    "BatchNorm2d",
    "InstanceNorm2d",
    "BatchInstanceNorm2d",
    "LayerNorm2d",
    "GroupNorm2d",
    "NoNorm",
    "NORM_KINDS",
    "NormKind",
    "SYNC_MODES",
    "register_norm",
    "get_norm",
    "norm_info",
    "split_kind",
    "make_norm",
    "norm_factory",
    "gate_parameters",
    "clamp_gates_",
    "DEFAULT_GN_GROUPS",
    "use_reference",
    "enable_sync_",
]
