"""What a run shows while it trains: a progress bar or lines on stderr, TensorBoard scalars."""
from __future__ import annotations

import math
import sys

from tqdm import tqdm

from resnorm.checkpoint import RunFiles


class Progress:
    """Per-epoch progress: a tqdm bar (loss, acc, img/s) on a terminal, else plain lines.

    `wants(step)` says when to read numbers back from the device: every `every` steps for the
    bar, at 25/50/75 % of the epoch for plain lines; between those, nothing is synchronised.
    """

    def __init__(self, enabled: bool, epochs: int, every: int) -> None:
        self.enabled, self.epochs, self.every = enabled, epochs, every
        self.tty = enabled and sys.stderr.isatty()
        self.bar = None

    def start(self, epoch: int, steps: int) -> None:
        self.epoch, self.steps = epoch, steps
        self.marks = {math.ceil(steps * q / 4) for q in (1, 2, 3)} - {steps}
        if self.tty:
            self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{self.epochs}", unit="step",
                            leave=False, dynamic_ncols=True, file=sys.stderr)

    def wants(self, step: int) -> bool:
        if not self.enabled:
            return False
        if self.tty:
            return step % self.every == 0 or step == self.steps
        return step in self.marks

    def update(self, step: int, loss: float, acc: float, images_per_s: float) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.4f}",
                                 img_s=f"{images_per_s:.0f}", refresh=False)
        elif self.enabled:
            log(f"epoch {self.epoch}/{self.epochs} step {step}/{self.steps} loss {loss:.4f} "
                f"acc {acc:.4f} {images_per_s:.0f} img/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def log(message: str) -> None:
    """A line on stderr (through tqdm, so an active bar is not broken)."""
    tqdm.write(message, file=sys.stderr)
    sys.stderr.flush()


def _epoch_line(row: dict, epochs: int, improved: bool) -> str:
    return (f"epoch {row['epoch']}/{epochs} lr {row['lr']:.3g} | train loss "
            f"{row['train_loss']:.4f} acc {row['train_acc']:.4f} | val loss {row['val_loss']:.4f} "
            f"acc {row['val_acc']:.4f} macro-F1 {row['val_macro_f1']:.4f} | "
            f"{row['epoch_time_s']:.1f}s {row['images_per_s']:.0f} img/s"
            + (" *" if improved else ""))


def _tensorboard(files: RunFiles, purge_step: int | None):
    """A SummaryWriter in the run folder; events of epochs being redone are purged."""
    if not files.is_main:
        return None
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(log_dir=str(files.dir), purge_step=purge_step)


def _log_scalars(writer, row: dict) -> None:
    if writer is None:
        return
    for key, value in row.items():
        if key != "epoch":
            split, _, metric = key.partition("_")
            tag = f"{metric}/{split}" if split in ("train", "val") else f"run/{key}"
            writer.add_scalar(tag, value, row["epoch"])
    writer.flush()
