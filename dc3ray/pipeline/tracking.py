"""MLflow: one run per condense (SQLite store under the output root unless MLFLOW_TRACKING_URI)."""
from __future__ import annotations

import os
from pathlib import Path


_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")


def tracking_uri(out: str | Path) -> str:
    """MLFLOW_TRACKING_URI if set, else `sqlite:///<abs out>/mlflow.db` (MLflow 3.17 refuses bare files)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(out).resolve()}/mlflow.db"


def use_experiment(out: str | Path, name: str) -> str:
    """Point MLflow at the run's store and select (or create) experiment `name`.

    Artifacts go under `<out>/mlartifacts` rather than the current directory.
    """
    import mlflow
    # mlflow.set_tracking_uri / set_experiment also write MLFLOW_TRACKING_URI / _EXPERIMENT_ID into
    # os.environ, which tracking_uri() reads: left there, every later run of this process (another
    # out folder, a sweep trial) would log into this store. Keep the process globals, restore env.
    saved = {k: os.environ.get(k) for k in _MLFLOW_ENV}
    try:
        mlflow.set_tracking_uri(tracking_uri(out))
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            art = (Path(out).resolve() / "mlartifacts").as_uri()
            exp_id = mlflow.create_experiment(name, artifact_location=art)
        else:
            exp_id = exp.experiment_id
        mlflow.set_experiment(experiment_id=exp_id)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return exp_id


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def tracked_run(cfg, manifest: dict, out: str | Path, log=print) -> str:
    """Log params (resolved config), metrics (stage times, counts, color, accuracy), artifacts."""
    import mlflow
    out = Path(out)
    use_experiment(out, f"dc3ray-{manifest['config']['name']}")
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
            if v is not None:
                metrics[f"acc.{cond}.{k}"] = float(v)
    metrics["time.total_s"] = float(manifest["total_seconds"])
    with mlflow.start_run(run_name=f"condense-{manifest['config']['name']}") as run:
        params = {k: str(v)[:6000] for k, v in flatten(manifest["config"]).items()}
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        for name in ("manifest.json", "samples.png", "colors.png", "colors.json", "eval.json"):
            if (out / name).is_file():
                mlflow.log_artifact(str(out / name))
        run_id = run.info.run_id
    log(f"[mlflow] run {run_id} in {tracking_uri(out)}")
    return run_id
