"""A study exported to MLflow: one experiment, a parent run per plan run, a nested run per
(run, seed), a run holding the study's report, and for a tuned study a parent run per tuned
run ("tuning/<run>") with a nested run per tuning trial (its sampled params, its val score,
whether it was chosen, its epochs). A (run, seed) evaluated by the robustness step also
carries its accuracies on corrupted images (`robustness_*`, resnorm.robustness).

The run folders stay the source of truth; one process reads them (resnorm.study.execution.records) and
writes the tracking store. MLflow's file store is deprecated and one SQLite file breaks under
concurrent writers, so training never logs to MLflow itself.

Idempotent: every run carries the tag `resnorm.label` ("bn", "bn/seed-0", "study") and
`resnorm.fingerprint` (a hash of the files it was made from). A second export skips a run whose
fingerprint is unchanged and replaces one whose files changed (deleted, then written again:
MLflow appends metric history, so logging over it would duplicate every epoch).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from resnorm.errors import UsageError
from resnorm.robustness.results import read_record, record_metrics, trial_folder
from resnorm.rundir import ARTIFACT_FILES, RunDir
from resnorm.study.execution.records import RunRecord, Trial, collect_runs, trial_label
from resnorm.study.tuning.results import TrialPoint, TuneResult, read_choices
from resnorm.studydir import StudyDir

__all__ = ["export_study", "default_uri", "ExportResult", "LABEL_TAG", "FINGERPRINT_TAG",
           "flat_params", "final_metrics"]

LABEL_TAG = "resnorm.label"
FINGERPRINT_TAG = "resnorm.fingerprint"
KIND_TAG = "resnorm.kind"  # study | run | seed | tuning | trial
PARENT_TAG = "mlflow.parentRunId"  # how MLflow nests a run under another
# what a (run, seed) folder holds that goes along as artifacts, and the study's own files
FINAL_STATUS = {"completed": "FINISHED", "early_stopped": "FINISHED", "diverged": "FAILED"}
_BATCH = 900  # MLflow takes at most 1,000 metrics (100 params) per log_batch


@dataclass
class ExportResult:
    uri: str
    experiment: str
    written: list[str] = field(default_factory=list)    # labels created or replaced
    unchanged: list[str] = field(default_factory=list)  # labels skipped: same fingerprint
    unfinished: list[str] = field(default_factory=list)  # (run, seed) labels not exported yet

    def lines(self) -> list[str]:
        out = [f"export: {len(self.written)} MLflow run(s) written, {len(self.unchanged)} "
               f"unchanged, experiment {self.experiment!r} in {self.uri}"]
        if self.unfinished:
            out.append(f"export: {len(self.unfinished)} (run, seed) not finished yet, not "
                       f"exported: {', '.join(self.unfinished)} (export again when they are)")
        return out


def default_uri(study: Path) -> str:
    """A SQLite file in the study folder: `mlflow ui --backend-store-uri` shows it."""
    return f"sqlite:///{StudyDir(study).mlflow_db.resolve()}"


def _mlflow_client(uri: str):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UsageError("the MLflow export needs mlflow: pip install 'resnorm[mlflow]' "
                         "(or pip install mlflow)") from None
    return MlflowClient(tracking_uri=uri)


def export_study(study: str | Path, uri: str | None = None,
                 experiment: str | None = None) -> ExportResult:
    """Export every finished (run, seed) of `study` to the tracking store at `uri` (default:
    `default_uri(study)`), in the experiment `experiment` (default: the study folder's name)."""
    study = StudyDir(study)
    if not study.runs.is_dir():
        raise UsageError(f"{study} is not a study folder (no {StudyDir.RUNS}/)")
    uri = uri or default_uri(study)
    client = _mlflow_client(uri)
    name = experiment or study.dir.resolve().name
    exp_id = _experiment(client, name, study)
    result = ExportResult(uri, name)
    existing = _existing_runs(client, exp_id)
    for record in collect_runs(study):
        _export_record(client, exp_id, record, _gallery_files(study, record), existing,
                       result)
    for tuned in read_choices(study).values():
        _export_tuning(client, exp_id, study, tuned, existing, result)
    _export_study_files(client, exp_id, study, existing, result)
    return result


def _experiment(client, name: str, study: StudyDir) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise UsageError(f"MLflow experiment {name!r} is deleted in this store; restore it "
                             "(mlflow experiments restore) or give --experiment another name")
        return found.experiment_id
    # artifacts beside the store's study, not in ./mlartifacts of whatever folder we run in
    return client.create_experiment(name, artifact_location=study.mlflow_artifacts.resolve()
                                    .as_uri(), tags={"resnorm.study": str(study.dir.resolve())})


def _existing_runs(client, exp_id: str) -> dict[str, Any]:
    """Active runs of the experiment by their resnorm label."""
    runs, token = {}, None
    while True:
        page = client.search_runs([exp_id], max_results=1000, page_token=token)
        for run in page:
            label = run.data.tags.get(LABEL_TAG)
            if label:
                runs[label] = run
        token = page.token
        if not token:
            return runs


def _fingerprint(paths: list[Path], extra: Any = None) -> str:
    """A hash of the files' bytes (missing files count as missing) and of `extra`."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for path in paths:
        h.update(path.name.encode())
        if path.is_file():
            h.update(hashlib.sha256(path.read_bytes()).digest())
        elif path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                h.update(str(f.relative_to(path)).encode() + f.read_bytes())
    return h.hexdigest()[:16]


def _reuse(client, existing: dict, label: str, fingerprint: str, result: ExportResult):
    """The existing run when unchanged (None otherwise; a changed one is deleted)."""
    run = existing.get(label)
    if run is None:
        return None
    if run.data.tags.get(FINGERPRINT_TAG) == fingerprint:
        result.unchanged.append(label)
        return run
    client.delete_run(run.info.run_id)
    return None


# --- what a run folder says, as MLflow params and metrics -------------------------------------

def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """A resolved config (nested mappings: distributed, environment) as flat string params."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text[:6000]
    return out


def final_metrics(final: dict) -> dict[str, float]:
    """final.json's scores (the best checkpoint on each split) as `final_<split>_<key>`."""
    out = {}
    for split, ev in (final.get("eval") or {}).items():
        for key in ("loss", "acc", "micro_f1", "macro_f1"):
            if isinstance(ev.get(key), (int, float)):
                out[f"final_{split}_{key}"] = float(ev[key])
    for key in ("epochs_run", "best_epoch", "wall_time_s", "parameters"):
        if isinstance(final.get(key), (int, float)):
            out[key] = float(final[key])
    return out


def _start_ms(config: dict) -> int:
    started = (config.get("environment") or {}).get("started_at")
    try:
        return int(datetime.fromisoformat(str(started)).timestamp() * 1000)
    except ValueError:
        return int(time.time() * 1000)


def _epoch_metrics(rows: list[dict], start_ms: int):
    """Every metrics.csv value with its epoch as the step; timestamps follow the epoch times."""
    from mlflow.entities import Metric

    metrics, elapsed = [], 0.0
    for row in rows:
        elapsed += float(row.get("epoch_time_s") or 0.0)
        stamp = start_ms + int(elapsed * 1000)
        for key, value in row.items():
            if key != "epoch" and value is not None:
                metrics.append(Metric(key, float(value), stamp, int(row["epoch"])))
    return metrics


def _log(client, run_id: str, metrics=(), params: dict | None = None) -> None:
    from mlflow.entities import Param

    params_list = [Param(k, v) for k, v in (params or {}).items()]
    for i in range(0, len(params_list), 100):
        client.log_batch(run_id, params=params_list[i:i + 100])
    metrics = list(metrics)
    for i in range(0, len(metrics), _BATCH):
        client.log_batch(run_id, metrics=metrics[i:i + _BATCH])


# --- the runs ---------------------------------------------------------------------------------

def _export_record(client, exp_id: str, record: RunRecord, gallery: list[Path],
                   existing: dict, result: ExportResult) -> None:
    """A plan run: its parent run (the config its seeds share, its `gallery`), then its
    seeds."""
    trials = [t for t in record.trials if t.final is not None]
    result.unfinished += [trial_label(record.name, t.seed) for t in record.trials
                          if t.final is None]
    if not trials:
        return
    shared = _shared_params(trials)
    fingerprint = _fingerprint(gallery, shared)
    parent = _reuse(client, existing, record.name, fingerprint, result)
    if parent is None:
        parent = client.create_run(exp_id, start_time=min(_start_ms(t.config) for t in trials),
                                   run_name=record.name,
                                   tags={LABEL_TAG: record.name, KIND_TAG: "run",
                                         FINGERPRINT_TAG: fingerprint,
                                         "resnorm.seeds": ",".join(str(t.seed) for t in trials)})
        _log(client, parent.info.run_id, params=shared)
        for path in gallery:
            client.log_artifact(parent.info.run_id, str(path), StudyDir.GRADCAM)
        client.set_terminated(parent.info.run_id, "FINISHED")
        result.written.append(record.name)
    else:  # a seed may have finished since: the tag says which ones are below
        client.set_tag(parent.info.run_id, "resnorm.seeds", ",".join(str(t.seed) for t in trials))
    for trial in trials:
        _export_trial(client, exp_id, record, trial, parent.info.run_id, existing, result)


def _shared_params(trials: list[Trial]) -> dict[str, str]:
    """The params every seed of a run has with the same value (not seed, folder, times)."""
    flats = [flat_params(t.config) for t in trials]
    return {k: v for k, v in flats[0].items()
            if all(f.get(k) == v for f in flats[1:]) and k not in ("seed", "out")
            and not k.startswith("environment.")}


def _gallery_files(study: StudyDir, record: RunRecord) -> list[Path]:
    """The Grad-CAM files explaining this run: those of STUDY/gradcam (the best run's) or of
    STUDY/gradcam/runs/<name> (a plan asking for every variant's); none if neither is it."""
    for folder in (study.gradcam, study.gradcam_of(record.name)):
        g = StudyDir.gallery_json(folder)
        if g.is_file() and json.loads(g.read_text()).get("run") == record.name:
            return sorted(p for p in folder.iterdir() if p.is_file())
    return []


def _export_trial(client, exp_id: str, record: RunRecord, trial: Trial, parent_id: str,
                  existing: dict, result: ExportResult) -> None:
    label = trial_label(record.name, trial.seed)
    robustness = _robustness_record(record, trial)
    fingerprint = _fingerprint([trial.dir / f for f in ARTIFACT_FILES], [parent_id, robustness])
    if _reuse(client, existing, label, fingerprint, result) is not None:
        return
    start = _start_ms(trial.config)
    run = client.create_run(exp_id, start_time=start, run_name=label,
                            tags={LABEL_TAG: label, KIND_TAG: "seed", PARENT_TAG: parent_id,
                                  FINGERPRINT_TAG: fingerprint, "resnorm.status": trial.status,
                                  "resnorm.run_dir": str(trial.dir.resolve())})
    run_id = run.info.run_id
    from mlflow.entities import Metric

    finals = [Metric(k, v, start, 0) for k, v in {**final_metrics(trial.final),
                                                  **record_metrics(robustness)}.items()]
    _log(client, run_id, _epoch_metrics(trial.rows, start) + finals, flat_params(trial.config))
    for name in ARTIFACT_FILES:
        if (trial.dir / name).is_file():
            client.log_artifact(run_id, str(trial.dir / name))
    for split, ev in (trial.final.get("eval") or {}).items():
        if ev.get("confusion"):
            client.log_dict(run_id, {"classes": trial.final.get("classes"),
                                     "rows_true_columns_predicted": ev["confusion"]},
                            f"confusion/{split}.json")
    end = start + int(1000 * float(trial.final.get("wall_time_s") or 0.0))
    client.set_terminated(run_id, FINAL_STATUS.get(trial.status, "FINISHED"), end_time=end)
    result.written.append(label)


def _robustness_record(record: RunRecord, trial: Trial) -> dict | None:
    """The trial's robustness evaluation (STUDY/robustness/<run>/seed-<s>/), if any."""
    if record.folder is None or trial.seed is None:
        return None
    return read_record(trial_folder(record.folder.parent.parent, record.name, trial.seed))


def _export_study_files(client, exp_id: str, study: StudyDir, existing: dict,
                        result: ExportResult) -> None:
    """The report, summary.json and plan as artifacts of one run labelled 'study'."""
    files = [f for f in (study.report_html, study.report_md, study.summary, study.plan)
             if f.is_file()]
    assets = study.report_assets
    fingerprint = _fingerprint(files + ([assets] if assets.is_dir() else []))
    if not files or _reuse(client, existing, "study", fingerprint, result) is not None:
        return
    run = client.create_run(exp_id, run_name="study report",
                            tags={LABEL_TAG: "study", KIND_TAG: "study",
                                  FINGERPRINT_TAG: fingerprint})
    for path in files:
        client.log_artifact(run.info.run_id, str(path))
    if assets.is_dir():  # report.md's figures
        client.log_artifacts(run.info.run_id, str(assets), StudyDir.REPORT_ASSETS)
    client.set_terminated(run.info.run_id, "FINISHED")
    result.written.append("study")


# --- the tuning trials ------------------------------------------------------------------------

def _export_tuning(client, exp_id: str, study: Path, tuned: TuneResult, existing: dict,
                   result: ExportResult) -> None:
    """A tuned run's search: a parent run 'tuning/<run>' (its choice), a nested run per
    trial."""
    label = f"tuning/{tuned.run}"
    params = {"sampler": tuned.sampler, "score": tuned.score, "chosen_trial": str(tuned.chosen),
              "chosen_lr": str(tuned.chosen_lr), "chosen_weight_decay": str(tuned.chosen_wd)}
    parent = _reuse(client, existing, label, _fingerprint([], params), result)
    if parent is None:
        parent = client.create_run(exp_id, run_name=label, tags={
            LABEL_TAG: label, KIND_TAG: "tuning", FINGERPRINT_TAG: _fingerprint([], params)})
        _log(client, parent.info.run_id, params=params)
        client.set_terminated(parent.info.run_id, "FINISHED")
        result.written.append(label)
    for point in tuned.trials:
        _export_trial_point(client, exp_id, study, tuned, point, parent.info.run_id, existing,
                            result)


def _export_trial_point(client, exp_id: str, study: Path, tuned: TuneResult, p: TrialPoint,
                        parent_id: str, existing: dict, result: ExportResult) -> None:
    """One trial: the sampler's params and what it trained, its val score, its first seed's
    epochs."""
    from mlflow.entities import Metric

    label = f"tuning/{tuned.run}/trial-{p.number}"
    folder = StudyDir(study).dir / p.dir if p.dir else None
    files = [folder / f for f in ARTIFACT_FILES] if folder else []
    chosen = p.number is not None and p.number == tuned.chosen
    fingerprint = _fingerprint(files, [parent_id, chosen, p.status])
    if _reuse(client, existing, label, fingerprint, result) is not None:
        return
    run = RunDir(folder) if folder else None
    config = run.config() if run else {}
    start = _start_ms(config)
    params = {**{f"param.{k}": str(v) for k, v in p.params.items()}, "lr": str(p.lr),
              "weight_decay": str(p.weight_decay), "trial": str(p.number)}
    created = client.create_run(exp_id, start_time=start, run_name=label, tags={
        LABEL_TAG: label, KIND_TAG: "trial", PARENT_TAG: parent_id, FINGERPRINT_TAG: fingerprint,
        "resnorm.status": p.status, "resnorm.chosen": str(chosen).lower(),
        "resnorm.untuned": str(p.untuned).lower()})
    score = [Metric(tuned.score, p.score, start, 0)] if p.score is not None else []
    _log(client, created.info.run_id, _epoch_metrics(run.metrics() if run else [], start)
         + score, params)
    client.set_terminated(created.info.run_id, "FINISHED" if p.status == "ok" else "FAILED")
    result.written.append(label)
