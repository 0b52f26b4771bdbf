"""One lock per run folder, so that several `resnorm study` processes can share one study.

A process that is about to train a run takes `RUN/.lock` without waiting; if another process
holds it, it learns who (host, pid, since when) and trains something else:

    with run_lock(run_dir) as holder:
        if holder is not None:
            print(f"skip {name}: being trained by {holder.text()}")
        else:
            train(...)          # the lock is ours until the with-block ends

The lock has two layers, because no single mechanism is both automatic and safe everywhere:

1. The OS lock: `filelock.FileLock` on `RUN/.lock` (flock). The kernel releases it when its
   process dies, however it dies (SIGKILL, out of memory, a segfault), so processes on one
   host never see a dead process's lock. Holding it also serialises everything below among
   the processes of this host (and of every host where the filesystem shares flocks).
2. The claim: `RUN/.lock.json` = {host, pid, started, token}, created with O_CREAT|O_EXCL,
   which is atomic on local disks and on NFS v3+/Lustre/GPFS. It is what excludes processes
   on *other* hosts where flocks are not shared between machines (NFS mounted `nolock`,
   Lustre `localflock`, ...): those would silently all win their own flock, but only one
   of them creates the claim. It is also what tells a contender who holds the run.

Taking the lock: try the OS lock. If it is held, someone alive holds the run: report the
claim's holder. If we got it (or the filesystem has no flock at all: filelock 3.x raises
NotImplementedError there; 4.x falls back to its own soft lock, which breaks stale markers
of dead local processes itself), create the claim. If a claim exists already:

- from another host: trusted; that host is training the run. (If that machine died, its
  claim stays: delete `RUN/.lock.json` by hand, or pass `stale_after_s`, see below.) Its
  holder refreshes the claim's mtime every `heartbeat_s` seconds, so `Holder.seen` says when
  it was last alive.
- from this host: taken over when its writer is gone, i.e. when we hold the OS lock (a live
  holder here would hold it: this also covers a pid reused since) or its pid is not alive
  (`os.kill(pid, 0)`: the test that decides where the filesystem has no flock).
- unreadable (its writer died between creating and writing it, microseconds): taken over
  once it is older than a few minutes.

Locks belong to processes, not threads (the study's `--jobs` workers are processes, each
taking the lock of its own run), and are not re-entrant: a second `run_lock` on the same run
in the same process is refused like any other. On leaving the with-block (an exception, Ctrl-C
and sys.exit included) the claim is removed, if it is still ours, and then the OS lock
released; a process killed outright leaves its claim, which the rules above take over.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import filelock

from resnorm.rundir import CLAIM_FILE, LOCK_FILE

__all__ = ["LOCK_FILE", "CLAIM_FILE", "HEARTBEAT_S", "Holder", "run_lock", "held_by"]

HEARTBEAT_S = 60.0
UNREADABLE_STALE_S = 300.0  # an unreadable claim this old lost its writer mid-write


@dataclass(frozen=True)
class Holder:
    """Who holds a run's lock: `host`, `pid`, `since` (when it took it, local time), `seen`
    (the claim's last heartbeat, seconds since the epoch by the filesystem's clock; None when
    unknown), `slurm_job` (the SLURM job id of a holder that is a SLURM task: the scheduler
    can tell whether it still runs). host "?" and pid 0: a claim that could not be read
    (being written)."""

    host: str
    pid: int
    since: dt.datetime
    seen: float | None = None
    slurm_job: str | None = None

    def text(self) -> str:
        """'node3:41237 since 14:05' (with the date when not today)."""
        since = self.since.astimezone()
        when = since.strftime("%H:%M" if since.date() == dt.date.today() else "%Y-%m-%d %H:%M")
        who = "another process" if self.host == "?" else f"{self.host}:{self.pid}"
        job = f" (SLURM job {self.slurm_job})" if self.slurm_job else ""
        return f"{who}{job} since {when}"

    def __str__(self) -> str:
        return self.text()


def host_name() -> str:
    return socket.gethostname()


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, *, heartbeat_s: float | None = HEARTBEAT_S,
             stale_after_s: float | None = None) -> Iterator[Holder | None]:
    """Try to take RUN_DIR's lock without waiting (the folder is created if needed).

    Yields None when we took it (held until the with-block ends), else the Holder of the
    process that trains the run. `heartbeat_s`: how often a daemon thread refreshes our
    claim's mtime (None: never). `stale_after_s`: also take over another host's claim whose
    heartbeat is older than this (None, the default: trust other hosts whatever their age; a
    suspended process, Ctrl-Z or a SLURM suspend, sends no heartbeat but will go on training).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    os_lock, got_os_lock = _take_os_lock(run_dir / LOCK_FILE)
    if os_lock is not None and not got_os_lock:
        yield _holder_of_os_lock(run_dir)
        return
    try:
        token = _claim(run_dir, proven_free=got_os_lock, stale_after_s=stale_after_s)
    except BaseException:
        _release_os_lock(os_lock, got_os_lock)
        raise
    if isinstance(token, Holder):
        _release_os_lock(os_lock, got_os_lock)
        yield token
        return
    beat = _Heartbeat(run_dir / CLAIM_FILE, heartbeat_s) if heartbeat_s else None
    try:
        yield None
    finally:
        try:
            if beat is not None:
                beat.stop()
            _drop_claim(run_dir, token)
        finally:
            _release_os_lock(os_lock, got_os_lock)


def held_by(run_dir: str | os.PathLike) -> Holder | None:
    """Who holds RUN_DIR's lock now (for the report's "in progress"), without touching it.

    A claim of this host whose pid is not alive is a dead process's: None. Another host's
    claim is trusted (see Holder.seen for its last heartbeat). An unreadable claim is being
    written: a Holder with host "?" (None once it is older than a few minutes).
    """
    run_dir = Path(run_dir)
    holder = _read_holder(run_dir)
    if holder is None:
        if not (run_dir / CLAIM_FILE).exists():
            return None
        holder = _unknown_holder(run_dir)
        stale = _age(run_dir / CLAIM_FILE, time.time()) > UNREADABLE_STALE_S
        return None if stale else holder
    if holder.host == host_name() and not _pid_alive(holder.pid):
        return None
    return holder


# --- the OS lock ---------------------------------------------------------------------------

def _take_os_lock(path: Path) -> tuple[filelock.BaseFileLock | None, bool]:
    """(lock, True) when taken, (lock, False) when another process holds it, (None, False)
    when this filesystem has no usable flock (then only the claim decides)."""
    lock = filelock.FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return lock, False
    except NotImplementedError:  # filelock 3.x on a filesystem without flock
        return None, False
    except OSError as exc:  # no locks here (ENOLCK, EOPNOTSUPP) or not ours to open (EACCES)
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EACCES,
                         errno.EPERM, errno.EROFS):
            return None, False
        raise
    return lock, True


def _holder_of_os_lock(run_dir: Path) -> Holder:
    """Who holds the OS lock: its claim, which a holder that has just taken the OS lock may
    still be writing (a few tries over a quarter of a second), else "another process"."""
    for attempt in range(6):
        holder = _read_holder(run_dir)
        if holder is not None:
            return holder
        if attempt < 5:
            time.sleep(0.05)
    return _unknown_holder(run_dir)


def _release_os_lock(lock, held: bool) -> None:
    if lock is not None and held:
        lock.release()


# --- the claim -----------------------------------------------------------------------------

def _claim(run_dir: Path, *, proven_free: bool, stale_after_s: float | None) -> str | Holder:
    """Create our claim (return its token) or return the Holder of the one that stands."""
    path = run_dir / CLAIM_FILE
    token = secrets.token_hex(8)
    data = _claim_record(token)
    for _ in range(3):  # a claim removed between our attempts: try again
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pass
        else:
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            return token
        holder = _read_holder(run_dir)
        if holder is None and not path.exists():
            continue
        if not _is_stale(run_dir, holder, proven_free, stale_after_s):
            return holder or _unknown_holder(run_dir)
        if not proven_free:
            # No OS lock to serialise the takeover: another process of this host may be taking
            # the same stale claim over right now. Only one of us can rename it aside.
            aside = path.with_name(f"{CLAIM_FILE}.{os.getpid()}.{token}.stale")
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                continue
            moved = _read_record(aside)
            same = moved is not None and holder is not None and \
                _holder_of(moved, holder.seen) == holder
            if holder is not None and not same:
                # Not the stale claim we judged: a fresh one, just created by a process that
                # took the stale one over before us. Put it back; that process holds the run.
                _put_back(aside, path)
                return _read_holder(run_dir) or _unknown_holder(run_dir)
            os.unlink(aside)
            continue
        # Under the OS lock no process of this host competes, and other hosts never replace
        # a claim of ours: replace the stale one in one step.
        temp = path.with_name(f"{CLAIM_FILE}.{os.getpid()}.{token}.tmp")
        temp.write_bytes(data)
        os.replace(temp, path)
        return token
    return _read_holder(run_dir) or _unknown_holder(run_dir)


def _claim_record(token: str) -> bytes:
    """What a claim file says: who holds the run (host, pid, since when, SLURM task)."""
    record = {"host": host_name(), "pid": os.getpid(),
              "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
              "token": token}
    if os.environ.get("SLURM_JOB_ID"):  # a SLURM task: squeue tells whether it still runs
        record["slurm_job"] = os.environ["SLURM_JOB_ID"]
    return (json.dumps(record) + "\n").encode()


def _put_back(aside: Path, path: Path) -> None:
    try:
        os.link(aside, path)  # fails if yet another claim appeared: then that one stands
    except FileExistsError:
        pass
    except OSError:  # no hard links on this filesystem
        os.replace(aside, path)
        return
    aside.unlink(missing_ok=True)


def _is_stale(run_dir: Path, holder: Holder | None, proven_free: bool,
              stale_after_s: float | None) -> bool:
    path = run_dir / CLAIM_FILE
    if holder is None:  # unreadable
        return _age(path, _fs_now(run_dir)) > UNREADABLE_STALE_S
    if holder.host == host_name():
        return proven_free or not _pid_alive(holder.pid)
    return stale_after_s is not None and _age(path, _fs_now(run_dir)) > stale_after_s


def _drop_claim(run_dir: Path, token: str) -> None:
    """Remove our claim, unless it is no longer ours (taken over meanwhile)."""
    path = run_dir / CLAIM_FILE
    record = _read_record(path)
    if record is not None and record.get("token") == token:
        path.unlink(missing_ok=True)


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _read_holder(run_dir: Path) -> Holder | None:
    """The claim's Holder; None when there is none or it cannot be read."""
    path = run_dir / CLAIM_FILE
    record = _read_record(path)
    if record is None:
        return None
    return _holder_of(record, _mtime(path))


def _holder_of(record: dict, seen: float | None) -> Holder | None:
    try:
        since = dt.datetime.fromisoformat(str(record["started"]))
        job = record.get("slurm_job")
        return Holder(str(record["host"]), int(record["pid"]), since, seen,
                      str(job) if job else None)
    except (KeyError, TypeError, ValueError):
        return None


def _unknown_holder(run_dir: Path) -> Holder:
    """Someone holds the lock but the claim says nothing yet (being written, or not there)."""
    seen = _mtime(run_dir / CLAIM_FILE) or _mtime(run_dir / LOCK_FILE)
    since = dt.datetime.fromtimestamp(seen).astimezone() if seen else dt.datetime.now()
    return Holder("?", 0, since, seen)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return True  # cannot tell: keep the lock
    return True


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _age(path: Path, now: float) -> float:
    mtime = _mtime(path)
    return 0.0 if mtime is None else now - mtime


def _fs_now(run_dir: Path) -> float:
    """Now by the clock of the filesystem that holds RUN_DIR (an NFS server's, not ours), so
    that ages of files written by other hosts are not skewed by their clocks or ours."""
    probe = run_dir / LOCK_FILE
    try:
        os.utime(probe, None)
        return probe.stat().st_mtime
    except OSError:
        return time.time()


class _Heartbeat:
    """Refreshes the claim's mtime every `every` seconds (daemon thread) while we hold it."""

    def __init__(self, path: Path, every: float) -> None:
        self.path, self.every = path, every
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="resnorm-lock-heartbeat",
                                       daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(self.every):
            with contextlib.suppress(OSError):
                os.utime(self.path, None)

    def stop(self) -> None:
        self.done.set()
        self.thread.join()
