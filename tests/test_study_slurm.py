"""`resnorm study --executor slurm` without a cluster: the plan's `slurm:` section and the
command line's options (checked, one-line errors), what a task asks of SLURM, a study through
submitit's debug and local executors (the same results as a local study; a re-run submits
nothing), the job that finishes a --no-wait study, and the login node's reading of the queue
(squeue replaced by a script): progress, a task that ends without a result, a stale claim of a
SLURM task that has ended, a task of an earlier submission waited for rather than resubmitted.
tests/test_slurm_cluster.py runs the same against a real cluster."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import pickle
import shutil
import types

import pytest
import yaml

from resnorm import cli
from resnorm.errors import UsageError
from resnorm.study.execution import slurm, slurm_queue
from resnorm.pipeline import finish_study, run_study
from resnorm.study.execution.locks import CLAIM_FILE, held_by
from resnorm.study.plan.options import StudyOptions
from resnorm.study.plan.parse import parse_plan
from resnorm.study.execution.job import Job, Outcome
from run_results import run_results

pytestmark = pytest.mark.usefixtures("one_thread")

PLAN = {"threads": 1,
        "defaults": {"size": 32, "n": 1, "epochs": 1, "batch_size": 16, "device": "cpu"},
        "runs": [{"name": "bn", "norm": "bn"}, {"name": "gn", "norm": "gn"}]}
LABELS = ("bn/seed-0", "gn/seed-0")


@pytest.fixture
def plan_file(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(PLAN))
    return path


def results(study, label):
    return run_results(study / "runs" / label)


# --- settings -------------------------------------------------------------------------------

def test_plan_slurm_section_is_checked():
    plan = parse_plan({**PLAN, "slurm": {"partition": "gpu", "time": "1-12:00",
                                         "gpus_per_task": 0, "sbatch": {"account": "lab"},
                                         "setup": ["module load cuda"]}})
    assert plan.slurm["time"] == 36 * 60 and plan.slurm["sbatch"] == {"account": "lab"}
    bad = [({"gpus": 1}, "slurm: unknown key 'gpus'"),
           ({"time": "soon"}, "slurm.time must be minutes or a SLURM time"),
           ({"cpus_per_task": 0}, "slurm.cpus_per_task must be a positive integer"),
           ({"gpus_per_task": -1}, "slurm.gpus_per_task must be an integer >= 0"),
           ({"sbatch": ["account=lab"]}, "slurm.sbatch must map sbatch options"),
           ({"setup": "module load cuda"}, "slurm.setup must be a list of shell lines")]
    for section, message in bad:
        with pytest.raises(UsageError, match=message.replace(".", r"\.")):
            parse_plan({**PLAN, "slurm": section})


@pytest.mark.parametrize("value, minutes", [(90, 90), ("90", 90), ("1:30", 2), ("2:00:00", 120),
                                            ("1-12", 2160), ("2-03:04:05", 3065)])
def test_time_limits_read_as_sbatch_reads_them(value, minutes):
    from resnorm.study.plan.parse import parse_time_limit

    assert parse_time_limit(value, "--time-limit") == minutes


def test_unknown_plan_key_and_bad_options_are_one_line_usage_errors(synth_cache, plan_file,
                                                                    tmp_path, capsys):
    bad_plan = tmp_path / "bad.yaml"
    bad_plan.write_text(yaml.safe_dump({**PLAN, "slurm": {"queue": "gpu"}}))
    base = ["study", "--data", str(synth_cache.path), "--out", str(tmp_path / "s"), "--quiet"]
    cases = [(["--plan", str(bad_plan), "--executor", "slurm"], "slurm: unknown key 'queue'"),
             (["--plan", str(plan_file), "--partition", "gpu"],
              "--partition is a SLURM option: it needs --executor slurm"),
             (["--plan", str(plan_file), "--no-wait"], "--no-wait is a SLURM option"),
             (["--plan", str(plan_file), "--executor", "slurm", "--jobs", "2"],
              "does not combine with --jobs, --shard or torchrun"),
             (["--plan", str(plan_file), "--executor", "slurm", "--sbatch", "account"],
              "--sbatch takes KEY=VALUE"),
             (["--plan", str(plan_file), "--executor", "slurm", "--time-limit", "1:2:3:4"],
              "--time-limit must be minutes or a SLURM time"),
             (["--plan", str(plan_file), "--executor", "slurm", "--cpus-per-task", "0"],
              "--cpus-per-task must be at least 1")]
    for extra, message in cases:
        assert cli.main(base + extra) == 2, extra
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "s" / "runs").exists()  # refused before any work


def test_help_shows_an_example(capsys):
    with pytest.raises(SystemExit):
        cli.main(["study", "--help"])
    text = capsys.readouterr().out
    assert "--executor slurm --partition gpu --time-limit 4:00:00" in text
    assert "--array-parallelism" in text and "--no-wait" in text


def test_command_line_overrides_the_plan_and_sbatch_settings_merge():
    settings = slurm.slurm_settings({"partition": "a", "time": 60,
                                     "sbatch": {"account": "lab", "qos": "low"}},
                                    {"partition": "b", "time": None, "sbatch": {"qos": "high"}})
    assert (settings.partition, settings.time) == ("b", 60)
    assert settings.sbatch == {"account": "lab", "qos": "high"}


def fake_jobs(device):
    return [types.SimpleNamespace(cfg=types.SimpleNamespace(device=device))]


@pytest.fixture
def srun_on_path(tmp_path, monkeypatch):
    """submitit's SLURM executor refuses to be made where `srun` is not on PATH; building its
    parameters calls nothing. Without SLURM here, a stand-in `srun` that fails if called."""
    if shutil.which("srun") is None:
        bin_dir = tmp_path / "srun-bin"
        bin_dir.mkdir()
        (bin_dir / "srun").write_text("#!/bin/sh\necho 'not a SLURM cluster' >&2\nexit 1\n")
        (bin_dir / "srun").chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_what_a_task_asks_of_slurm(tmp_path, srun_on_path):
    settings = slurm.SlurmSettings(partition="gpu", time=90, mem_gb=16, array_parallelism=3,
                                   sbatch={"account": "lab"}, setup=["module load cuda"])
    params = slurm.submitit_executor(tmp_path / "slurm", settings, fake_jobs("auto"),
                                     None)._executor.parameters
    assert {k: params[k] for k in ("partition", "time", "cpus_per_task", "gpus_per_node",
                                   "array_parallelism", "mem")} == {
        "partition": "gpu", "time": 90, "cpus_per_task": 4, "gpus_per_node": 1,
        "array_parallelism": 3, "mem": "16GB"}
    assert params["additional_parameters"] == {"account": "lab"}
    assert params["setup"] == ["module load cuda"]
    # runs on the CPU: no GPU asked for; CPUs: the plan's threads
    params = slurm.submitit_executor(tmp_path / "slurm", slurm.SlurmSettings(time=5),
                                     fake_jobs("cpu"), 2)._executor.parameters
    assert "gpus_per_node" not in params and params["cpus_per_task"] == 2


# --- a study through submitit's debug and local executors ------------------------------------

def test_debug_executor_study_equals_the_local_study_and_rerun_submits_nothing(
        synth_cache, plan_file, tmp_path, capsys):
    quiet = StudyOptions(data=synth_cache.path, progress=False, gradcam=False, report=False)
    local, through = tmp_path / "local", tmp_path / "slurm"
    run_study(plan_file, local, quiet)
    result = run_study(plan_file, through, dataclasses.replace(
        quiet, executor="slurm", slurm={"cluster": "debug", "poll_s": 0}))
    text = capsys.readouterr().out
    assert [o.status for o in result.outcomes] == ["completed", "completed"]
    assert "slurm: submitted array" in text and "slurm: 2 done, 0 running, 0 pending, 0 failed" \
        in text
    for label in LABELS:
        assert results(through, label) == results(local, label)
    state = json.loads((through / "study.json").read_text())["runs"]
    assert [state[label]["action"] for label in LABELS] == ["trained", "trained"]

    result = run_study(plan_file, through, dataclasses.replace(
        quiet, executor="slurm", slurm={"cluster": "debug"}))
    text = capsys.readouterr().out
    assert "submitted" not in text and text.count("(already done)") == 2
    assert [o.action for o in result.outcomes] == ["skipped", "skipped"]


@pytest.mark.slow
def test_local_executor_tasks_and_the_job_that_finishes_a_no_wait_study(
        synth_root, plan_file, tmp_path, capsys):
    """Tasks in processes of their own (result files, as on a cluster); then what the job
    after the array does under --no-wait, replayed: record every task's outcome, a task that
    left no result as failed, then Grad-CAM and the report."""
    from resnorm.study.plan.parse import load_plan
    from resnorm.study.datasets import prepare_data
    from resnorm.study.execution.make_jobs import resolved_jobs
    from resnorm.study.execution.state import OutcomeRecorder, StudyState
    from resnorm.study.plan.resolve import resolve_runs

    study = tmp_path / "study"
    result = run_study(plan_file, study, StudyOptions(
        data=synth_root, progress=False, gradcam=False, report=False, executor="slurm",
        slurm={"cluster": "local", "poll_s": 0.2}))
    assert [o.status for o in result.outcomes] == ["completed", "completed"]
    assert (study / "cache").is_dir()  # the data prepared once, beside the runs
    tasks = json.loads((study / "slurm" / "tasks.json").read_text())
    assert sorted(tasks) == list(LABELS)

    manifest = json.loads((study / "study.json").read_text())["manifest"]
    (study / "study.json").write_text(json.dumps({"manifest": manifest}))  # no outcomes yet
    plan = load_plan(plan_file)
    runs = resolve_runs(plan)
    caches = prepare_data(synth_root, [r.config for r in runs.values()], str(study / "cache"),
                          False)
    todo = resolved_jobs(runs.values(), synth_root, caches, study)
    state = StudyState(study, plan, str(synth_root))
    finish = functools.partial(finish_study, study, plan, state, gradcam=False, report=True)
    tasks["gn/seed-0"] = "999999"  # a task that ended without a result (cancelled, say)
    capsys.readouterr()
    finish_job = slurm.FinishStudy(todo, tasks, study / "slurm", OutcomeRecorder(state), finish)
    summary = pickle.loads(pickle.dumps(finish_job))()  # as submitit hands it to the job
    assert summary == "1 job(s) failed"
    runs = json.loads((study / "study.json").read_text())["runs"]
    assert runs["bn/seed-0"]["status"] == "completed" and runs["bn/seed-0"]["action"] == "trained"
    assert runs["gn/seed-0"]["status"] == "failed"
    assert "SLURM task 999999 ended without a result; log: " in runs["gn/seed-0"]["error"]
    assert (study / "report.html").exists()


def test_a_requeued_task_is_the_same_job_again():
    task = slurm.TrainTask(threads=1)
    job = types.SimpleNamespace(label="bn/seed-0")
    again = task.checkpoint(job)
    assert again.function is task and again.args == (job,)


# --- the login node's view of the queue -----------------------------------------------------

class FakeTask:
    def __init__(self, tmp_path, job_id, outcome=None, error=None):
        self.job_id = job_id
        self.paths = types.SimpleNamespace(stderr=tmp_path / f"{job_id}_0_log.err",
                                           result_pickle=tmp_path / f"{job_id}_0_result.pkl",
                                           folder=tmp_path)
        self.outcome, self.error = outcome, error

    def result(self):
        if self.error:
            raise self.error
        return self.outcome


def a_job(tmp_path, name):
    cfg = types.SimpleNamespace(out=str(tmp_path / "runs" / name / "seed-0"), lr=0.1,
                                device="cpu")
    return Job(types.SimpleNamespace(name=name), 0, cfg, "set by the run")


def test_waiting_reports_progress_and_a_task_gone_without_a_result_fails(tmp_path):
    from submitit.core.utils import FailedJobError

    jobs = {n: a_job(tmp_path, n) for n in ("a", "b", "c")}
    done = Outcome("a/seed-0", "completed", "trained", None, 3.0)
    trace = ("Job (task=0) failed during processing with trace:\n----------------------\n"
             "Traceback (most recent call last):\n  File ...\nMemoryError: out of memory\n"
             "----------------------\nYou can check full logs")
    tasks = {"a/seed-0": FakeTask(tmp_path, "7_0", done),
             "b/seed-0": FakeTask(tmp_path, "7_1"),
             "c/seed-0": FakeTask(tmp_path, "7_2", error=FailedJobError(trace))}
    looks = iter([{"7_0": "running", "7_1": "pending", "7_2": "running"},
                  {"7_0": "done", "7_1": "ended:CANCELLED", "7_2": "done"},
                  {}])  # b: gone twice in a row -> failed
    said = []
    got = list(slurm.wait_for(tasks, {j.label: j for j in jobs.values()},
                              lambda _: next(looks), slurm.SlurmSettings(poll_s=0), said.append))
    by_label = {job.label: outcome for job, outcome in got}
    assert by_label["a/seed-0"] is done
    assert by_label["c/seed-0"].error == ("SLURM task 7_2 failed: MemoryError: out of memory; "
                                          f"log: {tmp_path / '7_2_0_log.err'}")
    assert by_label["b/seed-0"].status == "failed"
    assert by_label["b/seed-0"].error == ("SLURM task 7_1 ended (CANCELLED) without a result; "
                                          f"log: {tmp_path / '7_1_0_log.err'}")
    assert said == ["slurm: 0 done, 2 running, 1 pending, 0 failed",
                    "slurm: 1 done, 0 running, 0 pending, 1 failed",
                    "slurm: 1 done, 0 running, 0 pending, 2 failed"]


@pytest.fixture
def fake_squeue(tmp_path, monkeypatch):
    """`squeue` on PATH printing $FAKE_SQUEUE_OUT (and $FAKE_SQUEUE_ERR, exit $FAKE_SQUEUE_RC)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "squeue"
    script.write_text('#!/bin/sh\nprintf "%b" "$FAKE_SQUEUE_OUT"\n'
                      '[ -n "$FAKE_SQUEUE_ERR" ] && echo "$FAKE_SQUEUE_ERR" >&2\n'
                      'exit ${FAKE_SQUEUE_RC:-0}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def answer(out="", rc=0, err=""):
        monkeypatch.setenv("FAKE_SQUEUE_OUT", out)
        monkeypatch.setenv("FAKE_SQUEUE_RC", str(rc))
        monkeypatch.setenv("FAKE_SQUEUE_ERR", err)
    return answer


def test_squeue_states(tmp_path, fake_squeue):
    tasks = [FakeTask(tmp_path, i) for i in ("5_0", "5_1", "5_2", "5_3")]
    tasks[3].paths.result_pickle.write_bytes(b"")
    fake_squeue("5_0|6|RUNNING\\n5_1|5|PENDING\\n5_2|7|CANCELLED\\n")
    assert slurm_queue.squeue_states(tasks) == {"5_0": "running", "5_1": "pending",
                                          "5_2": "ended:CANCELLED", "5_3": "done"}
    fake_squeue(rc=1, err="slurm_load_jobs error: Invalid job id specified")
    assert slurm_queue.squeue_states(tasks) == {"5_3": "done"}  # the others ended long ago
    fake_squeue(rc=1, err="slurm_load_jobs error: Socket timed out on send/recv operation")
    assert slurm_queue.squeue_states(tasks) == {"5_0": "pending", "5_1": "pending",
                                          "5_2": "pending", "5_3": "done"}  # look again later


def write_claim(run_dir, slurm_job):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CLAIM_FILE).write_text(json.dumps(
        {"host": "node9.cluster", "pid": 4242, "started": "2026-01-02T03:04:05+00:00",
         "token": "t", "slurm_job": slurm_job}))


def test_claims_of_ended_slurm_tasks_are_removed_and_live_ones_respected(tmp_path,
                                                                         fake_squeue):
    ended, running, queued = (a_job(tmp_path, n) for n in ("ended", "running", "queued"))
    write_claim(ended.dir, "77")
    write_claim(running.dir, "78")
    assert "node9.cluster:4242 (SLURM job 77) since" in held_by(ended.dir).text()
    folder = tmp_path / "slurm"
    folder.mkdir()
    (folder / slurm.TASKS_FILE).write_text(json.dumps({"queued/seed-0": "12_3"}))
    fake_squeue("12_3|15|PENDING\\n78|78|RUNNING\\n")
    said, told = [], []
    tracked, to_submit = slurm.sort_jobs([ended, running, queued], folder,
                                         slurm.SlurmSettings(), said.append,
                                         lambda job, outcome: told.append(outcome))
    assert [job.label for job in to_submit] == ["ended/seed-0"]
    assert not (ended.dir / CLAIM_FILE).exists() and (running.dir / CLAIM_FILE).exists()
    assert [(o.name, o.status) for o in told] == [("running/seed-0", "busy")]
    assert "(SLURM job 78)" in told[0].error
    assert list(tracked) == ["queued/seed-0"] and tracked["queued/seed-0"].job_id == "12_3"
    assert said == ["ended/seed-0: SLURM job 77, which held it, has ended; its claim is removed "
                    "and the run resumes",
                    "queued/seed-0: already queued as SLURM task 12_3 (PENDING); waiting for it"]


def test_a_slurm_task_names_its_job_in_its_claim(tmp_path, monkeypatch):
    from resnorm.study.execution.locks import run_lock

    monkeypatch.setenv("SLURM_JOB_ID", "31")
    with run_lock(tmp_path / "run") as holder:
        assert holder is None
        assert json.loads((tmp_path / "run" / CLAIM_FILE).read_text())["slurm_job"] == "31"
        assert held_by(tmp_path / "run").slurm_job == "31"
