"""`dc3ray evaluate`: score a condensed set by training students from scratch (RDED protocol),
one Ray Train run per seed, each finished seed kept so an interrupted evaluation resumes.

The maths lives in dc3ray.core.training; the per-seed loop (student.py, Ray-free) runs on a Ray
Train worker or in this process. Paths must be on storage every node sees.
"""
from __future__ import annotations

import json
import math
import time
import uuid
from pathlib import Path
from typing import Callable

import torch

from ..config import EvalConfig, EvaluateCommand, to_dict
from ..core import datasets, schema
from ..core.atomic import write_json
from ..core.fingerprint import json_digest, tree_stamp
from ..core.models import load_model_checkpoint
from ..core.training import (
    batch_size_for,
    class_confidence,
    norm_for_side,
    norm_stats,
    recorded_norm,
    summarize_seeds,
)
from ..errors import ConfigError, DataError
from .raytrain import check_train_v2, fit, num_classes_of, worker_cpus
from ..logs import log_file, run_logs
from .bundle import add_job, imported_seeds
from .outputs import output_lock
from .progress import follow_epochs
from .resources import init_ray
from .student import student_loop
from .tracking import check_store, log_run

EVAL_JSON = "eval.json"
SEEDS_DIR = "seeds"


def _resolve_norm(cfg: EvalConfig, teacher_meta: dict | None, teacher_ckpt, stored_side: int
                  ) -> tuple[str, str]:
    """(normalisation, where it came from) of one evaluation: see EvalConfig.norm."""
    recorded = None
    if teacher_meta is not None:
        try:
            recorded = recorded_norm(teacher_meta)
        except ValueError as e:
            raise ConfigError(f"teacher {teacher_ckpt}: {e}; save it with extra={{'norm': name}}")
    if recorded is not None:
        if cfg.norm not in ("auto", recorded):
            raise ConfigError(f"eval.norm={cfg.norm} but teacher {teacher_ckpt} was trained on "
                              f"{recorded!r}-normalised inputs, and it sees the student's batch; "
                              f"set eval.norm=auto (or {recorded})")
        return recorded, f"teacher {teacher_ckpt}"
    if cfg.norm != "auto":
        return cfg.norm, "eval.norm"
    return norm_for_side(stored_side), f"auto: images stored at {stored_side} px"


def evaluation_plan(cfg: EvalConfig, condensed_path: str | Path, val_path: str | Path,
                    teacher_ckpt: str | Path | None, ipc: int | None = None, *,
                    model_kwargs: dict | None = None) -> dict:
    """Check an evaluation's inputs and fix what it depends on, without training.

    Returns the head of eval.json (paths, classes, batch size, resolved normalisation and where
    it came from, stored image side, teacher input size, config) plus `inputs_key`: the digest
    a seed file must carry to be reused (config but seeds, batch size, norm, data and teacher
    stamps). A caller that kept seeds elsewhere writes them as seed_file(out, k) with this key
    before calling evaluate_condensed. eval.norm is resolved here and only here.
    """
    meta = None
    if cfg.hard_labels:
        teacher_ckpt = None  # not read: a teacher given anyway is no input of these seeds
        num_classes = num_classes_of(val_path, condensed_path)
    else:
        if teacher_ckpt is None:
            raise ConfigError("KD needs a teacher checkpoint (a teacher.pt from dc3ray teacher), "
                              "or set eval.hard_labels=true")
        teacher_ckpt = Path(teacher_ckpt).resolve()
        _, meta = load_model_checkpoint(teacher_ckpt)  # fail here, not in every worker
        num_classes = meta["num_classes"]
        if num_classes_of(val_path, condensed_path) > num_classes:
            raise DataError(f"{val_path} / {condensed_path} have more classes than the "
                            f"{num_classes} of teacher {teacher_ckpt}; use a teacher trained "
                            "with the same class map")
        if meta["arch"] == "convnet3" and meta["image_size"] != cfg.image_size:
            # ConvNet's linear head is sized for one input resolution.
            raise ConfigError(f"teacher {teacher_ckpt} is a ConvNet for {meta['image_size']} px "
                              f"images but eval.image_size={cfg.image_size}; set them equal")
    table = datasets.load_table(condensed_path)
    labels = table.column(schema.LABEL).to_numpy()
    ipc = math.ceil(len(labels) / num_classes) if ipc is None else ipc
    side = datasets.stored_side(table, limit=None)
    norm, norm_source = _resolve_norm(cfg, meta, teacher_ckpt, side)
    plan = {
        "condensed_path": str(Path(condensed_path).resolve()),
        "val_path": str(Path(val_path).resolve()),
        "teacher_ckpt": str(teacher_ckpt) if teacher_ckpt else None, "student": cfg.student,
        "ipc": ipc, "num_images": int(len(labels)), "num_classes": num_classes,
        "batch_size": batch_size_for(ipc, num_classes, cfg), "norm": norm,
        "norm_source": norm_source, "stored_side": side,
        "teacher_image_size": None if meta is None else int(meta["image_size"]),
        "config": to_dict(cfg), "model_kwargs": dict(model_kwargs or {})}
    parts = {k: plan[k] for k in ("student", "num_classes", "batch_size", "norm", "model_kwargs")}
    # The resolved norm stands for eval.norm, so "auto" and its value share seeds.
    parts["config"] = {k: v for k, v in plan["config"].items() if k not in ("seeds", "norm")}
    if side != cfg.image_size or plan["teacher_image_size"] not in (None, cfg.image_size):
        # Crops from the stored resolution, centre-cropped val, teacher fed at its own size:
        # seeds kept from before these views (squashed to image_size) are not reused.
        parts["views"] = "stored-crop/val-centre-crop/teacher-size"
    parts["stamps"] = [tree_stamp(condensed_path), tree_stamp(val_path),
                       tree_stamp(teacher_ckpt) if teacher_ckpt else None]
    return {**plan, "inputs_key": json_digest(parts)}


def seed_file(out_dir: str | Path, seed: int) -> Path:
    """Where evaluate_condensed keeps seed `seed`: {"inputs_key": ..., "result": {...}}."""
    return Path(out_dir) / SEEDS_DIR / f"seed{seed}.json"


def read_seed(path: Path, inputs_key: str, seed: int, epochs: int) -> dict | None:
    """The kept result at `path` if it is this seed's, at this epoch budget, of these inputs."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None  # absent, or cut short mid-write: train the seed again
    res = data.get("result") or {}
    ok = (data.get("inputs_key") == inputs_key and res.get("seed") == seed
          and bool(res.get("history")) and res["history"][-1][0] == epochs)
    return res if ok else None


def _train_seed(cfg: EvalConfig, plan: dict, seed: int, out_dir: Path, cpus_per_worker,
                print_every: int) -> dict:
    config = {"cfg": to_dict(cfg), "seed": seed, "print_every": max(1, print_every),
              **{k: plan[k] for k in ("condensed_path", "val_path", "teacher_ckpt", "num_classes",
                                      "batch_size", "norm", "model_kwargs")}}
    name = f"eval_seed{seed}_{uuid.uuid4().hex[:8]}"
    with follow_epochs(out_dir / "ray" / f"{name}.progress", cfg.epochs,
                       f"eval {cfg.student} seed {seed}") as progress:
        # A fresh run name per call: a seed restarts from scratch, it has no checkpoints.
        result, wall = fit(student_loop, {**config, "progress_file": progress},
                           workers=cfg.workers, use_gpu=cfg.use_gpu,
                           cpus_per_worker=cpus_per_worker, storage=out_dir / "ray", name=name)
    return {**result.return_value, "wall_s": round(wall, 2)}


def evaluate_condensed(cfg: EvalConfig, condensed_path: str | Path, val_path: str | Path,
                       teacher_ckpt: str | Path | None, out_dir: str | Path,
                       ipc: int | None = None, *,
                       cpus_per_worker: float | None = None, model_kwargs: dict | None = None,
                       print_every: int = 10, experiment: str = "dc3ray-eval",
                       tracking_out: str | Path | None = None, first_seed: int = 0,
                       imported: str | Path | None = None,
                       log: Callable[[str], None] = print) -> dict:
    """Score a condensed set: train cfg.student from scratch once per seed (range(cfg.seeds)),
    each as one Ray Train run of cfg.workers workers (0: in this process, the same numbers
    without worker start-up); top-1 on `val_path` every cfg.eval_every epochs and at the end.

    KD from the frozen teacher at `teacher_ckpt` (our format; fed the augmented batch at its
    own image_size), or cross-entropy when cfg.hard_labels; one normalisation, cfg.norm as
    evaluation_plan resolves it. `ipc` sets the batch rule min(ipc * C, cfg.batch_rule); by default
    ceil(images / classes). Each finished seed is kept as seed_file(out_dir, k) and reused by a
    rerun with the same inputs (see evaluation_plan). Writes out_dir/eval.json (per seed: final
    and best top-1, best epoch, wall time, curve; mean and population std over seeds) and logs
    one MLflow run to the store of `tracking_out` (default out_dir; MLFLOW_TRACKING_URI wins).
    `first_seed` > 0 runs only seeds first_seed..cfg.seeds-1, so that several processes sharing
    out_dir can split one evaluation's seeds; a later full call reuses them all. `imported`: a
    gpu_seeds.json (bundle.py): its seeds trained on these very inputs are taken, not retrained.
    Returns the eval.json dict.
    """
    if not 0 <= first_seed < cfg.seeds:
        raise ConfigError(f"first_seed={first_seed} must be in [0, eval.seeds={cfg.seeds})")
    check_train_v2()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = evaluation_plan(cfg, condensed_path, val_path, teacher_ckpt, ipc,
                           model_kwargs=model_kwargs)
    init_ray()
    if cfg.workers:
        cpus_per_worker = worker_cpus(cpus_per_worker, cfg.workers, cfg.use_gpu, "eval", log)
    elif cfg.use_gpu and not torch.cuda.is_available():
        raise ConfigError("eval.use_gpu=true with eval.workers=0 trains in this process, which "
                          "sees no GPU; set eval.workers >= 1 to train on the cluster's GPUs")
    summary = {k: v for k, v in plan.items() if k != "inputs_key"}
    summary["seeds"] = []
    elsewhere = imported_seeds(imported, plan["inputs_key"], log) if imported else {}
    t_all = time.perf_counter()
    for seed in range(first_seed, cfg.seeds):
        path = seed_file(out_dir, seed)
        res = read_seed(path, plan["inputs_key"], seed, cfg.epochs)
        if res is None and seed in elsewhere:
            res = elsewhere[seed]
            write_json(path, {"inputs_key": plan["inputs_key"], "result": res})
            log(f"[eval] seed {seed}: imported from {imported} ({res.get('device', '?')}, "
                f"{res.get('date', '?')}): final {res['top1_final']:.2f}%, best "
                f"{res['top1_best']:.2f}%")
        elif res is not None:
            log(f"[eval] seed {seed}: done earlier ({path}): final {res['top1_final']:.2f}%, "
                f"best {res['top1_best']:.2f}%")
        else:
            res = _train_seed(cfg, plan, seed, out_dir, cpus_per_worker, print_every)
            write_json(path, {"inputs_key": plan["inputs_key"], "result": res})
            log(f"[eval] seed {seed}: final {res['top1_final']:.2f}%, best "
                f"{res['top1_best']:.2f}% @ {res['best_epoch']} ({res['wall_s']:.1f} s)")
        summary["seeds"].append(res)
    summary.update(summarize_seeds(summary["seeds"]))
    summary.update({"std": "population (ddof=0) over seeds",
                    "wall_s": round(time.perf_counter() - t_all, 2)})
    summary["mlflow"] = _log_mlflow(tracking_out or out_dir, cfg, summary, experiment)
    write_json(out_dir / EVAL_JSON, summary)
    if len(summary["seeds"]) > 1:  # one seed has no spread to show
        log(f"[eval] {cfg.student} ipc {summary['ipc']}: final {summary['final_mean']:.2f} +- "
            f"{summary['final_std']:.2f}, best {summary['best_mean']:.2f} +- "
            f"{summary['best_std']:.2f} over {len(summary['seeds'])} seeds")
    return summary


def _log_mlflow(out: Path, cfg: EvalConfig, summary: dict, experiment: str) -> dict:
    """One MLflow run: config and paths as params, aggregate and per-seed metrics, curves."""
    params = {f"eval.{k}": v for k, v in to_dict(cfg).items()}
    params.update({k: summary[k] for k in ("condensed_path", "val_path", "teacher_ckpt", "ipc",
                                           "num_images", "num_classes", "batch_size", "norm")})
    metrics = {k: summary[k] for k in ("final_mean", "final_std", "best_mean", "best_std")}
    series = {}
    for s in summary["seeds"]:
        metrics.update({f"seed{s['seed']}_top1_final": s["top1_final"],
                        f"seed{s['seed']}_top1_best": s["top1_best"],
                        f"seed{s['seed']}_wall_s": s["wall_s"]})
        series[f"seed{s['seed']}_val_top1"] = [(e, t) for e, t, _ in s["history"]]
    return log_run(out, experiment, f"eval-{cfg.student}-ipc{summary['ipc']}", params, metrics,
                   series=series)


def export_evaluation(cfg: EvalConfig, condensed_path: str | Path, val_path: str | Path,
                      teacher_ckpt: str | Path | None, bundle: str | Path, cell: str,
                      ipc: int | None = None, seeds: list[int] | None = None,
                      set_name: str | None = None, log: Callable[[str], None] = print,
                      **extra) -> dict:
    """Write this evaluation's seeds (default range(cfg.seeds)) as a job of `bundle` (see
    bundle.py) instead of training them; the set is copied as sets/<set_name> (default: the
    cell). Returns the job."""
    plan = evaluation_plan(cfg, condensed_path, val_path, teacher_ckpt, ipc)
    seeds = list(range(cfg.seeds)) if seeds is None else seeds
    job = add_job(bundle, cell, cfg, plan, seeds, set_name or cell, ipc=plan["ipc"], **extra)
    log(f"[export] {cell}: seeds {seeds} -> {bundle}")
    return job


def evaluate_command(cmd: EvaluateCommand, log: Callable[[str], None] = print) -> int:
    """`dc3ray evaluate`: score the set and print the summary line (--export: write its seeds
    to a bundle instead)."""
    if cmd.export and cmd.import_seeds:
        raise ConfigError("--export writes a bundle and --import-seeds reads its results: one "
                          "at a time")
    if cmd.export:
        name = Path(cmd.out).name  # the KD and the hard-label export share one copy of the set
        export_evaluation(cmd.eval, cmd.condensed, cmd.val, cmd.teacher, cmd.export,
                          name + ("-hard" if cmd.eval.hard_labels else ""), ipc=cmd.ipc,
                          set_name=name, log=log)
        log(f"train them with benchmarks/gpu_student.py {cmd.export}, then rerun this command "
            "with --import-seeds <its gpu_seeds.json> instead of --export")
        return 0
    with output_lock(cmd.out, "evaluate", log), run_logs(log_file(cmd.out)):
        check_store(cmd.out, "dc3ray-eval")  # a broken store stops it before any training
        res = evaluate_condensed(cmd.eval, cmd.condensed, cmd.val, cmd.teacher, cmd.out,
                                 ipc=cmd.ipc, imported=cmd.import_seeds, log=log)
    log(f"final top-1 {res['final_mean']:.2f} +- {res['final_std']:.2f}  best top-1 "
        f"{res['best_mean']:.2f} +- {res['best_std']:.2f}  ({cmd.eval.seeds} seeds) -> "
        f"{Path(cmd.out) / EVAL_JSON}")
    return 0


def teacher_reading(teacher_ckpt: str | Path, condensed_path: str | Path) -> dict:
    """{'teacher_top1' (%), 'teacher_p_true'}: how surely a teacher checkpoint reads the set's
    raw images as their own class (the KD targets' confidence), fed at the teacher's own size
    with the normalisation it was trained with (recorded, else by its input size)."""
    model, meta = load_model_checkpoint(teacher_ckpt)
    try:
        norm = recorded_norm(meta) or norm_for_side(int(meta["image_size"]))
    except ValueError as e:
        raise ConfigError(f"teacher {teacher_ckpt}: {e}") from None
    images, labels, _ = datasets.decode_images(datasets.load_table(condensed_path),
                                               int(meta["image_size"]))
    res = class_confidence(model, images, labels, "cpu", 256, *norm_stats(norm))
    return {"teacher_top1": round(res["top1"], 2), "teacher_p_true": round(res["mean_p_true"], 4)}


__all__ = ["evaluate_condensed", "evaluation_plan", "seed_file", "read_seed", "evaluate_command",
           "export_evaluation", "teacher_reading"]
