"""The one rule tying the learning rate to the batch size, used by the default recipe and by a
study plan's `lr_rule` alike.

An `LrRule` scales an lr given at a base batch size B0 to a batch size B:

    linear  lr x B / B0            (Goyal et al. 2017; the rule the GN paper's batch study uses)
    sqrt    lr x sqrt(B / B0)
    none    lr                     (the same lr at every batch size)

The default recipe's SGD lr is `DEFAULT_RECIPE_LR` at batch 128 under the linear rule
(He et al.'s CIFAR ResNet: 0.1 at batch 128); a plan's rule rescales a run's base lr from the
plan's `base_batch_size`. Under torchrun B is the global batch (batch_size x processes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LR_RULES", "LrRule", "DEFAULT_RECIPE_LR", "DEFAULT_RECIPE_RULE"]

LR_RULES = {
    "linear": lambda ratio: ratio,
    "sqrt": math.sqrt,
    "none": lambda ratio: 1.0,
}


@dataclass(frozen=True)
class LrRule:
    """How an lr given at batch `base_batch` follows the batch size (`name` in LR_RULES)."""

    name: str = "linear"
    base_batch: int = 128

    def __post_init__(self) -> None:
        if self.name not in LR_RULES:
            raise ValueError(f"lr rule {self.name!r} is not one of {', '.join(LR_RULES)}")

    def factor(self, batch: int) -> float:
        """What an lr at the base batch is multiplied by at global batch `batch`."""
        return float(LR_RULES[self.name](batch / self.base_batch))

    def scale(self, lr: float, batch: int) -> float:
        return float(lr) * self.factor(batch)

    def text(self) -> str:
        """The rule in words, e.g. 'lr = base lr x batch size / 32'."""
        if self.name == "linear":
            return f"lr = base lr x batch size / {self.base_batch}"
        if self.name == "sqrt":
            return f"lr = base lr x sqrt(batch size / {self.base_batch})"
        return "the same lr at every batch size"


DEFAULT_RECIPE_LR = 0.1                   # the default recipe's SGD lr at its base batch
DEFAULT_RECIPE_RULE = LrRule("linear", 128)
