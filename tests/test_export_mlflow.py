"""`resnorm export STUDY --mlflow URI`: what MLflow holds after an export equals the run
folders (params, every epoch's metrics with their step, final scores, artifacts), and a second
export neither duplicates nor loses anything."""
from __future__ import annotations

import json

import pytest

from resnorm import cli
from resnorm.export.mlflow import LABEL_TAG, export_study, final_metrics
from resnorm.metrics import read_metrics_csv
from resnorm.study import collect_runs

mlflow = pytest.importorskip("mlflow")
from test_report import fake_gradcam, fake_study  # noqa: E402  (hand-made, no training)


@pytest.fixture
def study(tmp_path):
    study = fake_study(tmp_path / "study", seeds=(0, 1))
    (study / "report.md").write_text("# report\n")
    fake_gradcam(study, "A")  # a gallery of run bn
    (study / "gradcam" / "runs" / "gn").mkdir(parents=True)  # another run's: not bn's
    (study / "gradcam" / "runs" / "gn" / "gradcam.json").write_text('{"run": "gn"}')
    # `ln` is in the plan and still training: a config and a last.pt, no final.json
    (study / "runs" / "ln" / "seed-0").mkdir(parents=True)
    (study / "runs" / "ln" / "seed-0" / "config.yaml").write_text("norm: ln\nseed: 0\n")
    (study / "runs" / "ln" / "seed-0" / "last.pt").write_bytes(b"")
    return study


def _runs(uri: str, experiment: str):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


def test_export_round_trips_and_is_idempotent(study, capsys):
    uri = f"sqlite:///{study / 'mlflow.db'}"
    assert cli.main(["export", str(study), "--mlflow", uri]) == 0
    out = capsys.readouterr().out
    assert "1 (run, seed) not finished yet, not exported: ln/seed-0" in out
    assert f"mlflow ui --backend-store-uri {uri}" in out

    runs = _runs(uri, "study")
    by_label = {r.data.tags[LABEL_TAG]: r for r in runs}
    trials = [(rec, t) for rec in collect_runs(study) for t in rec.trials if t.final is not None]
    assert len(trials) == 16
    # a parent per plan run, a nested run per (run, seed), one run with the report
    assert len(runs) == 8 + 16 + 1 and "ln/seed-0" not in by_label and "study" in by_label
    client = mlflow.tracking.MlflowClient(uri)
    for rec, t in trials:
        run = by_label[f"{rec.name}/seed-{t.seed}"]
        assert run.data.tags["mlflow.parentRunId"] == by_label[rec.name].info.run_id
        for key in ("norm", "n", "batch_size", "recipe", "seed", "environment.torch"):
            want = t.config["environment"]["torch"] if key == "environment.torch" else t.config[key]
            assert run.data.params[key] == (want if isinstance(want, str) else json.dumps(want))
        rows = read_metrics_csv(t.dir / "metrics.csv")
        for column in ("val_acc", "train_loss", "lr"):
            history = client.get_metric_history(run.info.run_id, column)
            assert [m.step for m in history] == [r["epoch"] for r in rows]
            assert [m.value for m in history] == pytest.approx([r[column] for r in rows])
        finals = final_metrics(t.final)
        assert finals["final_val_acc"] == t.final["eval"]["val"]["acc"]
        assert {k: run.data.metrics[k] for k in finals} == pytest.approx(finals)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"curves.png", "config.yaml", "metrics.csv", "final.json", "confusion"} <= artifacts
    assert by_label["bn"].data.params["norm"] == "bn" and "seed" not in by_label["bn"].data.params
    gallery = {a.path for a in client.list_artifacts(by_label["bn"].info.run_id, "gradcam")}
    assert gallery == {"gradcam/cls.png", "gradcam/gradcam.json"}
    assert {a.path for a in client.list_artifacts(by_label["gn"].info.run_id, "gradcam")} == {
        "gradcam/gradcam.json"}
    assert not client.list_artifacts(by_label["in"].info.run_id)
    assert {a.path for a in client.list_artifacts(by_label["study"].info.run_id)} == {
        "report.md", "plan.yaml"}

    # twice: the same runs, nothing written again
    again = export_study(study, uri)
    assert again.written == [] and len(again.unchanged) == 25
    assert sorted(r.info.run_id for r in _runs(uri, "study")) == sorted(r.info.run_id
                                                                        for r in runs)

    # a (run, seed) whose files changed is replaced, not duplicated; the others stay
    final = study / "runs" / "gn" / "seed-1" / "final.json"
    data = json.loads(final.read_text())
    data["eval"]["val"]["acc"] = 0.99
    final.write_text(json.dumps(data))
    third = export_study(study, uri)
    assert third.written == ["gn/seed-1"]
    after = {r.data.tags[LABEL_TAG]: r for r in _runs(uri, "study")}
    assert len(after) == 25 and after["gn/seed-1"].data.metrics["final_val_acc"] == 0.99
    assert after["bn/seed-0"].info.run_id == by_label["bn/seed-0"].info.run_id


def test_export_refuses_a_folder_that_is_no_study(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path)]) == 2
    assert "is not a study folder" in capsys.readouterr().err


def test_study_exports_at_the_end_with_mlflow(study, tmp_path):
    """`resnorm study --mlflow` asks the study's last step to export what the study left
    (the hand-made study stands for the training's result)."""
    import argparse

    from resnorm.pipeline import finish_study
    from resnorm.study import cli as study_cli

    parser = argparse.ArgumentParser()
    study_cli.configure_parser(parser)
    args = parser.parse_args(["--data", str(tmp_path), "--plan", "p.yaml", "--out", "s",
                              "--mlflow"])
    assert study_cli.study_options(args).mlflow == ""  # no URI: the study's own sqlite file
    said = []
    finish_study(study, None, None, [], [], gradcam=False, report=False, mlflow="",
                 say=said.append)
    assert "export: 25 MLflow run(s) written" in "\n".join(said)
    assert len(_runs(f"sqlite:///{study / 'mlflow.db'}", "study")) == 25


def test_without_mlflow_the_export_says_how_to_install_it(study, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)  # import fails as if missing
    assert cli.main(["export", str(study)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'resnorm[mlflow]'" in err
