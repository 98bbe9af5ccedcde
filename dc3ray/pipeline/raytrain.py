"""The Ray Train adapter shared by teacher training, student evaluation and LoRA fine-tuning:
fit a loop on N workers (or in this process), the worker's rank / device, CPUs per worker,
the "may this run resume" check, and copying a file out of the latest checkpoint.

Loops call these inside workers; nothing here knows what is trained. Ray is imported where it
is used: a loop run in this process (fit with workers=0, or benchmarks/gpu_student.py on a
machine without Ray) needs only torch and dc3ray.core.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch

from ..core import datasets
from ..core.models import unwrap
from ..core.seeding import derive_seed
from ..core.training import evaluate_counts, norm_stats
from ..errors import ConfigError, DataError

# Worker-side progress goes through logging: Ray Train tees print() into its logger and the
# console, so prints show twice in the driver output.
logger = logging.getLogger("dc3ray.train")


def worker_logging() -> None:
    """Show INFO progress lines from inside Ray Train workers (forwarded to the driver)."""
    if not any(getattr(h, "_dc3ray", False) for h in logger.handlers):
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(message)s"))
        h._dc3ray = True
        logger.addHandler(h)
        logger.setLevel(logging.INFO)
        logger.propagate = False


# Set in a loop's config when fit() runs it in this process instead of on Ray Train workers.
IN_PROCESS = "in_process"


# Training crops cover >= 61% of a side (at the default RRC scale >= 0.5, aspect <= 4/3) and
# are resized to `size`: pixels beyond ~2 x size are averaged away, so none are kept (memory).
STORED_CAP = 2


def load_split(path: str, size: int, num_classes: int, device: torch.device, view: str = "resize"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, H, W, 3) images and int64 labels of an image set, on `device`. view: 'resize'
    (every image resized to size x size), 'stored' (its stored resolution, longer side capped
    at STORED_CAP x size: datasets.decode_stored) or 'eval' (the held-out view at size:
    datasets.decode_eval)."""
    decode = {"resize": datasets.decode_images, "eval": datasets.decode_eval,
              "stored": lambda t, s: datasets.decode_stored(t, STORED_CAP * s)}[view]
    images, labels, _ = decode(datasets.load_table(path), size)
    if len(images) == 0:
        raise DataError(f"image set {path} holds no images")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"image set {path} has labels in [{labels.min()}, {labels.max()}] but the "
                         f"model has {num_classes} classes; ingest it with the training class map")
    return torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device)



def loop_inputs(config: dict, size: int, train_key: str, train_view: str = "resize"
                ) -> SimpleNamespace:
    """What every training loop starts with, inside its worker: logging, rank / world / device,
    normalisation and the two image sets: config[train_key] as `train_view` (see load_split)
    and config["val_path"] as the held-out view at `size`."""
    worker_logging()
    rank, world, device = worker_context(config)
    mean, std = norm_stats(config["norm"])
    x, y = load_split(config[train_key], size, config["num_classes"], device, train_view)
    x_val, y_val = load_split(config["val_path"], size, config["num_classes"], device, "eval")
    return SimpleNamespace(rank=rank, world=world, device=device, norm=config["norm"], mean=mean,
                           std=std, num_classes=config["num_classes"], x=x, y=y, x_val=x_val,
                           y_val=y_val)


def worker_context(config: dict) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this loop: a Ray Train worker's, or this process's."""
    if config.get(IN_PROCESS):
        return 0, 1, torch.device("cuda" if config["use_gpu"] else "cpu")
    import ray.train.torch
    ctx = ray.train.get_context()
    return ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device()


def prepare_model(model: torch.nn.Module, config: dict, device: torch.device) -> torch.nn.Module:
    """On Ray Train workers: DDP-wrap and move (prepare_model); in this process: move."""
    if config.get(IN_PROCESS):
        return model.to(device)
    import ray.train.torch
    return ray.train.torch.prepare_model(model)


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum numbers over workers (no-op for one worker)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def val_top1(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, rank: int,
              world: int, device: torch.device, norm: str) -> float:
    # Each worker scores its slice; the bare module avoids DDP collectives inside eval.
    mean, std = norm_stats(norm)
    correct, total = evaluate_counts(unwrap(model), images[rank::world], labels[rank::world],
                                     device, mean=mean, std=std)
    correct, total = all_sum([correct, total], device)
    return 100.0 * correct / max(total, 1)


def seeded_generator(*parts: Any) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


def check_train_v2() -> None:
    from ray.train.v2._internal.constants import is_v2_enabled
    if not is_v2_enabled():
        raise ConfigError("dc3ray needs Ray Train V2 (the Ray 2.60 default): unset "
                          "RAY_TRAIN_V2_ENABLED or set it to 1")


def _auto_cpus_per_worker(cpus_per_worker: float | None, workers: int) -> float:
    """None -> an even share of the cluster's CPUs per worker (at most 8), at least 1.

    Ray sets OMP_NUM_THREADS from the worker's CPU count, so a 1-CPU worker trains with one
    thread: on a 2-core laptop that halves the speed of a single-worker run.
    """
    if cpus_per_worker is not None:
        return float(cpus_per_worker)
    import ray
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
    import ray
    have = ray.cluster_resources()
    need_cpu = workers * cpus_per_worker
    if have.get("CPU", 0) < need_cpu or (use_gpu and have.get("GPU", 0) < workers):
        log(f"[warning] {where}.workers={workers} x {cpus_per_worker} CPU"
            f"{' + 1 GPU' if use_gpu else ''} exceeds this cluster ({have.get('CPU', 0):g} CPU, "
            f"{have.get('GPU', 0):g} GPU): training waits until resources appear; lower "
            f"{where}.workers or cpus_per_worker")


def worker_cpus(cpus_per_worker: float | None, workers: int, use_gpu: bool, where: str,
                log: Callable[[str], None]) -> float:
    """CPUs per Ray Train worker (see _auto_cpus_per_worker), with a warning when the cluster
    cannot place the group."""
    cpus = _auto_cpus_per_worker(cpus_per_worker, workers)
    _warn_if_unschedulable(workers, cpus, use_gpu, where, log)
    return cpus


def fit(loop: Callable[[dict], Any], config: dict, *, workers: int, use_gpu: bool,
        cpus_per_worker: float, name: str, storage: str | Path,
        keep_checkpoints: int | None = None) -> tuple[Any, float]:
    """One Ray Train run of `loop` on `workers` DDP workers; returns (Result, wall seconds).

    workers=0 calls `loop` in this process instead (no Ray Train, so no checkpoints: only loops
    that never resume may be run so). Not Ray Train's own local mode: that one refuses ray.train
    calls inside a Tune trial, where sweeps train their students.

    A run with the same name and storage path resumes from its latest checkpoint (Ray Train V2),
    which is how teacher and fine-tuning runs continue after an interruption.
    """
    t0 = time.perf_counter()
    if workers == 0:
        value = loop({**config, IN_PROCESS: True, "use_gpu": use_gpu})
        return SimpleNamespace(return_value=value), time.perf_counter() - t0
    import ray.train
    from ray.train.torch import TorchTrainer

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


def changed_settings(old: dict, new: dict, resumable: tuple[str, ...], prefix: str = "") -> str:
    """The settings that differ between a run on disk and this call, except those a resumed run
    may change; '' when it may resume."""
    return ", ".join(f"{prefix}{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                     if k not in resumable and old.get(k) != new.get(k))


def num_classes_of(*paths: str | Path) -> int:
    """Classes of the first set; every other set's class map must agree with it."""
    maps = [(p, datasets.load_class_map(p)) for p in paths]
    ref_path, ref = maps[0]
    for p, m in maps[1:]:
        bad = [n for n, i in m.items() if n in ref and ref[n] != i]
        if bad:
            raise DataError(f"class maps of {ref_path} and {p} disagree on {bad[:3]}; ingest "
                            f"{p} with --class-map {ref_path}/class_map.json")
    return max(max(m.values()) for _, m in maps) + 1


def copy_from_checkpoint(result: Any, name: str, dest: Path) -> dict:
    """Copy file `name` of the run's latest checkpoint to `dest` (atomically) and return the
    checkpoint's state.pt. Raises when the run saved no checkpoint."""
    if result.checkpoint is None:
        raise RuntimeError(f"the Ray Train run for {dest.parent} produced no checkpoint "
                           "(stop_after=0?)")
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(Path(d) / name, tmp)
        os.replace(tmp, dest)
    return state


STATE_FILE = "state.pt"
