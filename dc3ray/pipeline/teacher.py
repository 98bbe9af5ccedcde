"""`dc3ray teacher`: train a teacher with Ray Train, checkpointed every epoch and resumable.

The maths lives in dc3ray.core.training; `_teacher_loop` is the only Ray-aware part. Data paths
and `out_dir` (the Ray Train storage path) must be on storage every node sees.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Callable

import ray
import ray.train
import torch

from ..config import TeacherCommand, TeacherConfig, from_dict, to_dict
from ..core import datasets
from ..core.atomic import write_json
from ..core.classtable import IMAGENET_INDEX_FILE, dataset_imagenet_indices
from ..core.models import ImageNetSubset, build_model, load_weights, save_checkpoint
from ..core.seeding import derive_seed
from ..core.training import epoch_batches, norm_for_side, teacher_optimizer, train_teacher_epoch
from ..errors import ConfigError, DataError
from .raytrain import (
    STATE_FILE,
    all_sum,
    changed_settings,
    check_train_v2,
    copy_from_checkpoint,
    fit,
    load_split,
    logger,
    loop_inputs,
    num_classes_of,
    prepare_model,
    seeded_generator,
    val_top1,
    worker_cpus,
)
from ..logs import log_file, run_logs
from .progress import follow_epochs, report_epoch
from .resources import init_ray

TEACHER_RUN = "teacher_run"
TEACHER_FILE = "teacher.pt"
TEACHER_JSON = "teacher.json"


# Settings a resumed teacher run may change: they do not alter the maths.
_RESUMABLE_CHANGES = ("workers", "use_gpu")
# TeacherConfig fields of the imagenet_subset kind only, and those the subset teacher uses.
_SUBSET_ONLY = ("kind", "imagenet_arch", "imagenet_weights")
_SUBSET_SETTINGS = (*_SUBSET_ONLY, "image_size")


def _trained_settings(cfg: TeacherConfig) -> dict:
    # Without the subset-only fields, runs from before they existed still resume.
    return {k: v for k, v in to_dict(cfg).items() if k not in _SUBSET_ONLY}


def _teacher_loop(config: dict) -> dict:
    cfg = from_dict(TeacherConfig, config["cfg"])
    io = loop_inputs(config, cfg.image_size, "train_path")
    rank, world, device, norm, mean, std = io.rank, io.world, io.device, io.norm, io.mean, io.std
    num_classes, x_train, y_train, x_val, y_val = io.num_classes, io.x, io.y, io.x_val, io.y_val

    torch.manual_seed(derive_seed(cfg.seed, "teacher-init"))
    model = build_model(cfg.arch, num_classes, cfg.image_size, **config["model_kwargs"])
    steps_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    start_epoch, history, state = 0, [], None
    settings = {**_trained_settings(cfg), "model_kwargs": config["model_kwargs"], "norm": norm}
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
            changed = changed_settings(state["settings"], settings, _RESUMABLE_CHANGES, "teacher.")
            if changed:
                raise ConfigError(
                    f"{config['out_dir']} holds a teacher run with other settings ({changed}); "
                    "rerun with the same teacher settings to resume, or use a new out_dir")
            if state["total_steps"] != total_steps:
                raise ConfigError(
                    f"the teacher checkpoint in {config['out_dir']} was made for {state['epochs']} "
                    f"epochs x {state['steps_per_epoch']} steps, now {cfg.epochs} x "
                    f"{steps_per_epoch}: a one-cycle schedule cannot be stretched. Rerun with "
                    "the same teacher.epochs / batch_size / data, or use a new out_dir")
            load_weights(model, Path(d) / TEACHER_FILE)
        start_epoch, history = state["epoch"], list(state["history"])
        if rank == 0:
            logger.info(f"[teacher] resuming from epoch {start_epoch}/{cfg.epochs}")

    model = prepare_model(model, config, device)
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
                                seeded_generator(cfg.seed, "teacher-shuffle", epoch), rank, world)
        stats = train_teacher_epoch(model, x_train, y_train, optimizer, scheduler, device,
                                    seeded_generator(cfg.seed, "teacher-augment", epoch, rank),
                                    cfg.batch_size, batches=batches, mean=mean, std=std)
        loss = all_sum([stats["loss"]], device)[0] / world
        top1 = val_top1(model, x_val, y_val, rank, world, device, norm)
        row = {"epoch": epoch + 1, "loss": round(loss, 5), "train_top1": round(stats["acc"], 3),
               "val_top1": round(top1, 3), "seconds": round(time.perf_counter() - t0, 3)}
        history.append(row)
        metrics = {**row, "resumed_from_epoch": start_epoch}
        if rank == 0:
            report_epoch(config.get("progress_file"), epoch=epoch + 1, loss=round(loss, 4),
                         val_top1=round(top1, 2))
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


def teacher_norm(cfg: TeacherConfig, train_path: str | Path) -> str:
    """The normalisation a trained teacher uses: cfg.norm, or for 'auto' the rule of
    core.training.norm_for_side on the stored side of the training set's first images."""
    if cfg.norm != "auto":
        return cfg.norm
    return norm_for_side(datasets.stored_side(datasets.load_table(train_path)))


def train_teacher(cfg: TeacherConfig, train_path: str | Path, val_path: str | Path,
                  out_dir: str | Path, *, cpus_per_worker: float | None = None,
                  model_kwargs: dict | None = None, stop_after: int | None = None,
                  log: Callable[[str], None] = print) -> dict:
    """Train a teacher with Ray Train; checkpoint every epoch; resume when rerun on `out_dir`.

    Data: image sets (shard folders or ImageFolder trees) at `train_path` / `val_path`, resized
    to cfg.image_size and normalised as cfg.norm says (auto: by stored size). cfg.batch_size is the
    global batch, split across cfg.workers DDP workers (so results do not depend on the worker
    count). Recipe: see core.training.train_teacher_epoch.

    A rerun with the same out_dir continues from the latest checkpoint (Ray Train V2 restores a
    run with the same name and storage path); the schedule must be unchanged. `stop_after` trains
    at most that many epochs in this call and leaves the run resumable (time-boxed runs, tests).

    Writes out_dir/teacher.pt (our checkpoint, load_model_checkpoint) and out_dir/teacher.json;
    returns the teacher.json dict. cfg.kind=imagenet_subset trains nothing: see
    build_subset_teacher (cfg.norm, `model_kwargs` and `stop_after` do not apply).
    """
    if cfg.kind == "imagenet_subset":
        return build_subset_teacher(cfg, train_path, val_path, out_dir, log=log)
    check_train_v2()

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    num_classes = num_classes_of(train_path, val_path)
    norm = teacher_norm(cfg, train_path)
    settings = {**_trained_settings(cfg), "model_kwargs": dict(model_kwargs or {}), "norm": norm}
    paths = [str(Path(train_path).resolve()), str(Path(val_path).resolve())]
    prev_file = out_dir / TEACHER_JSON
    if prev_file.is_file():
        # Check before starting workers: a mismatch would only fail inside them, minutes later.
        prev = json.loads(prev_file.read_text())
        changed = changed_settings(prev.get("settings", {}), settings, _RESUMABLE_CHANGES, "teacher.")
        if changed:
            raise ConfigError(f"{out_dir} holds a teacher run with other settings ({changed}); "
                             "rerun with the same teacher settings to resume, or use a new out_dir")
        if prev.get("complete") and [prev["train_path"], prev["val_path"]] == paths \
                and (out_dir / TEACHER_FILE).is_file():
            log(f"[teacher] {out_dir / TEACHER_FILE} is already trained "
                f"({prev['epochs_done']} epochs, val top-1 {prev['val_top1']:.2f}%)")
            return {**prev, "epochs_this_call": 0, "resumed_from_epoch": prev["epochs_done"],
                    "wall_s": 0.0}
    init_ray()
    cpus_per_worker = worker_cpus(cpus_per_worker, cfg.workers, cfg.use_gpu, "teacher", log)
    config = {"cfg": to_dict(cfg), "train_path": paths[0], "val_path": paths[1], "out_dir": str(out_dir),
              "num_classes": num_classes, "norm": norm, "model_kwargs": dict(model_kwargs or {}),
              "stop_after": stop_after}
    with follow_epochs(out_dir / "progress.jsonl", cfg.epochs, f"teacher {cfg.arch}") as progress:
        result, wall = fit(_teacher_loop, {**config, "progress_file": progress},
                           workers=cfg.workers, use_gpu=cfg.use_gpu,
                           cpus_per_worker=cpus_per_worker, name=TEACHER_RUN, storage=out_dir,
                           keep_checkpoints=2)
    state = copy_from_checkpoint(result, TEACHER_FILE, out_dir / TEACHER_FILE)
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
    write_json(out_dir / TEACHER_JSON, info)
    log(f"[teacher] {info['epochs_done']}/{cfg.epochs} epochs, val top-1 {info['val_top1']:.2f}% "
        f"-> {out_dir / TEACHER_FILE} ({wall:.1f} s)")
    return info


def build_subset_teacher(cfg: TeacherConfig, train_path: str | Path, val_path: str | Path,
                         out_dir: str | Path, *, log: Callable[[str], None] = print) -> dict:
    """teacher.kind=imagenet_subset: an ImageNet-1K classifier (cfg.imagenet_arch, offline or
    cfg.imagenet_weights) restricted to the train set's classes, in label order, no training.

    The class -> ImageNet index mapping comes from `train_path`'s imagenet_index.json (ingest
    with --class-map <classes.tsv>). Scores val top-1 in this process at cfg.image_size (the
    held-out view), then writes out_dir/teacher.pt (arch imagenet_subset, extra.norm 'symmetric'
    for efficientnet_lite0, 'imagenet' for resnet18) and out_dir/teacher.json with the trained
    kind's keys (0 epochs). A rerun with the same settings and data returns the saved result.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    num_classes = num_classes_of(train_path, val_path)
    class_map = datasets.load_class_map(train_path)
    indices = dataset_imagenet_indices(train_path, class_map)
    if indices is None:
        raise DataError(f"teacher.kind=imagenet_subset needs each class's ImageNet-1K index, but "
                        f"{train_path} has no {IMAGENET_INDEX_FILE}: ingest it with "
                        "--class-map <classes.tsv>")
    if len(indices) != num_classes:
        raise DataError(f"{train_path}: {len(indices)} classes in its class map but the sets have "
                        f"{num_classes}; ingest val with the train set's class map")
    norm = "symmetric" if cfg.imagenet_arch == "efficientnet_lite0" else "imagenet"
    settings = {**{k: to_dict(cfg)[k] for k in _SUBSET_SETTINGS}, "norm": norm}
    paths = [str(Path(train_path).resolve()), str(Path(val_path).resolve())]
    prev_file = out_dir / TEACHER_JSON
    if prev_file.is_file():
        prev = json.loads(prev_file.read_text())
        changed = changed_settings(prev.get("settings", {}), settings, (), "teacher.")
        if changed:
            raise ConfigError(f"{out_dir} holds a teacher with other settings ({changed}); "
                              "use a new out_dir")
        if [prev["train_path"], prev["val_path"]] == paths and (out_dir / TEACHER_FILE).is_file():
            log(f"[teacher] {out_dir / TEACHER_FILE} is already built "
                f"(val top-1 {prev['val_top1']:.2f}%)")
            return {**prev, "wall_s": 0.0}
    device = torch.device("cuda" if cfg.use_gpu and torch.cuda.is_available() else "cpu")
    pretrained = cfg.imagenet_arch == "efficientnet_lite0" and not cfg.imagenet_weights
    model = ImageNetSubset(indices, base=cfg.imagenet_arch, image_size=cfg.image_size,
                           pretrained=pretrained, weights=cfg.imagenet_weights)
    model = model.to(device).eval()
    x_val, y_val = load_split(str(val_path), cfg.image_size, num_classes, device, "eval")
    t_eval = time.perf_counter()
    with torch.inference_mode():  # evaluate_counts keeps no graph then: 256 images at 224 px
        top1 = val_top1(model, x_val, y_val, 0, 1, device, norm)
    eval_s = time.perf_counter() - t_eval
    model_kwargs = {"base": cfg.imagenet_arch, "indices": indices}
    save_checkpoint(out_dir / TEACHER_FILE, model, "imagenet_subset", num_classes, cfg.image_size,
                    extra={"val_top1": top1, "epoch": 0, "norm": norm}, model_kwargs=model_kwargs)
    wall = time.perf_counter() - t0
    info = {
        "kind": cfg.kind, "arch": "imagenet_subset", "base": cfg.imagenet_arch,
        "imagenet_indices": indices, "num_classes": num_classes, "image_size": cfg.image_size,
        "norm": norm, "val_top1": round(top1, 3), "best_val_top1": round(top1, 3),
        "val_images": len(y_val), "val_s": round(eval_s, 2), "epochs_done": 0, "epochs": 0,
        "complete": True, "resumed_from_epoch": 0, "epochs_this_call": 0, "wall_s": round(wall, 2),
        "train_s": 0.0, "workers": 0, "use_gpu": device.type == "cuda",
        "checkpoint": str(out_dir / TEACHER_FILE), "train_path": paths[0], "val_path": paths[1],
        "config": to_dict(cfg), "model_kwargs": model_kwargs, "settings": settings, "history": [],
    }
    write_json(out_dir / TEACHER_JSON, info)
    log(f"[teacher] {cfg.imagenet_arch} ImageNet head restricted to {num_classes} classes "
        f"(no training): val top-1 {top1:.2f}% on {len(y_val)} images at {cfg.image_size} px "
        f"({eval_s:.1f} s) -> {out_dir / TEACHER_FILE}")
    return info


def teacher_command(cmd: TeacherCommand, log: Callable[[str], None] = print) -> int:
    """`dc3ray teacher`: train (or resume) and print the result."""
    with run_logs(log_file(cmd.out)):
        info = train_teacher(cmd.teacher, cmd.data, cmd.val, cmd.out, stop_after=cmd.stop_after,
                             log=log)
    log(json.dumps({k: info[k] for k in ("val_top1", "best_val_top1", "epochs_done", "wall_s",
                                        "checkpoint")}, indent=2))
    return 0
