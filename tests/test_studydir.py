"""StudyDir: the one owner of a study folder's paths; a study an older version wrote is refused
in one line that says how to re-render it; a run's one status (RunDir.status)."""
from __future__ import annotations

import json

import pytest

from resnorm import cli
from resnorm.rundir import ERROR_FILE, LAST_FILE, OK_STATUSES, STATUSES, RunDir
from resnorm.study import collect_runs
from resnorm.studydir import StudyDir, point_name
from study_files import write_plan


def test_every_path_of_a_study_folder(tmp_path):
    s = StudyDir(tmp_path)
    assert s.trial("bn", 2) == tmp_path / "runs" / "bn" / "seed-2"
    assert StudyDir.of_run(s.trial("bn", 2)).dir == tmp_path.resolve()
    assert StudyDir.of_run(tmp_path / "bn") is None
    assert s.tuning_trial("gn", point_name(0.1, 5e-4), 0) == \
        tmp_path / "tuning" / "gn" / "lr-0.1-wd-0.0005" / "seed-0"
    assert s.gradcam_of("gn") == tmp_path / "gradcam" / "runs" / "gn"
    assert StudyDir.gallery_json(s.gradcam) == tmp_path / "gradcam" / "gradcam.json"
    for seed in (3, -1, 0):
        s.trial("bn", seed).mkdir(parents=True)
    (s.run("bn") / "notes").mkdir()
    assert [seed for seed, _ in s.seed_folders("bn")] == [-1, 0, 3]
    assert s.run_names() == ["bn"] and str(s) == str(tmp_path)


def test_a_study_an_older_version_wrote_is_refused_in_one_line(tmp_path, capsys):
    study = tmp_path / "old"
    write_plan(study, {"runs": [{"name": "bn", "norm": "bn"}]})
    StudyDir(study).trial("bn", 0).mkdir(parents=True)
    RunDir(StudyDir(study).trial("bn", 0)).write_final({"status": "completed"})
    assert [r.status for r in collect_runs(study)] == ["completed"]  # current: read
    current = json.loads((study / "study.json").read_text())
    tuning = StudyDir(study).tuning_choice
    tuning.parent.mkdir()
    tuning.write_text(json.dumps({"runs": {"bn": {"trials": []}}}))
    assert [r.status for r in collect_runs(study)] == ["completed"]
    current = {**current, "data": "/data/birds"}
    for older, why in (({"data": "/data/birds", "runs": {}}, "study.json has no manifest"),
                       ({**current, "manifest": {**current["manifest"], "version": 1}},
                        "a version-1 manifest"),
                       (current, "a tuning.json of an lr grid")):
        (study / "study.json").write_text(json.dumps(older))
        if why.startswith("a tuning"):
            tuning.write_text(json.dumps({"runs": {"bn": {"grid": [{"lr": 0.1}]}}}))
        assert cli.main(["report", str(study)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"older resnorm ({why})" in err
        assert f"resnorm study --plan {study / 'plan.yaml'} --data /data/birds --out " \
               f"{study}`" in err


def test_a_study_written_before_seeds_is_refused_in_one_line(tmp_path, capsys):
    study = tmp_path / "old"
    (study / "runs" / "bn").mkdir(parents=True)
    RunDir(study / "runs" / "bn").write_final({"status": "completed"})  # no seed-<s>/
    assert cli.main(["gradcam", str(study)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "before seeds" in err and "--out NEW_FOLDER" in err


def test_a_runs_status_has_one_definition(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.status() == "not started" and run.status("failed") == "failed"
    run.dir.mkdir()
    run.path(LAST_FILE).write_text("")
    assert run.status() == "interrupted"
    run.write_error("Traceback ...")  # the job's record of its failure
    assert run.status() == "failed" == run.status("completed")
    for status in STATUSES[:3]:
        run.write_final({"status": status})
        assert run.status("failed") == status  # final.json, once written, is the truth
    assert set(OK_STATUSES) < set(STATUSES) and ERROR_FILE == "error.txt"
