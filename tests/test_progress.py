"""Progress without a terminal: plain lines at least every 30 s and at the quarter marks, never
two within 5 s (fake clocks, no waiting); the terminal's bar is unchanged; prepare's lines."""
from __future__ import annotations

import io
import re
import sys

import pytest

from resnorm.train.progress import LINE_EVERY_S, LINE_GAP_S, Progress, format_duration

from resnorm.data import console as prepare_console


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run_epoch(show: Progress, clock: FakeClock, steps: int, step_s, epoch: int = 1) -> list:
    """Step through an epoch as train_one_epoch does; return (step, time) of each line."""
    lines = []
    show.start(epoch, steps)
    for step in range(1, steps + 1):
        clock.now += step_s(step) if callable(step_s) else step_s
        if show.wants(step):
            show.update(step, 1.5, 0.25, 40.0)
            lines.append((step, clock.now))
    show.close()
    return lines


def test_a_line_every_30_seconds_and_at_the_quarter_marks(capsys):
    clock = FakeClock()
    show = Progress(True, epochs=2, every=25, clock=clock)
    start = clock.now
    lines = run_epoch(show, clock, steps=1000, step_s=1.0)  # a 1000 s epoch
    steps = [s for s, _ in lines]
    assert {250, 500, 750} <= set(steps)
    times = [start] + [t for _, t in lines]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) <= LINE_EVERY_S and min(gaps) >= LINE_GAP_S
    assert steps[0] == 30 and 1000 not in steps  # the epoch line follows the last step
    err = capsys.readouterr().err
    assert len(err.splitlines()) == len(lines)
    assert "epoch 1/2 step 500/1000 loss 1.5000 acc 0.2500 40 img/s | 50% in 8m20s, " \
           "8m20s left" in err


def test_no_line_before_30_seconds_then_one(capsys):
    clock = FakeClock()
    show = Progress(True, epochs=1, every=25, clock=clock)
    show.start(1, steps=10_000)
    clock.now += 29.9
    assert not show.wants(7)
    clock.now += 0.1
    assert show.wants(8)
    show.update(8, 2.0, 0.1, 12.0)
    assert not show.wants(9)  # the clock starts again from that line
    clock.now += LINE_EVERY_S - 0.5
    assert not show.wants(10)
    clock.now += 0.5
    assert show.wants(11)
    assert "epoch 1/1 step 8/10000 loss 2.0000" in capsys.readouterr().err


def test_a_quarter_mark_within_5_seconds_of_a_line_is_dropped(capsys):
    clock = FakeClock()
    show = Progress(True, epochs=1, every=25, clock=clock)
    # Fast epochs: 8 steps of 0.5 s, marks at steps 2, 4, 6: only the epoch's first prints.
    assert [s for s, _ in run_epoch(show, clock, steps=8, step_s=0.5)] == [2]
    assert [s for s, _ in run_epoch(show, clock, 8, 0.5, epoch=2)] == [2]
    # 3 s steps: marks 6 s apart all print.
    assert [s for s, _ in run_epoch(show, clock, 8, 3.0, epoch=3)] == [2, 4, 6]
    err = capsys.readouterr().err
    assert "epoch 2/1 step 2/8 loss" in err


def test_slow_steps_print_at_most_every_5_seconds_and_at_least_every_30():
    clock = FakeClock()
    show = Progress(True, epochs=1, every=25, clock=clock, line_every=30.0, min_gap=5.0)
    lines = run_epoch(show, clock, steps=40, step_s=lambda s: 2.0 if s < 20 else 45.0)
    times = [t for _, t in lines]
    assert min(b - a for a, b in zip(times, times[1:])) >= 5.0
    assert all(s in [x for x, _ in lines] for s in range(20, 40))  # every slow step


def test_wants_only_reads_the_clock():
    calls = []

    def clock():
        calls.append(1)
        return 0.0

    show = Progress(True, epochs=1, every=25, clock=clock)
    show.start(1, steps=100)
    for step in range(1, 100):
        show.wants(step)
    assert len(calls) == 1 + 99  # start, then one call per step: no other work


def test_disabled_progress_never_asks_for_numbers():
    def clock():
        raise AssertionError("not consulted")

    show = Progress(False, epochs=1, every=1, clock=clock)
    show.start(1, steps=10)
    assert not any(show.wants(s) for s in range(1, 11))


def test_the_bar_on_a_terminal_is_unchanged(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    def clock():
        raise AssertionError("the bar uses no clock of ours")

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    show = Progress(True, epochs=3, every=2, clock=clock)
    show.start(1, steps=4)
    assert show.bar is not None
    assert [show.wants(s) for s in (1, 2, 3, 4)] == [False, True, False, True]
    show.update(2, 1.25, 0.5, 321.0)
    show.bar.refresh()
    show.close()
    text = terminal.getvalue()
    assert "epoch 1/3" in text and "loss=1.2500" in text and "img_s=321" in text
    assert " left" not in text


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (42.4, "42s"), (60, "1m00s"),
                                           (250, "4m10s"), (3599, "59m59s"),
                                           (7500, "2h05m"), (-3, "0s")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_prepare_prints_plain_lines_without_a_terminal(capsys):
    clock = FakeClock()
    lines = prepare_console.ProgressLines(37_500, "prepare (4 workers)", clock=clock)
    for _ in range(100):  # 100 chunks of 64 images, one every 0.5 s: 50 s
        clock.now += 0.5
        lines.update(64)
    lines.close()
    err = capsys.readouterr().err.splitlines()
    assert err == ["prepare (4 workers): 3,840/37,500 images (10%), 128 img/s, 30s in, "
                   "4m23s left"]


def test_prepare_bar_or_lines(monkeypatch):
    assert isinstance(prepare_console.progress_bar(10, True, 2), prepare_console.ProgressLines)
    bar = prepare_console.progress_bar(10, False, 2)  # disabled: tqdm's silent bar, as before
    assert not isinstance(bar, prepare_console.ProgressLines)
    bar.close()

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = prepare_console.progress_bar(10, True, 2)
    assert not isinstance(bar, prepare_console.ProgressLines)
    bar.update(3)
    bar.close()
    assert re.search(r"prepare \(2 workers\).*3/10", sys.stderr.getvalue())
