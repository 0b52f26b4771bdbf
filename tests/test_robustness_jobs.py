"""Jobs that are not trainings (the robustness step's evaluations, `Job.work`) go through the
study's executors like the trainings: in worker processes with --jobs K, a finished one
skipped without a process, each outcome recorded once in the section asked for and said in
its own words."""
from __future__ import annotations

import json
import os
import types
from dataclasses import dataclass
from pathlib import Path

from resnorm.study.execution.executors import make_executor
from resnorm.study.execution.job import Job, Outcome
from resnorm.study.execution.state import OutcomeRecorder, StudyState
from resnorm.study.plan.parse import parse_plan

PLAN = parse_plan({"defaults": {"size": 32, "n": 1, "epochs": 1, "device": "cpu"},
                   "runs": [{"name": "bn", "norm": "bn"}]})


@dataclass
class FakeWork:
    """A JobWork that notes the process it ran in (picklable: module level)."""

    folder: Path

    def finished(self) -> bool:
        return (self.folder / "done.json").is_file()

    def record(self) -> dict | None:
        return json.loads((self.folder / "done.json").read_text()) if self.finished() else None

    def __call__(self, label: str, progress: bool, lock: bool) -> Outcome:
        if self.finished():
            return Outcome(label, "completed", "skipped", self.record(), 0.0, note="noted")
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "done.json").write_text(json.dumps({"pid": os.getpid()}))
        return Outcome(label, "completed", "evaluated", None, 0.5, note="noted")


def job(study: Path, name: str) -> Job:
    cfg = types.SimpleNamespace(out=str(study / "runs" / name), lr=0.1, name=name,
                                device="cpu", batch_size=8, size=32, n=1, shortcut="A",
                                eval_batch_size=8, amp="off", norm="bn")
    return Job(types.SimpleNamespace(name=name), 0, cfg, "", FakeWork(study / "rob" / name))


def test_work_jobs_run_in_worker_processes_and_are_recorded_once(tmp_path):
    state = StudyState(tmp_path, PLAN, "data")
    jobs = [job(tmp_path, n) for n in ("a", "c")]
    jobs[1].work(jobs[1].label, False, False)  # done before: no process for it
    lines = []
    executor = make_executor("local", jobs=2, threads=1, progress=False,
                             recorder=OutcomeRecorder(state, "robustness"))
    outcomes = executor.run(jobs, lines.append)
    assert [o.action for o in outcomes] == ["evaluated", "skipped"]
    pid = json.loads((tmp_path / "rob" / "a" / "done.json").read_text())["pid"]
    assert pid != os.getpid() and outcomes[0].final == {"pid": pid}  # read back by the parent
    saved = json.loads((tmp_path / "study.json").read_text())
    assert sorted(saved["robustness"]) == ["a/seed-0", "c/seed-0"]
    assert "runs" not in saved or not saved["runs"]
    said = [line for line in lines if line.startswith("[")]
    assert len(said) == 2 and all("noted" in line for line in said)
    assert any("(already done)" in line for line in said)
    assert (tmp_path / "rob" / "a" / "train.log").is_file()  # the job's log, in its folder
    assert not (tmp_path / "runs").exists()  # the trained runs' folders are not touched
