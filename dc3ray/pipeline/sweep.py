"""`dc3ray sweep`: Ray Tune over condensation and evaluation settings, one MLflow run per trial.

The driver condenses each distinct condensation point of the grid once (condense() with its
stage cache, no evaluation) BEFORE Tune starts, so data stages never wait on trial
reservations; then one Tune trial per grid point trains and scores students on its cached set
through evaluate_condensed (a Tune function that builds TorchTrainers: the Ray 2.60 way). An
interrupted sweep resumes with Tuner.restore: finished trials are not rerun (one that ended
just before the kill, before Tune saved its state, reports its saved eval.json), and MLflow is
left with one run per trial.

Layout of `out`:
  sweep.json           the resolved sweep and its identity (a different sweep here is refused)
  condense/            condense()'s work folder: one stage cache shared by every point
  sets/<id>/           one condensed set per condensation point: condensed/, set.json
  tune/<name>/         the Tune experiment (restorable)
  trials/<trial_id>/   evaluate_condensed outputs per trial (eval.json with per-seed curves)
  mlflow.db            experiment `dc3ray-sweep-<name>`: one run per trial (params = grid point,
                       metrics = final/best top-1); `...-evals`: per-seed curves; `dc3ray-<base
                       name>`: one run per condense. MLFLOW_TRACKING_URI replaces this store.
  results.csv, results.png   trials ranked by the sweep's metric

Every path a trial reads must be on storage all nodes see (as for `dc3ray condense`).

A GPU machine without Ray can train the students instead (bundle.py): `export` condenses the
sets and writes each trial's seeds to a bundle for benchmarks/gpu_student.py; a rerun with
`imported` (its gpu_seeds.json) runs the same Tune trials, which take those seeds instead of
training them, so MLflow and the ranked table look as if they had trained here, with the device
named.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from ..config import (
    CondenseConfig,
    SweepCommand,
    SweepConfig,
    condensation_id,
    deep_merge,
    from_dict,
    load_sweep_config,
    nest_dotted,
    sweep_from_dict,
    to_dict,
)
from ..core.atomic import atomic_dir, write_json
from ..errors import ConfigError
from ..logs import log_file, run_logs
from .outputs import claim_output, output_lock
from .tracking import check_store, ensure_experiment, scoped_env

SWEEP_FILE = "sweep.json"
SET_FILE = "set.json"
RESULTS_CSV = "results.csv"
RESULTS_PNG = "results.png"
# Per-trial numbers reported to Tune (and logged to MLflow by the callback).
METRIC_COLUMNS = ("final_top1", "final_std", "best_top1", "best_std", "num_images", "eval_s")
# What each condensed set looks like, beside how well it trains (set.json "stats", reported with
# the trial's metrics): hue entropy of the condensed images (bits), the teacher's top-1 and mean
# p(true class) on them, and the fidelity gate's acceptance rate (1.0 without a gate).
SET_COLUMNS = ("hue_entropy", "teacher_top1", "teacher_p_true", "acceptance_rate")
# A trial only waits on its TorchTrainer, which reserves its own workers; it holds no CPU, so on a
# 2-core machine the student gets both cores. Tune refuses an all-zero request: a token of memory.
TRIAL_RESOURCES = {"CPU": 0, "memory": 1 << 20}


def _trial_resources(base_workers: int, cpu_budget: float) -> Callable[[dict], Any]:
    """Tune resources per grid point: a trial whose students train inside it (eval.workers=0)
    holds their CPUs; one that builds a TorchTrainer holds none."""
    def resources(point: dict):
        from ray.tune import PlacementGroupFactory
        local = point.get("eval.workers", base_workers) == 0
        return PlacementGroupFactory([{"CPU": cpu_budget} if local else TRIAL_RESOURCES])
    return resources


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """Read a sweep YAML and apply `key=value` overrides (see config.sweep_from_dict)."""
    return load_sweep_config(path, overrides)


def experiment_name(sweep: SweepConfig) -> str:
    return f"dc3ray-sweep-{sweep.name}"


def _as_sweep(sweep_cfg: SweepConfig | dict | str | Path) -> SweepConfig:
    if isinstance(sweep_cfg, SweepConfig):
        return sweep_cfg
    if isinstance(sweep_cfg, dict):
        return sweep_from_dict(sweep_cfg)
    return load_sweep(sweep_cfg)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------

def run_sweep(sweep_cfg: SweepConfig | dict | str | Path, out_dir: str | Path | None = None,
              log: Callable[[str], None] = print, *, imported: str | Path | None = None,
              export: str | Path | None = None, export_seeds: int | None = None,
              export_hard_labels: bool = False) -> dict:
    """Condense each distinct condensation point once, then one Tune trial per grid point.

    `sweep_cfg`: a SweepConfig, its YAML form as a dict, or a sweep YAML path. `out_dir`
    overrides the sweep's `out`. A rerun on the same `out` reuses the condensed sets and restores
    the Tune experiment (unfinished and errored trials rerun, finished ones do not).

    Returns {name, out, experiment, tracking_uri, metric, restored, sets: {id: set info},
    rows: ranked trial rows (rank, trial_id, status, grid keys, final/best top-1 in % and their
    std over seeds, ...), failed: trial ids that errored, csv, png}.

    `imported`: a gpu_seeds.json (bundle.py); each trial takes its seeds from there when they
    were trained on its very inputs. `export`: condense the sets, then write every trial's seeds
    (`export_seeds` of them, default eval.seeds; with `export_hard_labels` each KD trial's
    hard-label twin too) to that bundle instead of running Tune; returns {bundle, jobs}.
    """
    sweep = _as_sweep(sweep_cfg)
    out = Path(out_dir if out_dir is not None else sweep.out).resolve()
    sweep = dataclasses.replace(sweep, out=str(out))
    out.mkdir(parents=True, exist_ok=True)
    with output_lock(out, "sweep", log):
        # A folder that is not this sweep's is refused before anything is written to it.
        claim_output(out, SWEEP_FILE, to_dict(sweep), what="sweep",
                     ignore=("out", "max_concurrent_trials", "base.out", "base.num_cpus",
                             "base.tracking"))
        with run_logs(log_file(out)):
            # Trials are ranked and resumed through the store: a sweep always needs it, so a
            # broken one stops the sweep here, before any condense or trial runs.
            check_store(out, experiment_name(sweep))
            if export:
                return _export(sweep, out, Path(export), export_seeds, export_hard_labels, log)
            return _run_sweep(sweep, out, log, imported)


def _run_sweep(sweep: SweepConfig, out: Path, log: Callable[[str], None],
               imported: str | Path | None = None) -> dict:
    from .resources import init_ray
    from .tracking import tracking_uri

    init_ray(num_cpus=sweep.base.num_cpus)

    # One MLflow store for the whole sweep (condense runs, trial runs, per-seed eval runs): the
    # user's MLFLOW_TRACKING_URI, else <out>/mlflow.db. condense() and evaluate_condensed read it
    # from the environment; mlflow.set_experiment() also writes MLFLOW_EXPERIMENT_ID there, which
    # the Tune callback would pick over our experiment name: both are restored afterwards.
    uri = tracking_uri(out)
    experiment = experiment_name(sweep)
    with scoped_env(MLFLOW_TRACKING_URI=uri):
        ensure_experiment(uri, experiment, out)
        ensure_experiment(uri, experiment + "-evals", out)
        experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
        sets = condense_sets(sweep, out, log)
        if imported:
            _say_import_coverage(sweep, sets, imported, log)
        with scoped_env(MLFLOW_EXPERIMENT_ID=experiment_id):
            return _tune(sweep, out, sets, uri, experiment, log, imported)


def _say_import_coverage(sweep: SweepConfig, sets: dict, imported: str | Path,
                         log: Callable[[str], None]) -> None:
    """Before Tune starts: how many trials find every seed in `imported` (the others train here,
    which on a laptop can take hours: say so up front)."""
    from .bundle import imported_seeds
    from .evaluate import evaluation_plan
    missing = 0
    for point in sweep.points():
        cfg = sweep.config_for(point)
        info = sets[condensation_id(cfg)]
        plan = evaluation_plan(cfg.eval, info["condensed"], info["val"], info["teacher"],
                               info["ipc"])
        have = imported_seeds(imported, plan["inputs_key"], log=lambda *_: None)
        missing += any(k not in have for k in range(cfg.eval.seeds))
    n = len(sweep.points())
    log(f"[sweep] --import-seeds {imported}: {n - missing} of {n} trials find all their seeds "
        f"there" + (f"; the other {missing} train here" if missing else ""))


def trial_cell(index: int, hard_twin: bool = False) -> str:
    """A trial's name in an export bundle: its place in grid order."""
    return f"t{index:03d}" + ("-hard" if hard_twin else "")


def _export(sweep: SweepConfig, out: Path, bundle: Path, seeds: int | None, hard_twins: bool,
            log: Callable[[str], None]) -> dict:
    """Condense the sets (Ray Data, here), then one bundle job per trial instead of Tune."""
    from .evaluate import export_evaluation
    from .resources import init_ray
    from .tracking import tracking_uri

    init_ray(num_cpus=sweep.base.num_cpus)
    with scoped_env(MLFLOW_TRACKING_URI=tracking_uri(out)):
        sets = condense_sets(sweep, out, log)
    jobs = []
    for i, point in enumerate(sweep.points()):
        cfg = sweep.config_for(point)
        info = sets[condensation_id(cfg)]
        variants = [(cfg.eval, False)]
        if hard_twins and not cfg.eval.hard_labels:
            variants.append((dataclasses.replace(cfg.eval, hard_labels=True), True))
        for ecfg, twin in variants:
            ecfg = dataclasses.replace(ecfg, seeds=seeds or ecfg.seeds)
            jobs.append(export_evaluation(
                ecfg, info["condensed"], info["val"], info["teacher"], bundle,
                trial_cell(i, twin), ipc=info["ipc"], set_name=info["id"], log=log, point=point,
                set_id=info["id"], stats=info.get("stats"), sweep=sweep.name,
                metric=sweep.metric))
    log(f"[sweep] {len(jobs)} jobs ({sum(len(j['seeds']) for j in jobs)} seeds) in {bundle}; on "
        f"the GPU machine: python benchmarks/gpu_student.py {bundle}, then rerun this sweep with "
        "--import-seeds <its gpu_seeds.json>")
    return {"bundle": str(bundle), "jobs": jobs}


def _tune(sweep: SweepConfig, out: Path, sets: dict, uri: str, experiment: str,
          log: Callable[[str], None], imported: str | Path | None = None) -> dict:
    """Run (or restore) the Tune experiment over the whole grid; rank, print and save results."""
    from ray import tune

    budget = _cpu_budget(sweep.max_concurrent_trials)
    trainable = tune.with_resources(
        tune.with_parameters(evaluate_trial, base=to_dict(sweep.base), sets=sets,
                             cpu_budget=budget, trials_dir=str(out / "trials"),
                             experiment=experiment + "-evals", trial_env=_trial_env(),
                             imported=None if imported is None else str(Path(imported).resolve())),
        _trial_resources(sweep.base.eval.workers, budget))
    exp_dir = out / "tune" / sweep.name
    restored = tune.Tuner.can_restore(str(exp_dir))
    if restored:
        log(f"[sweep] resuming {exp_dir} (finished trials are kept)")
        _close_orphan_runs(uri, experiment, log)
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_errored=True)
    else:
        from ray.air.integrations.mlflow import MLflowLoggerCallback
        tuner = tune.Tuner(
            trainable,
            param_space={k: tune.grid_search(v) for k, v in sweep.grid.items()},
            tune_config=tune.TuneConfig(metric=sweep.metric, mode="max",
                                        max_concurrent_trials=sweep.max_concurrent_trials,
                                        trial_dirname_creator=_trial_dirname,
                                        # one process serves trial after trial: no re-imports
                                        reuse_actors=True),
            run_config=tune.RunConfig(
                name=sweep.name, storage_path=str(out / "tune"), verbose=1,
                callbacks=[MLflowLoggerCallback(
                    tracking_uri=uri, experiment_name=experiment,
                    tags={"dc3ray.sweep": sweep.name, "dc3ray.metric": sweep.metric})]))
    n = len(sweep.points())
    log(f"[sweep] {n} trials ({len(sets)} condensed sets x {n // max(len(sets), 1)} eval "
        f"settings), {sweep.max_concurrent_trials} at a time; MLflow {uri} ({experiment})")
    grid = tuner.fit()
    if restored:
        _drop_duplicate_runs(uri, experiment, log)

    rows = rank_rows([_row(r, list(sweep.grid)) for r in grid], sweep.metric)
    csv_path, png_path = write_results(rows, list(sweep.grid), sweep.metric, out,
                                       title=f"sweep {sweep.name}")
    log(format_table(rows, list(sweep.grid), sweep.metric))
    log(f"[sweep] ranked table -> {csv_path}, {png_path}")
    failed = [r["trial_id"] for r in rows if r["status"] != "TERMINATED"]
    if failed:
        log(f"[sweep] {len(failed)} trial(s) did not finish: {', '.join(failed)}; errors under "
            f"{exp_dir}; rerun the same command to retry them (the sweep resumes)")
    return {"name": sweep.name, "out": str(out), "experiment": experiment, "tracking_uri": uri,
            "metric": sweep.metric, "restored": restored, "sets": sets, "rows": rows,
            "failed": failed, "csv": str(csv_path), "png": str(png_path)}


def condense_sets(sweep: SweepConfig, out: Path, log: Callable[[str], None] = print
                  ) -> dict[str, dict]:
    """Condense each distinct condensation point once; {set id: set info} (see set.json).

    The condensed set of a point is kept under out/sets/<condensation_id>/condensed; a set whose
    set.json exists is reused without calling condense. All points share one condense work
    folder, so ingest, teacher and features run once for the whole sweep.
    """
    from .condense import condense

    points = sweep.points(sweep.condensation_keys)
    # KD trials need a teacher even when no condensation stage does.
    need_teacher = any(not sweep.config_for(p).eval.hard_labels for p in sweep.points())
    sets: dict[str, dict] = {}
    for i, point in enumerate(points, 1):
        cfg = dataclasses.replace(sweep.config_for(point), out=str(out / "condense"),
                                  evaluate=False)
        set_id = condensation_id(cfg)
        d = out / "sets" / set_id
        if (d / SET_FILE).is_file():
            info = json.loads((d / SET_FILE).read_text())
            log(f"[sweep] set {i}/{len(points)} {point or '(base)'}: cached (sets/{set_id})")
            sets[set_id] = {**info, "cached": True}
            continue
        log(f"[sweep] set {i}/{len(points)} {point or '(base)'}: condensing -> sets/{set_id}")
        manifest = condense(cfg, log=log, need_teacher=need_teacher)
        work = Path(cfg.out)
        with atomic_dir(d, overwrite=True) as tmp:
            shutil.copytree(work / "condensed", tmp / "condensed")
            for name in ("manifest.json", "samples.png"):
                if (work / name).is_file():
                    shutil.copy2(work / name, tmp / name)
            info = {
                "id": set_id, "point": point,
                "condensed": str(d / "condensed"),
                "val": str(Path(manifest["shards"]["val"]).resolve()),
                "teacher": None if manifest["teacher"] is None
                else str(Path(manifest["teacher"]).resolve()),
                "ipc": cfg.select.ipc, "num_images": len(manifest["images"]),
                "condense_s": manifest["total_seconds"],
                "stats": set_stats(manifest, tmp / "condensed"),
            }
            write_json(tmp / SET_FILE, info)
        sets[set_id] = {**info, "cached": False}
    return sets


def set_stats(manifest: dict, condensed: Path) -> dict:
    """SET_COLUMNS of one condensed set, from its condense manifest (colours, compensation
    stage) and, with a teacher, the teacher's reading of its images."""
    from .evaluate import teacher_reading
    colors = {c.get("name"): c for c in manifest.get("color") or []}
    comp = (manifest.get("stages") or {}).get("compensate") or {}
    stats = {"hue_entropy": (colors.get("condensed") or {}).get("hue_entropy"),
             "acceptance_rate": comp.get("acceptance_rate")}
    if manifest.get("teacher"):
        stats.update(teacher_reading(manifest["teacher"], condensed))
    return {k: stats.get(k) for k in SET_COLUMNS}


def _close_orphan_runs(uri: str, experiment: str, log: Callable[[str], None]) -> None:
    """Mark runs left RUNNING by an interrupted sweep as KILLED: their trials rerun as new runs."""
    import mlflow
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return
    for run in client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'"):
        client.set_terminated(run.info.run_id, status="KILLED")
        log(f"[sweep] MLflow run {run.info.run_id} ({run.data.tags.get('trial_name')}) was left "
            "running by an interrupted sweep: marked KILLED")


def _drop_duplicate_runs(uri: str, experiment: str, log: Callable[[str], None]) -> None:
    """Keep one MLflow run per trial after a resume: the newest finished one (others deleted).

    A trial that was running (or had just ended) when the sweep stopped gets a new run when it
    reruns; MLflow's delete is a soft delete, so the older runs stay recoverable.
    """
    import mlflow
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    by_trial: dict[str, list] = {}
    for run in client.search_runs([exp.experiment_id], max_results=50000):
        by_trial.setdefault(run.data.tags.get("trial_name", run.info.run_id), []).append(run)
    for trial, runs in by_trial.items():
        runs.sort(key=lambda r: (r.info.status == "FINISHED", r.info.start_time or 0))
        for old in runs[:-1]:
            client.delete_run(old.info.run_id)
            log(f"[sweep] MLflow run {old.info.run_id} of {trial} superseded by "
                f"{runs[-1].info.run_id} after the resume: deleted")


def _cpu_budget(concurrent: int) -> float:
    """CPUs each concurrent trial's students may reserve (a local cluster: at most the cores)."""
    import ray
    total = ray.cluster_resources().get("CPU", 1)
    if not os.environ.get("RAY_ADDRESS"):
        total = min(total, os.cpu_count() or 1)  # logical CPUs beyond the cores add no threads
    # A worker cannot span nodes: never more than the largest node has.
    per_node = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=1)
    return max(1.0, min(total / concurrent, per_node))


def _trial_env() -> dict[str, str]:
    # Ray Train forwards its RAY_TRAIN_* settings from the process that builds the TorchTrainer:
    # here the trial actor, which does not see variables the driver set after Ray started.
    return {k: v for k, v in os.environ.items()
            if k.startswith("RAY_TRAIN_") or k == "MLFLOW_TRACKING_URI"}


def _trial_dirname(trial) -> str:
    # Default names spell out every value (prompt lists included) and grow past path limits.
    return f"trial_{trial.trial_id}"


# --------------------------------------------------------------------------------------------
# Trial (runs in a Tune actor)
# --------------------------------------------------------------------------------------------

def evaluate_trial(config: dict, *, base: dict, sets: dict, cpu_budget: float, trials_dir: str,
                   experiment: str, trial_env: dict, imported: str | None = None) -> None:
    """Tune function: score the condensed set of this grid point with its eval settings.

    `config` is the grid point ({dotted key: value}); `base` the base CondenseConfig as a dict;
    `sets` the driver's {set id: set info}. Builds TorchTrainers through evaluate_condensed
    (one per seed; its per-seed curves go to MLflow `experiment` in the store named by
    trial_env's MLFLOW_TRACKING_URI) and reports final/best top-1 (%, mean and std over seeds).
    """
    from ray import tune

    from .evaluate import evaluate_condensed
    from .raytrain import even_cpu_share

    cfg = from_dict(CondenseConfig, deep_merge(base, nest_dotted(config)))
    set_id = condensation_id(cfg)
    if set_id not in sets:
        raise KeyError(f"grid point {config} has no condensed set ({set_id}); rerun the sweep so "
                       "the driver condenses it")
    info = sets[set_id]
    os.environ.update(trial_env)
    trial_dir = Path(trials_dir) / tune.get_context().get_trial_id()
    summary = _finished_eval(trial_dir, cfg, info)
    if summary is None:
        cpus = even_cpu_share(cpu_budget, cfg.eval.workers) if cfg.eval.workers \
            else None  # eval.workers=0: the students train in this trial, on its CPUs
        summary = evaluate_condensed(cfg.eval, info["condensed"], info["val"], info["teacher"],
                                     trial_dir, ipc=info["ipc"], cpus_per_worker=cpus,
                                     experiment=experiment, imported=imported)
    tune.report({"final_top1": summary["final_mean"], "final_std": summary["final_std"],
                 "best_top1": summary["best_mean"], "best_std": summary["best_std"],
                 "num_images": summary["num_images"], "eval_s": summary["wall_s"],
                 "set_id": set_id, "device": _devices(summary["seeds"]),
                 **{k: v for k, v in (info.get("stats") or {}).items() if v is not None}})


def _devices(seeds: list[dict]) -> str:
    """Where a trial's seeds trained: 'here', or the device an imported seed names."""
    return "; ".join(sorted({s.get("device") or "here" for s in seeds}))


def _finished_eval(trial_dir: Path, cfg: CondenseConfig, info: dict) -> dict | None:
    """The eval.json this trial already wrote for the same set and settings, else None.

    Tune saves its experiment state every few seconds: a sweep killed just after a trial ended
    reruns that trial on resume, and this makes the rerun report without retraining.
    """
    from .evaluate import EVAL_JSON
    f = trial_dir / EVAL_JSON
    if not f.is_file():
        return None
    done = json.loads(f.read_text())
    same = done.get("config") == to_dict(cfg.eval) and \
        done.get("condensed_path") == str(Path(info["condensed"]).resolve())
    if same:
        print(f"[sweep] {trial_dir.name}: evaluation already finished ({f}), reporting it")
    return done if same else None


# --------------------------------------------------------------------------------------------
# Results: ranked rows, table, CSV, PNG
# --------------------------------------------------------------------------------------------

def _row(result, keys: list[str]) -> dict:
    """One table row of a Tune Result: status, the grid point, the reported metrics."""
    config = result.config
    if not config and result.path and (Path(result.path) / "params.json").is_file():
        config = json.loads((Path(result.path) / "params.json").read_text())  # errored early
    config = config or {}
    m = result.metrics or {}
    row: dict[str, Any] = {"trial_id": m.get("trial_id") or
                           Path(result.path or "?").name.removeprefix("trial_"),
                           "status": "ERROR" if result.error else
                           ("TERMINATED" if "final_top1" in m else "UNFINISHED")}
    row.update({k: config.get(k) for k in keys})
    row.update({c: m.get(c) for c in METRIC_COLUMNS + SET_COLUMNS})
    row["set_id"] = m.get("set_id")
    row["device"] = m.get("device")
    row["error"] = None if result.error is None else str(result.error).splitlines()[0][:200]
    return row


def rank_rows(rows: list[dict], metric: str) -> list[dict]:
    """Rows sorted best first by `metric` (higher is better; trials without it last), ranked 1..n."""
    def key(r):
        v = r.get(metric)
        ok = isinstance(v, (int, float)) and not math.isnan(v)
        return (not ok, -(v if ok else 0.0), str(r.get("trial_id")))
    ranked = sorted(rows, key=key)
    return [{"rank": i, **r} for i, r in enumerate(ranked, 1)]


def _fmt(v: Any) -> str:
    """A grid value as text: lists (prompt words) joined by '|', floats as written (0.001)."""
    if isinstance(v, (list, tuple)):
        return "|".join(map(str, v))
    return "-" if v is None else str(v)


def _acc(r: dict, col: str) -> str:
    v = r.get(col)
    return "-" if v is None else f"{v:.2f} ±{(r.get(col.replace('top1', 'std')) or 0):.2f}"


def format_table(rows: list[dict], keys: list[str], metric: str) -> str:
    """Fixed-width text table of ranked rows: rank, grid keys, final/best top-1 (± std), the
    set's SET_COLUMNS where known."""
    stats = [c for c in SET_COLUMNS if any(r.get(c) is not None for r in rows)]
    cols = ["rank", *keys, "final_top1", "best_top1", *stats, "status"]
    cells = [[_acc(r, c) if c in ("final_top1", "best_top1") else
              f"{r[c]:.3f}" if c in stats and isinstance(r.get(c), float) else _fmt(r.get(c))
              for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c)
              for i, c in enumerate(cols)]
    head = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    lines = [f"ranked by {metric} (top-1 %, mean ± std over seeds)", head, "-" * len(head)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def write_results(rows: list[dict], keys: list[str], metric: str, out: str | Path,
                  title: str = "sweep") -> tuple[Path, Path]:
    """Write out/results.csv (one line per ranked row) and out/results.png (bar per trial)."""
    out = Path(out)
    cols = ["rank", "trial_id", "status", *keys, *METRIC_COLUMNS, *SET_COLUMNS, "set_id",
            "device", "error"]
    csv_path, png_path = out / RESULTS_CSV, out / RESULTS_PNG
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([_fmt(r.get(c)) if isinstance(r.get(c), (list, tuple)) else
                        ("" if r.get(c) is None else r.get(c)) for c in cols])
    os.replace(tmp, csv_path)
    _plot(rows, keys, metric, png_path, title)
    return csv_path, png_path


def _plot(rows: list[dict], keys: list[str], metric: str, path: Path, title: str) -> None:
    # Agg canvas directly: no pyplot, no global backend change (as core.color does).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    std_col = metric.replace("top1", "std")
    # Short labels: word lists by their first word, keys without their shared section.
    short = {k: k.split(".", 1)[-1] if len({x.split(".")[0] for x in keys}) == 1 else k
             for k in keys}

    def value(v):
        return f"{v[0]}+{len(v) - 1}" if isinstance(v, (list, tuple)) and v else _fmt(v)
    labels = [f"#{r['rank']} " + (", ".join(f"{short[k]}={value(r.get(k))}" for k in keys)
                                   if any(r.get(k) is not None for k in keys)
                                   else str(r.get("trial_id")))  # a comparison cell
              for r in rows]
    values = [r.get(metric) or 0.0 for r in rows]
    errs = [r.get(std_col) or 0.0 for r in rows]
    width = 5 + 0.07 * max((len(x) for x in labels), default=0)
    fig = Figure(figsize=(width, 1.2 + 0.3 * max(len(rows), 1)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ypos = list(range(len(rows)))[::-1]  # rank 1 on top
    ax.barh(ypos, values, xerr=errs, color=["#3b7dd8" if r["status"] == "TERMINATED" else "#bbbbbb"
                                             for r in rows])
    ax.set_yticks(ypos)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel(f"{metric} (top-1 %, mean ± std over seeds)")
    ax.set_title(title)
    for y, v in zip(ypos, values):
        ax.text(v, y, f" {v:.2f}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)


__all__ = ["load_sweep", "run_sweep", "condense_sets", "set_stats", "evaluate_trial", "rank_rows",
           "format_table", "write_results", "experiment_name"]


def sweep_command(cmd: SweepCommand, log: Callable[[str], None] = print) -> int:
    """`dc3ray sweep`: 1 when a trial failed (rerun the same command to retry it)."""
    if (cmd.export_seeds or cmd.export_hard_labels) and not cmd.export:
        raise ConfigError("--export-seeds and --export-hard-labels shape an export: add --export DIR")
    if cmd.export and cmd.import_seeds:
        raise ConfigError("--export writes a bundle and --import-seeds reads its results: one at a time")
    res = run_sweep(load_sweep(cmd.config, list(cmd.set)), cmd.out, log=log,
                    imported=cmd.import_seeds, export=cmd.export, export_seeds=cmd.export_seeds,
                    export_hard_labels=cmd.export_hard_labels)
    return 1 if res.get("failed") else 0
