"""A hand-made study's own files, as `resnorm study` writes them before training: the plan copy
(plan.yaml) and study.json with the study manifest (the design derived by the same plan-time
code). Tests that build run folders by hand (no training) call `write_plan` so that the report,
Grad-CAM and the export read them as a current study."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from resnorm.study.plan.manifest import MANIFEST_KEY, Manifest
from resnorm.study.plan.parse import parse_plan, plan_design
from resnorm.studydir import StudyDir


def write_plan(study: Path, plan: dict, **state) -> None:
    """STUDY/plan.yaml (`plan`) and STUDY/study.json: `state` (e.g. runs, lr_rule_text) and
    the manifest's design (no job entries: nothing was resolved by hand)."""
    folder = StudyDir(study)
    folder.dir.mkdir(parents=True, exist_ok=True)
    folder.plan.write_text(yaml.safe_dump(plan, sort_keys=False))
    design = plan_design(parse_plan(plan, str(folder.plan)))
    state = {"runs": {}, **state, MANIFEST_KEY: Manifest(design, {}, {}).to_dict()}
    folder.state.write_text(json.dumps(state))
