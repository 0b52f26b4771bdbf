"""What a run shows while it trains: a progress bar or lines on stderr, TensorBoard scalars."""
from __future__ import annotations

import math
import sys
import time
from typing import Callable

from tqdm.auto import tqdm  # a widget in a notebook, a text bar on a terminal

from resnorm.fileio import format_duration
from resnorm.rundir import RunDir
from resnorm.terminal import live_display


# Plain lines (no terminal, e.g. a log file): one at least every LINE_EVERY_S seconds and at
# 25/50/75 % of an epoch, but never two of an epoch within LINE_GAP_S seconds (a quarter mark
# that close to the last line is dropped). The first quarter mark of an epoch always prints:
# a short epoch shows that line and the epoch line.
LINE_EVERY_S = 30.0
LINE_GAP_S = 5.0


class Progress:
    """Per-epoch progress: a tqdm bar (loss, acc, img/s) on a terminal or in a notebook, else
    plain lines.

    `wants(step)` says when to read numbers back from the device: every `every` steps for the
    bar; for plain lines at 25/50/75 % of the epoch and whenever `line_every` seconds of the
    epoch passed without a line (never within `min_gap` seconds of the epoch's last line).
    Between those nothing is synchronised: `wants` only compares `clock()` (time.monotonic)
    with the time of the last line.
    """

    def __init__(self, enabled: bool, epochs: int, every: int, *,
                 clock: Callable[[], float] = time.monotonic, line_every: float = LINE_EVERY_S,
                 min_gap: float = LINE_GAP_S) -> None:
        self.enabled, self.epochs, self.every = enabled, epochs, every
        self.tty = enabled and live_display()
        self.bar = None
        self.clock, self.line_every, self.min_gap = clock, line_every, min_gap
        self.last_line = -math.inf  # clock() when the epoch's last plain line was printed

    def start(self, epoch: int, steps: int) -> None:
        self.epoch, self.steps = epoch, steps
        self.marks = {math.ceil(steps * q / 4) for q in (1, 2, 3)} - {steps}
        self.started = self.clock() if self.enabled and not self.tty else 0.0
        self.last_line = -math.inf
        if self.tty:
            self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{self.epochs}", unit="step",
                            leave=False, dynamic_ncols=True, file=sys.stderr)

    def wants(self, step: int) -> bool:
        if not self.enabled:
            return False
        if self.tty:
            return step % self.every == 0 or step == self.steps
        if step >= self.steps:
            return False  # the epoch line follows at once
        now = self.clock()
        if now - self.last_line < self.min_gap:
            return False
        return step in self.marks or now - max(self.started, self.last_line) >= self.line_every

    def update(self, step: int, loss: float, acc: float, images_per_s: float) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.4f}",
                                 img_s=f"{images_per_s:.0f}", refresh=False)
        elif self.enabled:
            now = self.clock()
            self.last_line = now
            elapsed = max(0.0, now - self.started)
            left = elapsed * (self.steps - step) / max(step, 1)
            log(f"epoch {self.epoch}/{self.epochs} step {step}/{self.steps} loss {loss:.4f} "
                f"acc {acc:.4f} {images_per_s:.0f} img/s | {100 * step // max(self.steps, 1)}% "
                f"in {format_duration(elapsed)}, {format_duration(left)} left")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def log(message: str) -> None:
    """A line on stderr (through tqdm, so an active bar is not broken)."""
    tqdm.write(message, file=sys.stderr)
    sys.stderr.flush()


def epoch_line(row: dict, epochs: int, improved: bool) -> str:
    return (f"epoch {row['epoch']}/{epochs} lr {row['lr']:.3g} | train loss "
            f"{row['train_loss']:.4f} acc {row['train_acc']:.4f} | val loss {row['val_loss']:.4f} "
            f"acc {row['val_acc']:.4f} macro-F1 {row['val_macro_f1']:.4f} | "
            f"{row['epoch_time_s']:.1f}s {row['images_per_s']:.0f} img/s"
            + (" *" if improved else ""))


class RunOutput:
    """What a run shows while it trains: progress within an epoch (`progress`, a Progress), a
    line per epoch (unless `epoch_lines` is off), and the epoch's scalars in TensorBoard (in
    the run folder; events of epochs being redone after a resume are purged). Only the main
    process shows or writes anything."""

    def __init__(self, files: RunDir, *, progress: bool, epoch_lines: bool, epochs: int,
                 every: int, first_epoch: int) -> None:
        self.epochs, self.epoch_lines = epochs, epoch_lines and files.is_main
        self.progress = Progress(progress and files.is_main, epochs, every=every)
        self.writer = None
        if files.is_main:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(log_dir=str(files.dir),
                                        purge_step=first_epoch if first_epoch > 1 else None)

    def epoch_done(self, row: dict, improved: bool, note: str | None = None) -> None:
        """The epoch's line (and a note, e.g. skipped fp16 steps) and its scalars."""
        if self.epoch_lines:
            log(epoch_line(row, self.epochs, improved))
            if note:
                log(note)
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch":
                    split, _, metric = key.partition("_")
                    tag = f"{metric}/{split}" if split in ("train", "val") else f"run/{key}"
                    self.writer.add_scalar(tag, value, row["epoch"])
            self.writer.flush()

    def close(self) -> None:
        self.progress.close()
        if self.writer is not None:
            self.writer.close()
