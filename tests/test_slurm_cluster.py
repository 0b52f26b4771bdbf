"""`resnorm study --executor slurm` against a real SLURM cluster (scripts/slurm/up.sh starts a
single-node one; .ci/run does): one task is preempted (SIGUSR2, as SLURM signals a time limit
or preemption) and requeues itself, another is cancelled with scancel mid-run; the command says
so and exits 1, the same command again resumes the cancelled job, and the study's results equal
a local study's. And --no-wait: the job after the array records the study and writes the report.

Skips where no cluster answers (`sinfo` fails), unless RESNORM_TEST_SLURM=1 (set by .ci/run
once the cluster is up): then a missing cluster is a failure.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from run_results import run_results

pytestmark = pytest.mark.slow

LABELS = ("bn/seed-0", "gn/seed-0")
# Long enough (~6 s of training per job here) that both jobs are still training when the
# test signals them, and that the cancelled one is still training when SLURM's KillWait (2 s
# on the test cluster) ends with SIGKILL: submitit lets a task live through SIGTERM.
PLAN = {"threads": 1, "slurm": {"cpus_per_task": 1, "array_parallelism": 2},
        "defaults": {"size": 32, "n": 1, "epochs": 60, "batch_size": 16, "device": "cpu"},
        "runs": [{"name": "bn", "norm": "bn"}, {"name": "gn", "norm": "gn"}]}


def cluster_answers() -> bool:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and any(s.strip("*~#") in ("idle", "mix", "alloc")
                                       for s in out.stdout.split())


def kill_wait() -> int | None:
    """The cluster's KillWait: how long a cancelled task lives on after SIGTERM."""
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                         timeout=30).stdout
    for line in out.splitlines():
        if line.startswith("KillWait"):
            return int(line.split("=")[1].split()[0])
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    if not cluster_answers():
        if os.environ.get("RESNORM_TEST_SLURM") == "1":
            pytest.fail("RESNORM_TEST_SLURM=1 but no SLURM cluster answers (sinfo)")
        pytest.skip("no SLURM cluster answers (sinfo fails or shows no usable node); start "
                    "one with `sudo scripts/slurm/up.sh`")
    if (kill_wait() or 0) > 5:
        pytest.skip("this cluster's KillWait is long: a cancelled task would finish its tiny "
                    "run before SIGKILL; the test is sized for scripts/slurm/up.sh's cluster")


def study(data, plan, out, *extra, executor="slurm"):
    """`resnorm study` in a process of its own, as a user starts it on a login node."""
    argv = [sys.executable, "-m", "resnorm", "study", "--data", str(data), "--plan", str(plan),
            "--out", str(out), "--quiet", "--no-gradcam", "--executor", executor, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def results(folder, label):
    return run_results(folder / "runs" / label)


def lines(text):
    return {line.split()[1]: line for line in text.splitlines() if line.startswith("[")}


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_preempted_task_requeues_cancelled_one_resumes_on_rerun(synth_root, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(PLAN))
    out = tmp_path / "slurm-study"
    proc = study(synth_root, plan, out)
    runs = {label: out / "runs" / label for label in LABELS}
    # both tasks are mid-run: each has checkpointed an epoch, neither has finished
    wait_until(lambda: all((r / "last.pt").exists() for r in runs.values()), 180,
               "both tasks to checkpoint an epoch")
    assert not any((r / "final.json").exists() for r in runs.values())
    tasks = json.loads((out / "slurm" / "tasks.json").read_text())
    subprocess.run(["scancel", "--signal=USR2", tasks["bn/seed-0"]], check=True)  # preempted
    subprocess.run(["scancel", tasks["gn/seed-0"]], check=True)                    # cancelled
    code, text, err = finish(proc)
    assert code == 1, err
    first = lines(text)
    assert "resumed in" in first["bn/seed-0"], text  # requeued by submitit, resumed, finished
    assert "ended (CANCELLED) without a result; log: " in first["gn/seed-0"], text
    log = first["gn/seed-0"].split("log: ")[1].strip()
    assert os.path.exists(log) and log.startswith(str(out / "slurm"))
    assert "1 job(s) failed: gn/seed-0" in err
    assert not (runs["gn/seed-0"] / "final.json").exists()
    assert (runs["gn/seed-0"] / "last.pt").exists()

    # the same command again: the finished job is skipped, the cancelled one resumes
    code, text, err = finish(study(synth_root, plan, out))
    assert code == 0, err
    second = lines(text)
    assert "already done" in second["bn/seed-0"] and "resumed in" in second["gn/seed-0"], text
    assert "submitted array" in text and "1 task(s)" in text
    state = json.loads((out / "study.json").read_text())["runs"]
    assert {label: state[label]["status"] for label in LABELS} == dict.fromkeys(LABELS,
                                                                               "completed")
    assert (out / "report.html").exists()

    # the results a local study gives (CPU training is deterministic, resumed or not)
    local = tmp_path / "local-study"
    code, _, err = finish(study(synth_root, plan, local, "--no-report", executor="local"))
    assert code == 0, err
    for label in LABELS:
        assert results(out, label) == results(local, label), label


def test_no_wait_submits_a_job_that_finishes_the_study(synth_root, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({**PLAN, "defaults": {**PLAN["defaults"], "epochs": 1},
                                    "runs": PLAN["runs"][:1]}))
    out = tmp_path / "no-wait"
    started = time.monotonic()
    code, text, err = finish(study(synth_root, plan, out, "--no-wait"))
    assert code == 0, err
    assert time.monotonic() - started < 60  # it did not wait for the training
    assert "to run after array" in text and "(afterany)" in text, text
    wait_until(lambda: (out / "report.html").exists(), 240, "the finishing job's report")
    state = json.loads((out / "study.json").read_text())["runs"]
    assert state["bn/seed-0"]["status"] == "completed"
    assert state["bn/seed-0"]["action"] == "trained"  # the task's own outcome, recorded later


def test_a_tuned_study_waits_for_its_trials_then_submits_the_final_runs(synth_root, tmp_path):
    """A plan with `tune:` and --no-wait: the command waits for the trials (SLURM tasks, their
    logs in tuning/slurm), chooses, submits the final runs and returns; the job after the
    array writes the report with its tuning section; the choice equals a local study's."""
    from resnorm.study.tuning.results import read_choices

    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        **PLAN, "defaults": {**PLAN["defaults"], "epochs": 1},
        "tune": {"lr": [0.02, 0.2], "epochs": 1, "last_epochs": 1, "default": False}}))
    out = tmp_path / "tuned"
    code, text, err = finish(study(synth_root, plan, out, "--no-wait"))
    assert code == 0, err
    assert "tune bn: lr" in text and "tune gn: lr" in text and "to run after array" in text
    assert (out / "tuning" / "slurm").is_dir()
    wait_until(lambda: (out / "report.html").exists(), 240, "the finishing job's report")
    assert "Tuning: each run at its own learning rate" in (out / "report.md").read_text()

    local = tmp_path / "local"
    code, _, err = finish(study(synth_root, plan, local, "--no-report", executor="local"))
    assert code == 0, err
    remote, here = read_choices(out), read_choices(local)
    assert set(remote) == {"bn", "gn"}
    assert {k: (r.chosen_lr, [p.score for p in r.trials]) for k, r in remote.items()} == \
           {k: (r.chosen_lr, [p.score for p in r.trials]) for k, r in here.items()}
