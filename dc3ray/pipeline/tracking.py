"""The one MLflow layer: where runs go, experiment set-up, logging a run, environment scoping.

Store: MLFLOW_TRACKING_URI when set, else `sqlite:///<out>/mlflow.db` (MLflow 3.17 refuses a bare
file store); artifacts of our own store go to `<out>/mlartifacts`, not the working directory.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..errors import UserError

MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")

# What log_run does in this process: "required" (a failure is an error), "optional" (a failure
# is one warning line), "disabled" (nothing is recorded). Set for a run by tracking_mode().
_mode = {"mode": "required", "log": print}


def tracking_uri(out: str | Path) -> str:
    """MLFLOW_TRACKING_URI if set, else `sqlite:///<abs out>/mlflow.db`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(out).resolve()}/mlflow.db"


@contextmanager
def scoped_env(**values: str | None) -> Iterator[None]:
    """Set (or, with None, unset) environment variables inside the block; restore them after.

    mlflow.set_tracking_uri / set_experiment write MLFLOW_* into os.environ: left there, every
    later run of this process (another out folder, a sweep trial) would log into that store.
    """
    saved = {k: os.environ.get(k) for k in set(values) | set(MLFLOW_ENV)}
    try:
        _set_env(values)
        yield
    finally:
        _set_env(saved)


def _set_env(values: dict[str, str | None]) -> None:
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def ensure_experiment(uri: str, name: str, out: str | Path | None = None) -> str:
    """Id of experiment `name` in store `uri`, created when absent (a SQLite store's artifacts
    go to mlartifacts/ beside the database file)."""
    import mlflow
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    # A local SQLite store keeps its artifacts beside it (MLflow's default is ./mlruns in the
    # working directory); a tracking server decides for itself.
    loc = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri() \
        if uri.startswith("sqlite:///") else None
    return client.create_experiment(name, artifact_location=loc)


class TrackingError(UserError):
    """The MLflow store cannot be opened or written."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}"


def check_store(out: str | Path, experiment: str) -> str:
    """Open the store tracking_uri(out) and get or create `experiment`, as the run's end will:
    returns the uri, or raises TrackingError naming the store (a corrupt mlflow.db, a folder that
    cannot be written, an unreachable server) before any work starts."""
    uri = tracking_uri(out)
    try:
        with scoped_env():
            ensure_experiment(uri, experiment, out)
    except Exception as e:
        ours = uri == f"sqlite:///{Path(out).resolve()}/mlflow.db"
        fix = f"move {Path(out).resolve() / 'mlflow.db'} aside (keep it: it may hold this " \
            "folder's earlier runs)" \
            if ours else "fix MLFLOW_TRACKING_URI (or unset it to use <out>/mlflow.db)"
        raise TrackingError(f"MLflow store {uri} cannot be used ({_first_line(e)})",
                            hint=f"{fix}, or set tracking=optional (go on without it after a "
                                 "warning) or tracking=disabled") from None
    return uri


def start_tracking(mode: str, out: str | Path, experiment: str,
                   log: Callable[[str], None] = print) -> str:
    """The tracking mode a run goes on with: "disabled" stays off; otherwise the store is checked
    (check_store) and a failure raises ("required") or becomes "disabled" after one warning line
    ("optional")."""
    if mode == "disabled":
        return "disabled"
    try:
        check_store(out, experiment)
    except TrackingError as e:
        if mode == "required":
            raise
        log(f"[mlflow] warning: {e}; going on without tracking (tracking=optional)")
        return "disabled"
    return mode


@contextmanager
def tracking_mode(mode: str, log: Callable[[str], None] = print) -> Iterator[None]:
    """Inside the block, log_run of this process follows `mode` (see _mode)."""
    saved = dict(_mode)
    _mode.update(mode=mode, log=log)
    try:
        yield
    finally:
        _mode.update(saved)


def log_run(out: str | Path, experiment: str, run_name: str, params: dict, metrics: dict, *,
            series: dict[str, list[tuple[int, float]]] | None = None,
            artifacts: list[Path] | tuple = (), uri: str | None = None) -> dict:
    """One finished MLflow run: params (str, cut to 6000 chars), metrics (None skipped), step
    series, artifact files. `uri` defaults to tracking_uri(out). Returns {tracking_uri,
    experiment, run_id}; run_id is None when tracking is off, or optional and the store failed
    (one warning line); with tracking required a failing store raises TrackingError."""
    uri = uri or tracking_uri(out)
    if _mode["mode"] == "disabled":
        return {"tracking_uri": None, "experiment": experiment, "run_id": None}
    try:
        return _log_run(uri, out, experiment, run_name, params, metrics, series, artifacts)
    except _store_errors() as e:
        if _mode["mode"] == "optional":
            _mode["log"](f"[mlflow] warning: run {run_name} not recorded in {uri} "
                         f"({_first_line(e)}); going on (tracking=optional)")
            return {"tracking_uri": None, "experiment": experiment, "run_id": None}
        raise TrackingError(f"MLflow store {uri} failed recording run {run_name} "
                            f"({_first_line(e)}); the finished work on disk is kept",
                            hint="fix the store and rerun with the same out (finished stages "
                                 "and seeds are reused); condense also takes tracking=optional "
                                 "or disabled") from e


def _store_errors() -> tuple[type[BaseException], ...]:
    """What a failing store raises (other exceptions are bugs and keep their traceback)."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError
    return (OSError, MlflowException, SQLAlchemyError)


def _log_run(uri: str, out, experiment: str, run_name: str, params: dict, metrics: dict,
             series, artifacts) -> dict:
    import mlflow
    from mlflow.entities import Metric, Param

    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.create_run(ensure_experiment(uri, experiment, out), run_name=run_name)
    now = int(time.time() * 1000)
    ms = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None]
    for name, points in (series or {}).items():
        ms += [Metric(name, float(v), now, int(step)) for step, v in points]
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    for i in range(0, len(ms), 1000):  # MLflow caps a batch at 1000 metrics
        client.log_batch(run.info.run_id, metrics=ms[i:i + 1000])
    for a in artifacts:
        if Path(a).is_file():
            client.log_artifact(run.info.run_id, str(a))
    client.set_terminated(run.info.run_id)
    return {"tracking_uri": uri, "experiment": experiment, "run_id": run.info.run_id}


def use_experiment(out: str | Path, name: str) -> str:
    """Point this process's MLflow at the run's store and select (or create) experiment `name`,
    leaving os.environ as it was."""
    import mlflow
    with scoped_env():
        uri = tracking_uri(out)
        mlflow.set_tracking_uri(uri)
        exp_id = ensure_experiment(uri, name, out)
        mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def condense_metrics(manifest: dict) -> dict[str, float]:
    """Stage times, throughput, counts, color metrics and accuracy of a condense manifest."""
    metrics = {}
    for stage, info in manifest["stages"].items():
        if "seconds" in info:
            metrics[f"time.{stage}_s"] = float(info["seconds"])
        if info.get("rows_per_s"):
            metrics[f"throughput.{stage}_rows_per_s"] = float(info["rows_per_s"])
        for k in ("acceptance_rate", "mean_strength", "mean_tries"):  # compensation's records
            if isinstance(info.get(k), (int, float)) and not isinstance(info[k], bool):
                metrics[f"{stage}.{k}"] = float(info[k])
    metrics["count.images"] = float(len(manifest["images"]))
    for row in manifest.get("color") or []:
        for k, v in row.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                metrics[f"color.{row.get('set', 'set')}.{k}"] = float(v)
    for cond, ev in (manifest.get("eval") or {}).items():
        for k, v in ev.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                metrics[f"acc.{cond}.{k}"] = float(v)
    metrics["time.total_s"] = float(manifest["total_seconds"])
    return metrics


CONDENSE_ARTIFACTS = ("manifest.json", "samples.png", "samples_compare.png", "colors.png",
                      "colors.json", "eval.json", "accuracy.png")


def tracked_run(manifest: dict, out: str | Path, log: Callable[[str], None] = print) -> str:
    """One MLflow run of a condense: params = resolved config, metrics, artifacts (PNGs, JSON).
    Returns its id; None when tracking is off (or optional and the store failed)."""
    out = Path(out)
    if _mode["mode"] == "disabled":
        return None
    res = log_run(out, f"dc3ray-{manifest['config']['name']}",
                  f"condense-{manifest['config']['name']}",
                  params=flatten(manifest["config"]), metrics=condense_metrics(manifest),
                  artifacts=[out / n for n in CONDENSE_ARTIFACTS])
    if res["run_id"] is not None:
        log(f"[mlflow] run {res['run_id']} in {res['tracking_uri']}")
    return res["run_id"]
