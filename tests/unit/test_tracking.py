"""MLflow store selection: one run's store must not leak into the next run of the same process."""
from __future__ import annotations

import os

import mlflow

from dc3ray.pipeline.tracking import tracking_uri, use_experiment


def test_use_experiment_logs_to_its_store_and_leaves_the_environment_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    exp_id = use_experiment(a, "exp-a")
    # mlflow.set_tracking_uri writes the env var; left there, run b would log into a's store.
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "MLFLOW_EXPERIMENT_ID" not in os.environ
    with mlflow.start_run():
        mlflow.log_metric("m", 1.0)
    runs = mlflow.MlflowClient(tracking_uri(a)).search_runs([exp_id])
    assert len(runs) == 1
    assert tracking_uri(b) == f"sqlite:///{b.resolve()}/mlflow.db"


def test_a_user_tracking_uri_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////srv/mlflow.db")
    assert tracking_uri(tmp_path) == "sqlite:////srv/mlflow.db"


def test_artifacts_of_a_sqlite_store_sit_beside_it_never_in_the_working_directory(
        tmp_path, monkeypatch):
    from dc3ray.pipeline.tracking import log_run
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    art = tmp_path / "note.txt"
    art.write_text("x")
    # A sweep's condense run: its own out folder, the sweep's store (MLFLOW_TRACKING_URI).
    uri = f"sqlite:///{tmp_path / 'sweep'}/mlflow.db"
    (tmp_path / "sweep").mkdir()
    log_run(tmp_path / "run", "exp", "r", {"a": 1}, {"m": 1.0}, artifacts=[art], uri=uri)
    assert not (tmp_path / "cwd" / "mlruns").exists()
    assert list((tmp_path / "sweep" / "mlartifacts").rglob("note.txt"))


def test_the_condense_job_names_an_mlflow_store_only_when_it_records_a_run(tmp_path, monkeypatch):
    import importlib.util
    from pathlib import Path

    from dc3ray.config import CondenseConfig
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    jobs = Path(__file__).resolve().parents[2] / "jobs"
    monkeypatch.syspath_prepend(str(jobs))
    spec = importlib.util.spec_from_file_location("condense_job", jobs / "condense.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    for mode, named in (("required", True), ("optional", True), ("disabled", False)):
        cfg = CondenseConfig(out=str(tmp_path / "run"), tracking=mode)
        assert (job._outputs(cfg)["mlflow"] == tracking_uri(tmp_path / "run")) is named, mode
