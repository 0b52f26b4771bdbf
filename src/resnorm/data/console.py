"""What `resnorm prepare` says: a progress bar (or plain lines in a log), the summary of a
built cache, and the audit in words."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm.auto import tqdm  # a widget in a notebook, a text bar on a terminal

from resnorm.data.cache import MANIFEST, split_label
from resnorm.fileio import format_duration
from resnorm.terminal import live_display

__all__ = ["silent", "progress_bar", "ProgressLines", "counts_text", "print_summary",
           "audit_lines"]


def silent(*args, **kwargs) -> None:
    pass


def progress_bar(total: int, enabled: bool, workers: int):
    """A tqdm bar on a terminal or in a notebook; else (a log file) a plain line every 30 s
    (ProgressLines)."""
    desc = f"prepare ({workers} worker{'s' * (workers > 1)})"
    if enabled and not live_display():
        return ProgressLines(total, desc)
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5, disable=not enabled)


class ProgressLines:
    """What the bar shows, as a plain line on stderr every `every` seconds (tqdm's interface)."""

    def __init__(self, total: int, desc: str, every: float = 30.0, clock=time.monotonic) -> None:
        self.total, self.desc, self.every, self.clock = total, desc, every, clock
        self.n = 0
        self.started = self.last = clock()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.every and self.n < self.total:
            self.last = now
            elapsed = now - self.started
            left = elapsed * (self.total - self.n) / max(self.n, 1)
            print(f"{self.desc}: {self.n:,}/{self.total:,} images "
                  f"({100 * self.n // max(self.total, 1)}%), {self.n / max(elapsed, 1e-9):.0f} "
                  f"img/s, {format_duration(elapsed)} in, {format_duration(left)} left",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def counts_text(manifest: dict) -> str:
    return ", ".join(f"{split_label(manifest, s)} {info['count']:,}"
                     for s, info in manifest["splits"].items())


def print_summary(manifest: dict, out: Path, say) -> None:
    p = manifest["params"]
    say(f"prepare: {counts_text(manifest)} images at {p['size']}x{p['size']} ({p['resize']}) "
        f"-> {out} in {manifest['seconds']['total']:.1f} s")
    if manifest["synthetic"]:
        say("prepare: this is a SYNTHETIC dataset (see SYNTHETIC.txt), not real photos")
    if manifest["splits"]["val"].get("folder") == "test":
        say("prepare: no val/ folder: test/ is the validation split (it chooses epochs, so "
            "there is no untouched held-out split)")
    if manifest["ignored"]:
        say(f"prepare: ignored {len(manifest['ignored'])} hidden or non-image files")
    skipped = manifest["skipped"]
    if skipped:
        say(f"prepare: skipped {len(skipped)} unusable files (listed in {out / MANIFEST}):")
        for entry in skipped[:5]:
            say(f"  {entry['file']}: {entry['reason']}")
        if len(skipped) > 5:
            say(f"  ... and {len(skipped) - 5} more")
    for line in audit_lines(manifest):
        say(f"prepare: {line}")
    empty = [c for c, n in manifest["counts"]["train"].items() if n == 0]
    if empty:
        say(f"prepare: warning: no usable train image for {', '.join(empty)}")


def audit_lines(manifest: dict) -> list[str]:
    """Human-readable audit summary: duplicates, and per split the images with a copy in train
    (which runs leave out of their scores unless told to keep them)."""
    a = manifest["audit"]
    lines = [f"audit: {len(a['exact_groups']):,} groups of exact duplicates, "
             f"{len(a['near_pairs']):,} near-duplicate pairs"]
    for split, leaked in a["leaked_into_train"].items():
        n = manifest["splits"][split]["count"]
        if leaked:
            lines.append(f"audit: {leaked:,} of {n:,} {split_label(manifest, split)} images "
                         f"({100 * leaked / n:.1f} %) have an exact or near copy in train "
                         f"(runs leave them out of their scores unless --keep-leaked)")
    corners = a.get("black_corners")
    if corners and any(corners["images"].values()):  # a cue besides the bird (data/audit.py)
        lines.append("audit: images with flat black corners (the fill of rotations or shifts): "
                     + ", ".join(f"{split_label(manifest, s)} {n:,} of {corners['total'][s]:,}"
                                 for s, n in corners["images"].items()))
    return lines
