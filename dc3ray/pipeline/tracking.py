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

MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")


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


def ensure_experiment(uri: str, name: str, out: str | Path) -> str:
    """Id of experiment `name` in store `uri`, created when absent (artifacts under
    <out>/mlartifacts when `uri` is our own store of `out`)."""
    import mlflow
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    ours = uri == f"sqlite:///{Path(out).resolve()}/mlflow.db"
    loc = (Path(out).resolve() / "mlartifacts").as_uri() if ours else None
    return client.create_experiment(name, artifact_location=loc)


def log_run(out: str | Path, experiment: str, run_name: str, params: dict, metrics: dict, *,
            series: dict[str, list[tuple[int, float]]] | None = None,
            artifacts: list[Path] | tuple = (), uri: str | None = None) -> dict:
    """One finished MLflow run: params (str, cut to 6000 chars), metrics (None skipped), step
    series, artifact files. `uri` defaults to tracking_uri(out). Returns {tracking_uri,
    experiment, run_id}."""
    import mlflow
    from mlflow.entities import Metric, Param

    uri = uri or tracking_uri(out)
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
    """One MLflow run of a condense: params = resolved config, metrics, artifacts (PNGs, JSON)."""
    out = Path(out)
    res = log_run(out, f"dc3ray-{manifest['config']['name']}",
                  f"condense-{manifest['config']['name']}",
                  params=flatten(manifest["config"]), metrics=condense_metrics(manifest),
                  artifacts=[out / n for n in CONDENSE_ARTIFACTS])
    log(f"[mlflow] run {res['run_id']} in {res['tracking_uri']}")
    return res["run_id"]
