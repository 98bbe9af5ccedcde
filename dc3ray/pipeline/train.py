"""Ray Train adapters: teacher training (checkpointed, resumable) and student evaluation.

The maths lives in `dc3ray.core.training`; the two `_..._loop` functions below are the only
Ray-aware parts: they load data through `dc3ray.core.datasets`, wrap the model for DDP, take
their worker's share of each batch, and report. Configs cross into workers as plain dicts.

Data paths and the teacher checkpoint are read by every worker: on a multi-node cluster they
must be on storage all nodes see (as must `out_dir`, the Ray Train storage path).
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import ray
import ray.train
import torch

from ..config import EvalConfig, TeacherConfig, from_dict, to_dict
from ..core import datasets, schema
from ..core.models import (build_model, load_model_checkpoint, load_weights, save_checkpoint,
                           unwrap)
from ..core.fingerprint import json_digest, tree_stamp
from ..core.seeding import derive_seed
from ..core.training import (batch_size_for, epoch_batches, evaluate_counts, lr_factor, norm_stats,
                             set_lr, student_optimizer, summarize_seeds, teacher_optimizer,
                             train_one_epoch_ce, train_one_epoch_kd, train_teacher_epoch)
from .resources import init_ray
from .tracking import tracking_uri

# Worker-side progress goes through logging: Ray Train tees print() into its logger and the
# console, so prints show twice in the driver output.
logger = logging.getLogger(__name__)


def _worker_logging() -> None:
    """Show INFO progress lines from inside Ray Train workers (forwarded to the driver)."""
    if not any(getattr(h, "_dc3ray", False) for h in logger.handlers):
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(message)s"))
        h._dc3ray = True
        logger.addHandler(h)
        logger.setLevel(logging.INFO)
        logger.propagate = False

TEACHER_RUN = "teacher_run"
TEACHER_FILE = "teacher.pt"
TEACHER_JSON = "teacher.json"
STATE_FILE = "state.pt"
EVAL_JSON = "eval.json"


# --------------------------------------------------------------------------------------------
# Helpers shared by both loops (run inside workers)
# --------------------------------------------------------------------------------------------

def _load_split(path: str, size: int, num_classes: int, device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, size, size, 3) images and int64 labels of an image set, on `device`."""
    images, labels, _ = datasets.decode_images(datasets.load_table(path), size)
    if len(images) == 0:
        raise ValueError(f"image set {path} holds no images")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"image set {path} has labels in [{labels.min()}, {labels.max()}] but the "
                         f"model has {num_classes} classes; ingest it with the training class map")
    return torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device)


# Set in a loop's config when _fit runs it in this process instead of on Ray Train workers.
IN_PROCESS = "in_process"


def _worker(config: dict) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this loop: a Ray Train worker's, or this process's."""
    if config.get(IN_PROCESS):
        return 0, 1, torch.device("cuda" if config["use_gpu"] else "cpu")
    ctx = ray.train.get_context()
    return ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device()


def _prepare(model: torch.nn.Module, config: dict, device: torch.device) -> torch.nn.Module:
    """On Ray Train workers: DDP-wrap and move (prepare_model); in this process: move."""
    return model.to(device) if config.get(IN_PROCESS) else ray.train.torch.prepare_model(model)


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum numbers over workers (no-op for one worker)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _val_top1(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, rank: int,
              world: int, device: torch.device, norm: str) -> float:
    # Each worker scores its slice; the bare module avoids DDP collectives inside eval.
    mean, std = norm_stats(norm)
    correct, total = evaluate_counts(unwrap(model), images[rank::world], labels[rank::world],
                                     device, mean=mean, std=std)
    correct, total = _all_sum([correct, total], device)
    return 100.0 * correct / max(total, 1)


def _generator(*parts: Any) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _check_v2() -> None:
    from ray.train.v2._internal.constants import is_v2_enabled
    if not is_v2_enabled():
        raise RuntimeError("dc3ray needs Ray Train V2 (the Ray 2.60 default): unset "
                           "RAY_TRAIN_V2_ENABLED or set it to 1")


def _auto_cpus_per_worker(cpus_per_worker: float | None, workers: int) -> float:
    """None -> an even share of the cluster's CPUs per worker (at most 8), at least 1.

    Ray sets OMP_NUM_THREADS from the worker's CPU count, so a 1-CPU worker trains with one
    thread: on a 2-core laptop that halves the speed of a single-worker run.
    """
    if cpus_per_worker is not None:
        return float(cpus_per_worker)
    total = ray.cluster_resources().get("CPU", 1) if ray.is_initialized() else 1
    if not os.environ.get("RAY_ADDRESS"):
        # A local instance may advertise more logical CPUs than cores; threads need cores.
        total = min(total, os.cpu_count() or 1)
    # A worker cannot span nodes: never ask for more CPUs than the largest node has.
    per_node = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]),
                   default=1) if ray.is_initialized() else 1
    return min(even_cpu_share(total, workers), float(max(1, int(per_node))))


def even_cpu_share(total: float, workers: int) -> float:
    """`total` CPUs split evenly over `workers` Ray Train workers: whole CPUs, at least 1, at
    most 8 (past 8 threads a small CNN's step gets no faster, and the CPUs serve others)."""
    return float(max(1, min(8, int(total // max(workers, 1)))))


def _warn_if_unschedulable(workers: int, cpus_per_worker: float, use_gpu: bool, where: str,
                           log: Callable[[str], None]) -> None:
    # Ray Train waits silently for resources it never gets; say so up front (a warning, not an
    # error: an autoscaling cluster may still add the nodes).
    have = ray.cluster_resources()
    need_cpu = workers * cpus_per_worker
    if have.get("CPU", 0) < need_cpu or (use_gpu and have.get("GPU", 0) < workers):
        log(f"[warning] {where}.workers={workers} x {cpus_per_worker} CPU"
            f"{' + 1 GPU' if use_gpu else ''} exceeds this cluster ({have.get('CPU', 0):g} CPU, "
            f"{have.get('GPU', 0):g} GPU): training waits until resources appear; lower "
            f"{where}.workers or cpus_per_worker")


def _worker_cpus(cpus_per_worker: float | None, workers: int, use_gpu: bool, where: str,
                 log: Callable[[str], None]) -> float:
    """CPUs per Ray Train worker (see _auto_cpus_per_worker), with a warning when the cluster
    cannot place the group."""
    cpus = _auto_cpus_per_worker(cpus_per_worker, workers)
    _warn_if_unschedulable(workers, cpus, use_gpu, where, log)
    return cpus


def _fit(loop: Callable[[dict], Any], config: dict, *, workers: int, use_gpu: bool,
         cpus_per_worker: float, name: str, storage: str | Path,
         keep_checkpoints: int | None = None) -> tuple[Any, float]:
    """One Ray Train run of `loop` on `workers` DDP workers; returns (Result, wall seconds).

    workers=0 calls `loop` in this process instead (no Ray Train, so no checkpoints: only loops
    that never resume may be run so). Not Ray Train's own local mode: that one refuses ray.train
    calls inside a Tune trial, where sweeps train their students.

    A run with the same name and storage path resumes from its latest checkpoint (Ray Train V2),
    which is how teacher and fine-tuning runs continue after an interruption.
    """
    from ray.train.torch import TorchTrainer

    t0 = time.perf_counter()
    if workers == 0:
        value = loop({**config, IN_PROCESS: True, "use_gpu": use_gpu})
        return SimpleNamespace(return_value=value), time.perf_counter() - t0
    run = {"name": name, "storage_path": str(storage)}
    if keep_checkpoints:
        run["checkpoint_config"] = ray.train.CheckpointConfig(num_to_keep=keep_checkpoints)
    trainer = TorchTrainer(
        loop, train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                               resources_per_worker={"CPU": cpus_per_worker}),
        run_config=ray.train.RunConfig(**run))
    result = trainer.fit()
    return result, time.perf_counter() - t0


def _changed(old: dict, new: dict, resumable: tuple[str, ...], prefix: str = "") -> str:
    """The settings that differ between a run on disk and this call, except those a resumed run
    may change; '' when it may resume."""
    return ", ".join(f"{prefix}{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                     if k not in resumable and old.get(k) != new.get(k))


def _num_classes(*paths: str | Path) -> int:
    """Classes of the first set; every other set's class map must agree with it."""
    maps = [(p, datasets.load_class_map(p)) for p in paths]
    ref_path, ref = maps[0]
    for p, m in maps[1:]:
        bad = [n for n, i in m.items() if n in ref and ref[n] != i]
        if bad:
            raise ValueError(f"class maps of {ref_path} and {p} disagree on {bad[:3]}; ingest "
                             f"{p} with --class-map {ref_path}/class_map.json")
    return max(max(m.values()) for _, m in maps) + 1


# --------------------------------------------------------------------------------------------
# Teacher
# --------------------------------------------------------------------------------------------

# Settings a resumed teacher run may change: they do not alter the maths.
_RESUMABLE_CHANGES = ("workers", "use_gpu")


def _teacher_loop(config: dict) -> dict:
    _worker_logging()
    cfg = from_dict(TeacherConfig, config["cfg"])
    rank, world, device = _worker(config)
    norm = config["norm"]
    mean, std = norm_stats(norm)
    num_classes = config["num_classes"]
    x_train, y_train = _load_split(config["train_path"], cfg.image_size, num_classes, device)
    x_val, y_val = _load_split(config["val_path"], cfg.image_size, num_classes, device)

    torch.manual_seed(derive_seed(cfg.seed, "teacher-init"))
    model = build_model(cfg.arch, num_classes, cfg.image_size, **config["model_kwargs"])
    steps_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    start_epoch, history, state = 0, [], None
    settings = {**config["cfg"], "model_kwargs": config["model_kwargs"], "norm": norm}
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
            changed = _changed(state["settings"], settings, _RESUMABLE_CHANGES, "teacher.")
            if changed:
                raise ValueError(
                    f"{config['out_dir']} holds a teacher run with other settings ({changed}); "
                    "rerun with the same teacher settings to resume, or use a new out_dir")
            if state["total_steps"] != total_steps:
                raise ValueError(
                    f"the teacher checkpoint in {config['out_dir']} was made for {state['epochs']} "
                    f"epochs x {state['steps_per_epoch']} steps, now {cfg.epochs} x "
                    f"{steps_per_epoch}: a one-cycle schedule cannot be stretched. Rerun with "
                    "the same teacher.epochs / batch_size / data, or use a new out_dir")
            load_weights(model, Path(d) / TEACHER_FILE)
        start_epoch, history = state["epoch"], list(state["history"])
        if rank == 0:
            logger.info(f"[teacher] resuming from epoch {start_epoch}/{cfg.epochs}")

    model = _prepare(model, config, device)
    optimizer, scheduler = teacher_optimizer(model, cfg.lr, cfg.weight_decay, total_steps)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])

    stop = cfg.epochs if config["stop_after"] is None else min(cfg.epochs,
                                                               start_epoch + config["stop_after"])
    for epoch in range(start_epoch, stop):
        t0 = time.perf_counter()
        # Same permutation on every worker; augmentation differs per worker (different images).
        batches = epoch_batches(len(x_train), cfg.batch_size,
                                _generator(cfg.seed, "teacher-shuffle", epoch), rank, world)
        stats = train_teacher_epoch(model, x_train, y_train, optimizer, scheduler, device,
                                    _generator(cfg.seed, "teacher-augment", epoch, rank),
                                    cfg.batch_size, batches=batches, mean=mean, std=std)
        loss = _all_sum([stats["loss"]], device)[0] / world
        top1 = _val_top1(model, x_val, y_val, rank, world, device, norm)
        row = {"epoch": epoch + 1, "loss": round(loss, 5), "train_top1": round(stats["acc"], 3),
               "val_top1": round(top1, 3), "seconds": round(time.perf_counter() - t0, 3)}
        history.append(row)
        metrics = {**row, "resumed_from_epoch": start_epoch}
        if rank == 0:
            logger.info(f"[teacher] epoch {epoch + 1}/{cfg.epochs} loss {loss:.4f} "
                        f"val top-1 {top1:.2f}% ({row['seconds']:.1f} s)")
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(Path(tmp) / TEACHER_FILE, model, cfg.arch, num_classes,
                                cfg.image_size, extra={"val_top1": top1, "epoch": epoch + 1,
                                                       "norm": norm},
                                model_kwargs=config["model_kwargs"])
                torch.save({"epoch": epoch + 1, "epochs": cfg.epochs, "total_steps": total_steps,
                            "settings": settings,
                            "steps_per_epoch": steps_per_epoch, "history": history,
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict()}, Path(tmp) / STATE_FILE)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)
    return {"start_epoch": start_epoch, "end_epoch": max(start_epoch, stop)}


def train_teacher(cfg: TeacherConfig, train_path: str | Path, val_path: str | Path,
                  out_dir: str | Path, *, norm: str = "cifar", cpus_per_worker: float | None = None,
                  model_kwargs: dict | None = None, stop_after: int | None = None,
                  log: Callable[[str], None] = print) -> dict:
    """Train a teacher with Ray Train; checkpoint every epoch; resume when rerun on `out_dir`.

    Data: image sets (shard folders or ImageFolder trees) at `train_path` / `val_path`, resized
    to cfg.image_size and normalised with `norm` ('cifar' or 'imagenet'). cfg.batch_size is the
    global batch, split across cfg.workers DDP workers (so results do not depend on the worker
    count). Recipe: see core.training.train_teacher_epoch.

    A rerun with the same out_dir continues from the latest checkpoint (Ray Train V2 restores a
    run with the same name and storage path); the schedule must be unchanged. `stop_after` trains
    at most that many epochs in this call and leaves the run resumable (time-boxed runs, tests).

    Writes out_dir/teacher.pt (our checkpoint, load_model_checkpoint) and out_dir/teacher.json;
    returns the teacher.json dict.
    """
    _check_v2()

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    num_classes = _num_classes(train_path, val_path)
    settings = {**to_dict(cfg), "model_kwargs": dict(model_kwargs or {}), "norm": norm}
    paths = [str(Path(train_path).resolve()), str(Path(val_path).resolve())]
    prev_file = out_dir / TEACHER_JSON
    if prev_file.is_file():
        # Check before starting workers: a mismatch would only fail inside them, minutes later.
        prev = json.loads(prev_file.read_text())
        changed = _changed(prev.get("settings", {}), settings, _RESUMABLE_CHANGES, "teacher.")
        if changed:
            raise ValueError(f"{out_dir} holds a teacher run with other settings ({changed}); "
                             "rerun with the same teacher settings to resume, or use a new out_dir")
        if prev.get("complete") and [prev["train_path"], prev["val_path"]] == paths \
                and (out_dir / TEACHER_FILE).is_file():
            log(f"[teacher] {out_dir / TEACHER_FILE} is already trained "
                f"({prev['epochs_done']} epochs, val top-1 {prev['val_top1']:.2f}%)")
            return {**prev, "epochs_this_call": 0, "resumed_from_epoch": prev["epochs_done"],
                    "wall_s": 0.0}
    init_ray()
    cpus_per_worker = _worker_cpus(cpus_per_worker, cfg.workers, cfg.use_gpu, "teacher", log)
    config = {"cfg": to_dict(cfg), "train_path": paths[0], "val_path": paths[1], "out_dir": str(out_dir),
              "num_classes": num_classes, "norm": norm, "model_kwargs": dict(model_kwargs or {}),
              "stop_after": stop_after}
    result, wall = _fit(_teacher_loop, config, workers=cfg.workers, use_gpu=cfg.use_gpu,
                        cpus_per_worker=cpus_per_worker, name=TEACHER_RUN, storage=out_dir,
                        keep_checkpoints=2)
    if result.checkpoint is None:
        raise RuntimeError(f"teacher run in {out_dir} produced no checkpoint (stop_after=0?)")
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
        shutil.copyfile(Path(d) / TEACHER_FILE, out_dir / (TEACHER_FILE + ".tmp"))
    os.replace(out_dir / (TEACHER_FILE + ".tmp"), out_dir / TEACHER_FILE)
    history = state["history"]
    span = result.return_value or {"start_epoch": state["epoch"], "end_epoch": state["epoch"]}
    info = {
        "arch": cfg.arch, "num_classes": num_classes, "image_size": cfg.image_size, "norm": norm,
        "val_top1": history[-1]["val_top1"], "best_val_top1": max(h["val_top1"] for h in history),
        "epochs_done": state["epoch"], "epochs": cfg.epochs, "complete": state["epoch"] >= cfg.epochs,
        "resumed_from_epoch": span["start_epoch"],
        "epochs_this_call": span["end_epoch"] - span["start_epoch"], "wall_s": round(wall, 2),
        "train_s": round(sum(h["seconds"] for h in history), 2),
        "workers": cfg.workers, "use_gpu": cfg.use_gpu, "checkpoint": str(out_dir / TEACHER_FILE),
        "train_path": config["train_path"], "val_path": config["val_path"],
        "config": to_dict(cfg), "model_kwargs": config["model_kwargs"], "settings": settings,
        "history": history,
    }
    _write_json(out_dir / TEACHER_JSON, info)
    log(f"[teacher] {info['epochs_done']}/{cfg.epochs} epochs, val top-1 {info['val_top1']:.2f}% "
        f"-> {out_dir / TEACHER_FILE} ({wall:.1f} s)")
    return info


# --------------------------------------------------------------------------------------------
# Student evaluation
# --------------------------------------------------------------------------------------------

def _student_loop(config: dict) -> dict:
    _worker_logging()
    cfg = from_dict(EvalConfig, config["cfg"])
    seed = config["seed"]
    rank, world, device = _worker(config)
    norm = config["norm"]
    mean, std = norm_stats(norm)
    num_classes = config["num_classes"]
    x, y = _load_split(config["condensed_path"], cfg.image_size, num_classes, device)
    x_val, y_val = _load_split(config["val_path"], cfg.image_size, num_classes, device)
    teacher = None
    if not cfg.hard_labels:
        teacher, _ = load_model_checkpoint(config["teacher_ckpt"], device)
        teacher.requires_grad_(False)

    torch.manual_seed(derive_seed(seed, "student-init"))
    student = build_model(cfg.student, num_classes, cfg.image_size, **config["model_kwargs"])
    student = _prepare(student, config, device)
    optimizer = student_optimizer(student, cfg)
    batch_size = config["batch_size"]
    history, best, best_epoch, t_start = [], -1.0, 0, time.perf_counter()
    for epoch in range(cfg.epochs):
        set_lr(optimizer, cfg.lr * lr_factor(epoch, cfg.epochs))
        batches = epoch_batches(len(x), batch_size, _generator(seed, "student-shuffle", epoch),
                                rank, world)
        g = _generator(seed, "student-augment", epoch, rank)
        if cfg.hard_labels:
            stats = train_one_epoch_ce(student, x, y, optimizer, cfg, device, g, batches=batches,
                                       mean=mean, std=std)
        else:
            stats = train_one_epoch_kd(student, teacher, x, optimizer, cfg, device, g,
                                       batches=batches, mean=mean, std=std)
        done = epoch + 1
        if done % cfg.eval_every and done != cfg.epochs:
            continue
        top1 = _val_top1(student, x_val, y_val, rank, world, device, norm)
        loss = _all_sum([stats["loss"]], device)[0] / world
        if top1 > best:
            best, best_epoch = top1, done
        history.append([done, round(top1, 3), round(loss, 5)])
        if rank == 0 and (done % config["print_every"] == 0 or done == cfg.epochs):
            logger.info(f"[eval seed {seed}] epoch {done}/{cfg.epochs} loss {loss:.4f} "
                        f"top-1 {top1:.2f}% (best {best:.2f}% @ {best_epoch})")
    # No ray.train.report per evaluation: each report blocks until the controller polls it
    # (every ~2 s), which would dwarf a short epoch. The curve returns through return_value.
    return {"seed": seed, "top1_final": history[-1][1], "top1_best": round(best, 3),
            "best_epoch": best_epoch, "train_s": round(time.perf_counter() - t_start, 2),
            "history": history}


def _mlflow_log(out_dir: Path, cfg: EvalConfig, summary: dict, experiment: str) -> dict:
    """One MLflow run: the config and paths as params, per-seed and aggregate metrics."""
    import mlflow
    from mlflow.entities import Metric, Param

    uri = tracking_uri(out_dir)
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        # Our default store keeps artifacts next to it, not in the caller's working directory.
        loc = None if os.environ.get("MLFLOW_TRACKING_URI") else (out_dir / "mlartifacts").as_uri()
        exp_id = client.create_experiment(experiment, artifact_location=loc)
    else:
        exp_id = exp.experiment_id
    run = client.create_run(exp_id, run_name=f"eval-{cfg.student}-ipc{summary['ipc']}")
    now = int(time.time() * 1000)
    params = {f"eval.{k}": v for k, v in to_dict(cfg).items()}
    params.update({k: summary[k] for k in ("condensed_path", "val_path", "teacher_ckpt", "ipc",
                                           "num_images", "num_classes", "batch_size", "norm")})
    metrics = [Metric(k, float(summary[k]), now, 0) for k in
               ("final_mean", "final_std", "best_mean", "best_std")]
    for s in summary["seeds"]:
        metrics += [Metric(f"seed{s['seed']}_top1_final", s["top1_final"], now, 0),
                    Metric(f"seed{s['seed']}_top1_best", s["top1_best"], now, 0),
                    Metric(f"seed{s['seed']}_wall_s", s["wall_s"], now, 0)]
        metrics += [Metric(f"seed{s['seed']}_val_top1", float(t), now, int(e))
                    for e, t, _ in s["history"]]
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    for i in range(0, len(metrics), 1000):  # MLflow caps a batch at 1000 metrics
        client.log_batch(run.info.run_id, metrics=metrics[i:i + 1000])
    client.set_terminated(run.info.run_id)
    return {"tracking_uri": uri, "experiment": experiment, "run_id": run.info.run_id}


def _inputs_key(summary: dict, condensed_path, val_path, teacher_ckpt) -> str:
    """What a seed's result depends on, besides the seed: config, batch size, data, teacher."""
    parts = {k: summary[k] for k in ("student", "num_classes", "batch_size", "norm", "model_kwargs")}
    parts["config"] = {k: v for k, v in summary["config"].items() if k != "seeds"}
    parts["stamps"] = [tree_stamp(condensed_path), tree_stamp(val_path),
                       tree_stamp(teacher_ckpt) if teacher_ckpt else None]
    return json_digest(parts)


def _read_seed(path: Path, inputs_key: str) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent, or cut short mid-write: train the seed again
    return data["result"] if data.get("inputs_key") == inputs_key else None


def _check_finished(result: dict, seed: int, epochs: int, log: Callable[[str], None]) -> dict | None:
    """A caller-supplied seed result, if it is one of this seed at this epoch budget."""
    keys = ("seed", "top1_final", "top1_best", "best_epoch", "history", "wall_s")
    ok = (all(k in result for k in keys) and result["seed"] == seed and result["history"]
          and result["history"][-1][0] == epochs)
    if not ok:
        log(f"[eval] seed {seed}: the finished= result is not this seed's at {epochs} epochs "
            f"(seed {result.get('seed')}, last epoch "
            f"{(result.get('history') or [[None]])[-1][0]}); training it")
    return copy.deepcopy(result) if ok else None


def evaluate_condensed(cfg: EvalConfig, condensed_path: str | Path, val_path: str | Path,
                       teacher_ckpt: str | Path | None, out_dir: str | Path,
                       ipc: int | None = None, *, norm: str = "cifar",
                       cpus_per_worker: float | None = None, model_kwargs: dict | None = None,
                       print_every: int = 10, experiment: str = "dc3ray-eval",
                       finished: dict[int, dict] | None = None,
                       on_seed: Callable[[int, dict], None] | None = None,
                       log: Callable[[str], None] = print) -> dict:
    """Score a condensed set: train cfg.student from scratch, once per seed (range(cfg.seeds)),
    each as one Ray Train run of cfg.workers workers; top-1 on `val_path` every cfg.eval_every
    epochs and at the end. cfg.workers=0 trains each seed in this process instead: no worker
    start-up (seconds per seed, most of a tiny run's time), the same numbers as one worker.

    KD from the frozen teacher at `teacher_ckpt` (our format, e.g. train_teacher's teacher.pt),
    or cross-entropy when cfg.hard_labels (teacher_ckpt may be None then). `ipc` sets the batch
    rule min(ipc * C, cfg.batch_rule); by default ceil(images / classes). Each finished seed is
    saved under out_dir/seeds/ and reused by a rerun with the same inputs. Writes out_dir/eval.json
    (per seed: final and best top-1, best epoch, wall time, curve; mean and population std over
    seeds) and logs one MLflow run (MLFLOW_TRACKING_URI, else sqlite:///<out_dir>/mlflow.db).
    `finished` maps seed -> a result of this same evaluation kept elsewhere (the benchmark's
    committed record, say): the caller vouches for its inputs; one of another seed or epoch
    budget is refused and the seed trained. `on_seed(seed, result)` is called as each seed is
    done (trained or reused), so a caller can keep it before the next starts. Returns the
    eval.json dict.
    """
    _check_v2()

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.hard_labels:
        if teacher_ckpt is None:
            raise ValueError("evaluate_condensed: KD needs teacher_ckpt (a teacher.pt from "
                             "train_teacher), or set eval.hard_labels=true")
        teacher_ckpt = Path(teacher_ckpt).resolve()
        _, meta = load_model_checkpoint(teacher_ckpt)  # fail here, not in every worker
        num_classes = meta["num_classes"]
        if _num_classes(val_path, condensed_path) > num_classes:
            raise ValueError(f"{val_path} / {condensed_path} have more classes than the "
                             f"{num_classes} of teacher {teacher_ckpt}; use a teacher trained "
                             "with the same class map")
        if meta["arch"] == "convnet3" and meta["image_size"] != cfg.image_size:
            # ConvNet's linear head is sized for one input resolution.
            raise ValueError(f"teacher {teacher_ckpt} is a ConvNet for {meta['image_size']} px "
                             f"images but eval.image_size={cfg.image_size}; set them equal")
    else:
        num_classes = _num_classes(val_path, condensed_path)
    labels = datasets.load_table(condensed_path).column(schema.LABEL).to_numpy()
    if ipc is None:
        ipc = math.ceil(len(labels) / num_classes)
    batch_size = batch_size_for(ipc, num_classes, cfg)
    init_ray()
    if cfg.workers:
        cpus_per_worker = _worker_cpus(cpus_per_worker, cfg.workers, cfg.use_gpu, "eval", log)
    elif cfg.use_gpu and not torch.cuda.is_available():
        raise ValueError("eval.use_gpu=true with eval.workers=0 trains in this process, which "
                         "sees no GPU; set eval.workers >= 1 to train on the cluster's GPUs")
    summary: dict = {
        "condensed_path": str(Path(condensed_path).resolve()), "val_path": str(Path(val_path).resolve()),
        "teacher_ckpt": str(teacher_ckpt) if teacher_ckpt else None, "student": cfg.student,
        "ipc": ipc, "num_images": int(len(labels)), "num_classes": num_classes,
        "batch_size": batch_size, "norm": norm, "config": to_dict(cfg),
        "model_kwargs": dict(model_kwargs or {}), "seeds": []}
    t_all = time.perf_counter()
    inputs_key = _inputs_key(summary, condensed_path, val_path, teacher_ckpt)
    for seed in range(cfg.seeds):
        config = {"cfg": to_dict(cfg), "seed": seed, "condensed_path": summary["condensed_path"],
                  "val_path": summary["val_path"], "teacher_ckpt": summary["teacher_ckpt"],
                  "num_classes": num_classes, "batch_size": batch_size, "norm": norm,
                  "model_kwargs": summary["model_kwargs"], "print_every": max(1, print_every)}
        # A finished seed is kept: an interrupted 3-seed evaluation resumes at the next seed.
        seed_file = out_dir / "seeds" / f"seed{seed}.json"
        res, where = _read_seed(seed_file, inputs_key), str(seed_file)
        if res is None and finished and seed in finished:
            res, where = _check_finished(finished[seed], seed, cfg.epochs, log), "finished="
        if res is not None:
            log(f"[eval] seed {seed}: done earlier ({where}): final "
                f"{res['top1_final']:.2f}%, best {res['top1_best']:.2f}%")
        else:
            # A fresh run name per call: a seed restarts from scratch, it has no checkpoints.
            result, wall = _fit(_student_loop, config, workers=cfg.workers, use_gpu=cfg.use_gpu,
                                cpus_per_worker=cpus_per_worker, storage=out_dir / "ray",
                                name=f"eval_seed{seed}_{uuid.uuid4().hex[:8]}")
            res, where = {**result.return_value, "wall_s": round(wall, 2)}, None
            log(f"[eval] seed {seed}: final {res['top1_final']:.2f}%, best "
                f"{res['top1_best']:.2f}% @ {res['best_epoch']} ({res['wall_s']:.1f} s)")
        if where != str(seed_file):  # trained now or taken from finished=: keep it here too
            seed_file.parent.mkdir(exist_ok=True)
            _write_json(seed_file, {"inputs_key": inputs_key, "result": res})
        summary["seeds"].append(res)
        if on_seed:
            on_seed(seed, res)
    summary.update(summarize_seeds(summary["seeds"]))
    summary.update({"std": "population (ddof=0) over seeds",
                    "wall_s": round(time.perf_counter() - t_all, 2)})
    summary["mlflow"] = _mlflow_log(out_dir, cfg, summary, experiment)
    _write_json(out_dir / EVAL_JSON, summary)
    log(f"[eval] {cfg.student} ipc {ipc}: final {summary['final_mean']:.2f} +- "
        f"{summary['final_std']:.2f}, best {summary['best_mean']:.2f} +- "
        f"{summary['best_std']:.2f} over {cfg.seeds} seed(s) -> {out_dir / EVAL_JSON}")
    return summary


__all__ = ["train_teacher", "evaluate_condensed"]
