"""resnorm.cpu_memory: glibc malloc keeps freed memory during CPU training."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from resnorm import cpu_memory

# Page faults of 5 rounds of a training-step-like pattern: ten 4 MiB activations allocated
# and filled, then all freed at once (glibc trims the heap once enough is free at its top).
FAULTS_SCRIPT = """
import resource, torch
from resnorm.cpu_memory import keep_freed_memory
kept = keep_freed_memory()
def rounds(k):
    for _ in range(k):
        acts = [torch.empty(1 << 20).fill_(1.0) for _ in range(10)]
        del acts
rounds(2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(5)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(env_update: dict[str, str]) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items()  # without any malloc settings of the caller
           if k not in (cpu_memory.OPT_OUT_VARIABLE, "GLIBC_TUNABLES", "LD_PRELOAD")
           and not k.startswith("MALLOC_")}
    env.update(env_update)
    out = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not cpu_memory.on_glibc(), reason="glibc malloc only")
def test_freed_memory_is_reused_without_page_faults():
    kept, faults = _faults({})
    assert kept
    # glibc trims only when nothing live sits above the freed blocks, which depends on the
    # heap's layout in that process: a few tries show what the default does
    for _ in range(3):
        default_kept, faults_default = _faults({cpu_memory.OPT_OUT_VARIABLE: "0"})
        assert not default_kept
        if faults_default >= 10_000:  # 5 x 40 MiB faulted in again would be ~50,000
            break
    else:
        pytest.skip(f"this glibc keeps freed memory by itself ({faults_default} faults)")
    # a few thousand at most: the kernel may still reclaim idle pages behind our back
    assert faults < faults_default / 5


def test_opt_out_and_user_settings_leave_malloc_alone(monkeypatch):
    monkeypatch.setitem(cpu_memory._state, "applied", False)
    monkeypatch.setenv(cpu_memory.OPT_OUT_VARIABLE, "0")
    assert cpu_memory.keep_freed_memory() is False
    monkeypatch.delenv(cpu_memory.OPT_OUT_VARIABLE)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1000000")
    assert cpu_memory.keep_freed_memory() is False
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")
    assert cpu_memory.keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")
    assert cpu_memory.keep_freed_memory() is False
    assert cpu_memory._state["applied"] is False
