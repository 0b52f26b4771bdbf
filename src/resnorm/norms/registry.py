"""The norm kinds: one entry per kind, with everything the rest of resnorm needs to know about
it, and one resolver.

A kind is a name with an optional integer parameter after a colon ("bn", "gn:8"). Its entry
says how to build the layer (a constructor taking the channel count first, then the
parameter) and the facts other modules ask for instead of spelling out kinds themselves:
whether training takes statistics over the batch (a batch of one is refused), how those
statistics sync across processes, and how the report shows the kind (label, colour, line
style, place in tables). `register_norm` adds a kind:

    register_norm("rms", RMSNorm2d, label="RMS", color="C6")
    ResNet(2, 25, norm="rms")                 # and `resnorm train --norm rms` in that process
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from torch import nn

from resnorm.norms.layers import (BatchInstanceNorm2d, BatchNorm2d, GroupNorm2d, InstanceNorm2d,
                                  LayerNorm2d, NoNorm)

__all__ = ["NormKind", "NORM_KINDS", "SYNC_MODES", "DEFAULT_GN_GROUPS", "register_norm",
           "split_kind", "get_norm", "norm_info", "norm_factory", "make_norm"]

# Group count for GN when a kind says just "gn". The GN paper's default (32 groups) does not
# divide the 16-channel first stage; 8 groups gives 2/4/8 channels per group in the 16/32/64
# stages, between IN (1 channel per group) and LN (all channels). Override with "gn:G".
DEFAULT_GN_GROUPS = 8

# How a kind with batch statistics takes them over every process's batch under `sync_bn`:
# "resnorm": the layer's own `sync` (resnorm.norms.enable_sync_), on every device;
# "torch": PyTorch's nn.SyncBatchNorm, which works on CUDA only.
SYNC_MODES = ("resnorm", "torch")


@dataclass(frozen=True)
class NormKind:
    """One normalization kind and its facts (see the module docstring)."""

    name: str
    make: Callable[..., nn.Module] | None  # make(num_channels[, param]); None: not registered
    label: str                      # in tables and figure legends
    color: str = "k"                # matplotlib colour of its curves
    linestyle: str = "-"
    param: str | None = None        # the name of the positive integer after ':', if it takes one
    batch_stats: bool = False       # training normalizes with statistics over the batch
    sync: str | None = None         # one of SYNC_MODES, None: cannot sync (or nothing to sync)
    order: float = math.inf         # place in tables: registration order by default
    gated: bool = False             # learns per-channel gates (BIN's rho), which the report shows

    def parse_param(self, text: str, kind: str) -> int | None:
        """The parameter written after ':' in `kind` (None when there is none), validated."""
        if not text:
            return None
        if self.param is None:
            raise ValueError(f"norm kind {self.name!r} takes no parameter, got {kind!r}")
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"norm kind {kind!r}: {self.param} must be an integer") from None
        if value < 1:
            raise ValueError(f"norm kind {kind!r}: {self.param} must be positive")
        return value

    def factory(self, value: int | None = None) -> Callable[[int], nn.Module]:
        """A callable taking a channel count: the constructor itself, or with `value` bound."""
        if value is None:
            return self.make
        return lambda num_channels: self.make(num_channels, value)


# name -> entry, in the order tables list them
NORM_KINDS: dict[str, NormKind] = {}


def register_norm(name: str, make: Callable[..., nn.Module], *, label: str | None = None,
                  color: str = "k", linestyle: str = "-", param: str | None = None,
                  batch_stats: bool = False, sync: str | None = None,
                  order: float | None = None, gated: bool = False,
                  replace: bool = False) -> NormKind:
    """Add the kind `name` (see NormKind for the facts); returns its entry.

    `make(num_channels)` builds the layer, or `make(num_channels, value)` for a kind written
    "name:value" when `param` names that value. `order` defaults to after every kind
    registered so far. An existing name is refused unless `replace`.
    """
    if not name or name != name.strip().lower() or ":" in name:
        raise ValueError(f"a norm kind's name is lowercase, without ':' or spaces, got {name!r}")
    if name in NORM_KINDS and not replace:
        raise ValueError(f"norm kind {name!r} is already registered (replace=True replaces it)")
    if sync is not None and (sync not in SYNC_MODES or not batch_stats):
        raise ValueError(f"norm kind {name!r}: sync must be None or, with batch_stats, one of "
                         f"{', '.join(SYNC_MODES)}; got {sync!r}")
    if order is None:
        order = NORM_KINDS[name].order if name in NORM_KINDS else len(NORM_KINDS)
    entry = NormKind(name, make, label or name, color, linestyle, param, batch_stats, sync, order,
                     gated)
    NORM_KINDS[name] = entry
    return entry


def split_kind(kind: str) -> tuple[str, str]:
    """("gn", "8") for "GN:8", ("bn", "") for "bn": the one place a kind is taken apart."""
    name, _, param = kind.strip().lower().partition(":")
    return name, param


def _resolve(kind: str) -> tuple[NormKind, int | None]:
    if not isinstance(kind, str):
        raise ValueError(f"norm kind must be a string, got {kind!r}")
    name, param = split_kind(kind)
    if name not in NORM_KINDS:
        valid = ", ".join(NORM_KINDS)
        raise ValueError(f"unknown norm kind {kind!r}; valid kinds: {valid} (e.g. gn:8)")
    entry = NORM_KINDS[name]
    return entry, entry.parse_param(param, kind)


def get_norm(kind: str) -> NormKind:
    """The entry of `kind` ("gn" for "gn:8"); ValueError naming the valid kinds if unknown,
    or naming the problem with its parameter."""
    return _resolve(kind)[0]


def norm_info(kind: str) -> NormKind:
    """The entry of `kind` as a finished run records it, never an error: a kind this process
    has not registered (a study trained with a kind registered elsewhere) gets neutral facts,
    its name as label, black, after the registered kinds."""
    name, _ = split_kind(str(kind))
    return NORM_KINDS.get(name) or NormKind(name, None, label=name)


def norm_factory(kind: str) -> Callable[[int], nn.Module]:
    """Resolve a kind such as "bn" or "gn:4" to a callable taking a channel count."""
    entry, value = _resolve(kind)
    return entry.factory(value)


def make_norm(kind: str, num_channels: int) -> nn.Module:
    """Build the normalization layer `kind` (see NORM_KINDS) for `num_channels` channels."""
    return norm_factory(kind)(num_channels)


def _make_gn(num_channels: int, groups: int = DEFAULT_GN_GROUPS) -> nn.Module:
    return GroupNorm2d(groups, num_channels)


# torch_bn is PyTorch's own BatchNorm2d: the baseline the from-scratch bn is checked against.
register_norm("torch_bn", nn.BatchNorm2d, label="PyTorch BN", color="0.45", linestyle="--",
              batch_stats=True, sync="torch")
register_norm("bn", BatchNorm2d, label="BN", color="C0", batch_stats=True, sync="resnorm")
register_norm("in", InstanceNorm2d, label="IN", color="C1")
register_norm("bin", BatchInstanceNorm2d, label="BIN", color="C2", batch_stats=True,
              sync="resnorm", gated=True)
register_norm("ln", LayerNorm2d, label="LN", color="C3")
register_norm("gn", _make_gn, label="GN", color="C4", param="groups")
register_norm("nn", NoNorm, label="no norm", color="C5")
