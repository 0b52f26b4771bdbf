"""A hand-made study's own files, as `resnorm study` writes them before training: the plan copy
(plan.yaml) and study.json with the study manifest (each run resolved and the design derived by
the same plan-time code). Tests that build run folders by hand (no training) call `write_plan`
so that the report, Grad-CAM and the export read them as a current study."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from resnorm.study.plan.manifest import MANIFEST_KEY
from resnorm.study.plan.parse import parse_plan
from resnorm.study.plan.resolve import plan_design, resolve_runs
from resnorm.study.runner import study_manifest
from resnorm.studydir import StudyDir


def write_plan(study: Path, plan: dict, **state) -> None:
    """STUDY/plan.yaml (`plan`) and STUDY/study.json: `state` (e.g. runs, lr_rule_text) and
    the manifest (no job entries: nothing was resolved into a job by hand)."""
    folder = StudyDir(study)
    folder.dir.mkdir(parents=True, exist_ok=True)
    folder.plan.write_text(yaml.safe_dump(plan, sort_keys=False))
    parsed = parse_plan(plan, str(folder.plan))
    runs = resolve_runs(parsed)
    manifest = study_manifest(plan_design(parsed, runs), runs, [], folder.dir)
    folder.state.write_text(json.dumps({"runs": {}, **state, MANIFEST_KEY: manifest.to_dict()}))
