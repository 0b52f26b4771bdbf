"""A lock per run folder (resnorm.study.execution.locks): who holds it, takeover of dead holders' locks."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from resnorm.study.execution import locks
from resnorm.study.execution.locks import CLAIM_FILE, Holder, held_by, run_lock

# Takes RUN's lock, prints the outcome as one JSON line, holds it until stdin closes.
HOLD = """
import json, sys
from resnorm.study.execution.locks import run_lock
with run_lock(sys.argv[1], heartbeat_s=None) as h:
    print(json.dumps(None if h is None else {"host": h.host, "pid": h.pid}), flush=True)
    sys.stdin.read()
"""


def spawn_holder(run_dir):
    return subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def outcome(proc):
    """What a HOLD process got: None (the lock) or a holder dict; it holds on until finish()."""
    return json.loads(proc.stdout.readline())


def start_holder(run_dir):
    """A process that tried RUN_DIR's lock: (the process, what it got)."""
    proc = spawn_holder(run_dir)
    return proc, outcome(proc)


def finish(proc):
    proc.stdin.close()
    assert proc.wait() == 0


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def write_claim(run_dir, host, pid, started="2024-05-01T14:05:00+00:00"):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CLAIM_FILE).write_text(json.dumps({"host": host, "pid": pid, "started": started,
                                                  "token": "theirs"}))


def claim(run_dir) -> dict:
    return json.loads((run_dir / CLAIM_FILE).read_text())


@pytest.fixture
def no_flock(monkeypatch):
    """As on a filesystem without flock: only the claim (and pid checks) decide."""
    monkeypatch.setattr(locks, "_take_os_lock", lambda path: (None, False))


def test_a_second_process_is_told_who_holds_the_run(tmp_path):
    run = tmp_path / "runs" / "bn"
    with run_lock(run) as holder:
        assert holder is None
        assert claim(run)["host"] == socket.gethostname() and claim(run)["pid"] == os.getpid()
        proc, got = start_holder(run)
        finish(proc)
        assert got == {"host": socket.gethostname(), "pid": os.getpid()}
        seen = held_by(run)
        assert (seen.host, seen.pid) == (socket.gethostname(), os.getpid())
        assert f"{socket.gethostname()}:{os.getpid()} since " in seen.text()
        with run_lock(run) as again:  # not re-entrant: the same process is refused too
            assert again is not None and again.pid == os.getpid()
    assert not (run / CLAIM_FILE).exists() and held_by(run) is None


def test_the_lock_is_released_on_exit_and_on_an_error(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with run_lock(run) as holder:
            assert holder is None
            raise RuntimeError("training failed")
    assert not (run / CLAIM_FILE).exists()
    proc, got = start_holder(run)  # free for another process
    assert got is None
    with run_lock(run) as holder:  # which holds it now
        assert holder.pid == proc.pid
    finish(proc)
    with run_lock(run) as holder:
        assert holder is None
    assert not any(t.name == "resnorm-lock-heartbeat" for t in threading.enumerate())


def test_of_processes_racing_for_one_run_exactly_one_wins(tmp_path):
    run = tmp_path / "run"
    procs = [spawn_holder(run) for _ in range(4)]  # all started before any is asked
    got = [outcome(p) for p in procs]
    for proc in procs:
        finish(proc)
    assert got.count(None) == 1
    winner = procs[got.index(None)]
    # ("?": a loser looked while the winner was still writing its claim)
    assert all(g in ({"host": socket.gethostname(), "pid": winner.pid}, {"host": "?", "pid": 0})
               for g in got if g)


def test_a_killed_holder_leaves_a_claim_that_is_taken_over(tmp_path):
    run = tmp_path / "run"
    proc, got = start_holder(run)
    assert got is None and held_by(run).pid == proc.pid
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert claim(run)["pid"] == proc.pid  # left behind
    assert held_by(run) is None  # its pid is not alive
    with run_lock(run) as holder:
        assert holder is None and claim(run)["pid"] == os.getpid()


@pytest.mark.parametrize("flock", [True, False], ids=["flock", "no-flock"])
def test_a_claim_of_a_dead_process_on_this_host_is_taken_over(tmp_path, monkeypatch, flock):
    if not flock:
        monkeypatch.setattr(locks, "_take_os_lock", lambda path: (None, False))
    run = tmp_path / "run"
    write_claim(run, socket.gethostname(), dead_pid())
    assert held_by(run) is None
    with run_lock(run) as holder:
        assert holder is None
        assert claim(run)["pid"] == os.getpid() and claim(run)["token"] != "theirs"
    assert not (run / CLAIM_FILE).exists()
    assert not [p.name for p in run.iterdir() if p.name.startswith(CLAIM_FILE + ".")]


def test_a_live_pid_without_the_os_lock_is_a_stale_claim(tmp_path):
    # Every holder on this host holds the OS lock: a claim whose writer does not was left by
    # a dead process, even if its pid now belongs to another one.
    run = tmp_path / "run"
    write_claim(run, socket.gethostname(), os.getppid())
    with run_lock(run) as holder:
        assert holder is None and claim(run)["pid"] == os.getpid()


def test_without_flock_a_live_pid_on_this_host_keeps_its_claim(tmp_path, no_flock):
    run = tmp_path / "run"
    write_claim(run, socket.gethostname(), os.getppid())
    with run_lock(run) as holder:
        assert holder is not None and holder.pid == os.getppid()
    assert claim(run)["token"] == "theirs"  # untouched


def test_a_holder_on_another_host_is_respected(tmp_path):
    run = tmp_path / "run"
    write_claim(run, "node7.cluster", 4242)
    for _ in range(2):
        with run_lock(run) as holder:
            assert holder == Holder("node7.cluster", 4242,
                                    dt.datetime(2024, 5, 1, 14, 5, tzinfo=dt.timezone.utc),
                                    holder.seen)
            assert holder.text().startswith("node7.cluster:4242 since 2024-05-01 ")
    assert held_by(run).host == "node7.cluster"
    assert claim(run)["token"] == "theirs"  # untouched


def test_another_hosts_claim_without_heartbeat_is_taken_over_only_when_asked(tmp_path):
    run = tmp_path / "run"
    write_claim(run, "node7.cluster", 4242)
    hour_ago = (run / CLAIM_FILE).stat().st_mtime - 3600
    os.utime(run / CLAIM_FILE, (hour_ago, hour_ago))
    with run_lock(run, stale_after_s=7200) as holder:
        assert holder is not None and holder.host == "node7.cluster"
    with run_lock(run, stale_after_s=600) as holder:
        assert holder is None and claim(run)["pid"] == os.getpid()


def test_an_unreadable_claim_is_being_written_until_it_is_old(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / CLAIM_FILE).write_text("")  # created, not yet written
    with run_lock(run) as holder:
        assert holder is not None and holder.host == "?"
        assert holder.text().startswith("another process since ")
    assert held_by(run).host == "?"
    hour_ago = (run / CLAIM_FILE).stat().st_mtime - 3600
    os.utime(run / CLAIM_FILE, (hour_ago, hour_ago))
    assert held_by(run) is None
    with run_lock(run) as holder:
        assert holder is None


def test_held_by_an_empty_folder_or_none(tmp_path):
    assert held_by(tmp_path / "missing") is None
    assert held_by(tmp_path) is None
