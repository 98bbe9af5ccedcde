"""`dc3ray finetune-diffusion`: LoRA on a Stable Diffusion UNet over a condensed set, as a Ray
Train job; checkpoints adapter + optimizer, a rerun on the same out resumes.

The maths lives in dc3ray.core.lora; `_lora_loop` is the only Ray-aware part. Writes
out/lora/pytorch_lora_weights.safetensors (diffusers LoRA format), out/finetune.json, lora_run/
(Ray Train checkpoints) and one MLflow run. Paths must be on storage every node sees.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import ray
import ray.train
import torch

from ..config import FinetuneConfig
from ..core import datasets
from ..core.atomic import atomic_dir, write_json
from ..core.lora import LORA_WEIGHTS_FILE, resolve_base
from ..errors import ConfigError, DataError
from ..logs import log_file, run_logs
from .raytrain import (
    STATE_FILE,
    all_sum,
    changed_settings,
    check_train_v2,
    fit,
    logger,
    worker_context,
    worker_cpus,
    worker_logging,
)
from .resources import cuda_available_in_cluster, init_ray
from .tracking import log_run

LORA_RUN = "lora_run"
LORA_DIR = "lora"
FINETUNE_JSON = "finetune.json"
EXPERIMENT = "dc3ray-generative"

# Settings a resumed fine-tuning run may change: they do not alter what a step computes.
_RESUMABLE_CHANGES = ("steps", "workers", "use_gpu", "checkpoint_every", "log_every")


def _autocast_dtype(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or mixed_precision == "no":
        return None
    if mixed_precision == "fp16":
        return torch.float16
    if mixed_precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _lora_loop(config: dict) -> dict:
    from ..core import lora
    from ..core.models import unwrap

    worker_logging()
    s = config["settings"]
    rank, world, device = worker_context(config)
    # Load and add the adapter on CPU: the adapter init then uses the seeded CPU generator.
    pipe = lora.load_text2img(s["base"], "cpu", dtype=torch.float32)
    params = lora.add_lora(pipe.unet, s["rank"], s["alpha"], s["seed"])
    pipe.to(device)
    images, labels, _ = datasets.decode_images(datasets.load_table(s["condensed"]), s["resolution"])
    data = lora.prepare_training_data(pipe, images, labels, config["class_names"], s["resolution"],
                                      device, s["template"])
    pipe.vae.to("cpu")            # frozen parts are done: free the accelerator for the UNet
    pipe.text_encoder.to("cpu")
    unet = pipe.unet
    optimizer = lora.lora_optimizer(params, s["lr"], s["weight_decay"])
    start, history, state = 0, [], None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
        changed = changed_settings(state["settings"], s, _RESUMABLE_CHANGES)
        if changed:
            raise ConfigError(f"{config['out_dir']} holds a fine-tuning run with other settings ({changed}); "
                             "rerun with the same settings to resume, or use a new out_dir")
        lora.set_lora_state_dict(unet, state["adapter"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = int(state["step"]), list(state["history"])
        if rank == 0:
            logger.info(f"[finetune] resuming from step {start}/{s['steps']}")
    model = ray.train.torch.prepare_model(unet)
    scheduler = lora.noise_scheduler(pipe)
    amp = _autocast_dtype(config["mixed_precision"], device)
    stop = s["steps"] if config["stop_after"] is None else min(s["steps"], start + config["stop_after"])
    t0 = time.perf_counter()
    for step in range(start, stop):
        loss = lora.lora_step(model, scheduler, data, optimizer, step, s["seed"], s["batch_size"],
                              rank, world, amp)
        loss = all_sum([loss], device)[0] / world
        done = step + 1
        history.append([done, round(loss, 6)])
        if rank == 0 and (done % s["log_every"] == 0 or done == stop):
            logger.info(f"[finetune] step {done}/{s['steps']} loss {loss:.4f} "
                        f"({(done - start) / (time.perf_counter() - t0):.2f} steps/s)")
        if done % s["checkpoint_every"] and done != stop:
            continue
        metrics = {"step": done, "loss": loss}
        if rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                lora.save_lora(unwrap(model), Path(tmp) / LORA_DIR)
                torch.save({"step": done, "settings": s, "history": history,
                            "adapter": lora.lora_state_dict(unwrap(model)),
                            "optimizer": optimizer.state_dict()}, Path(tmp) / STATE_FILE)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)
    return {"start_step": start, "end_step": max(start, stop), "train_s": round(time.perf_counter() - t0, 3)}


def _settings(cfg: FinetuneConfig) -> dict:
    """What a step computes from (a resumed run must match it), with absolute paths."""
    base = resolve_base(cfg.base)
    return {"base": str(Path(base).resolve()) if Path(base).exists() else base,
            "condensed": str(Path(cfg.condensed).resolve()), "steps": cfg.steps, "lr": cfg.lr,
            "rank": cfg.rank, "alpha": cfg.alpha, "batch_size": cfg.batch_size,
            "resolution": cfg.resolution, "seed": cfg.seed, "template": cfg.template,
            "weight_decay": cfg.weight_decay, "checkpoint_every": cfg.checkpoint_every,
            "log_every": cfg.log_every}


def _class_names(condensed: str) -> tuple[dict, list[str]]:
    class_map = datasets.load_class_map(condensed)
    names = [n for n, _ in sorted(class_map.items(), key=lambda kv: kv[1])]
    if [class_map[n] for n in names] != list(range(len(names))):
        raise DataError(f"class map of {condensed} is not 0..C-1 ({class_map}); re-ingest the set")
    return class_map, names


def _finished(out_dir: Path, settings: dict, steps: int, log) -> dict | None:
    """The finished run in out_dir, if there is one; ConfigError if it has other settings."""
    import json
    prev_file = out_dir / FINETUNE_JSON
    if not prev_file.is_file():
        return None
    prev = json.loads(prev_file.read_text())
    changed = changed_settings(prev.get("settings", {}), settings, _RESUMABLE_CHANGES)
    if changed:
        raise ConfigError(f"{out_dir} holds a fine-tuning run with other settings ({changed}); "
                          "rerun with the same settings to resume, or use a new out")
    if prev.get("steps_done", 0) >= steps and (out_dir / LORA_DIR / LORA_WEIGHTS_FILE).is_file():
        log(f"[finetune] {out_dir / LORA_DIR} is already trained ({prev['steps_done']} steps)")
        return {**prev, "steps_this_call": 0, "resumed_from_step": prev["steps_done"], "wall_s": 0.0}
    return None


def finetune_diffusion(cfg: FinetuneConfig, *, cpus_per_worker: float | None = None,
                       experiment: str = EXPERIMENT, log: Callable[[str], None] = print) -> dict:
    """LoRA-fine-tune the UNet of cfg.base on the image set cfg.condensed, prompts cfg.template
    per class, as a Ray Train job of cfg.workers DDP workers (GPUs when cfg.use_gpu; None = when
    the cluster has them). Images are resized to cfg.resolution; cfg.batch_size is the global batch.

    A rerun on the same cfg.out resumes from the latest checkpoint (settings other than steps /
    workers / use_gpu / checkpoint_every / log_every must be unchanged); cfg.stop_after runs at
    most that many steps in this call. Writes out/lora/ and out/finetune.json, logs one MLflow
    run; returns the finetune.json dict.
    """
    check_train_v2()
    out_dir = Path(cfg.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = _settings(cfg)
    class_map, class_names = _class_names(settings["condensed"])
    done = _finished(out_dir, settings, cfg.steps, log)
    if done is not None:
        return done
    init_ray()
    use_gpu = cuda_available_in_cluster() if cfg.use_gpu is None else cfg.use_gpu
    cpus_per_worker = worker_cpus(cpus_per_worker, cfg.workers, use_gpu, "finetune", log)
    config = {"settings": settings, "class_names": class_names, "out_dir": str(out_dir),
              "mixed_precision": cfg.mixed_precision, "stop_after": cfg.stop_after}
    result, wall = fit(_lora_loop, config, workers=cfg.workers, use_gpu=use_gpu,
                       cpus_per_worker=cpus_per_worker, name=LORA_RUN, storage=out_dir,
                       keep_checkpoints=2)
    if result.checkpoint is None:
        raise RuntimeError(f"fine-tuning run in {out_dir} produced no checkpoint (stop_after=0?)")
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
        with atomic_dir(out_dir / LORA_DIR, overwrite=True) as tmp:
            (tmp / LORA_WEIGHTS_FILE).write_bytes((Path(d) / LORA_DIR / LORA_WEIGHTS_FILE).read_bytes())
    span = result.return_value or {"start_step": state["step"], "end_step": state["step"], "train_s": 0.0}
    history = state["history"]
    info = {"settings": settings, "class_map": class_map, "steps_done": int(state["step"]),
            "steps": cfg.steps, "complete": int(state["step"]) >= cfg.steps,
            "resumed_from_step": span["start_step"], "steps_this_call": span["end_step"] - span["start_step"],
            "final_loss": history[-1][1] if history else None,
            "mean_loss_last_10": float(np.mean([h[1] for h in history[-10:]])) if history else None,
            "workers": cfg.workers, "use_gpu": bool(use_gpu), "mixed_precision": cfg.mixed_precision,
            "num_images": int(datasets.load_table(settings["condensed"]).num_rows),
            "wall_s": round(wall, 2), "train_s": span.get("train_s"), "lora": str(out_dir / LORA_DIR),
            "history": history}
    info["mlflow"] = log_run(
        out_dir, experiment, f"finetune-r{cfg.rank}-{cfg.steps}steps",
        params={**{f"finetune.{k}": v for k, v in settings.items()}, "workers": cfg.workers,
                "use_gpu": bool(use_gpu), "mixed_precision": cfg.mixed_precision},
        metrics={"steps_done": info["steps_done"], "wall_s": wall, "final_loss": info["final_loss"]},
        series={"loss": [(int(st), float(v)) for st, v in history]})
    write_json(out_dir / FINETUNE_JSON, info)
    log(f"[finetune] {info['steps_done']}/{cfg.steps} steps (from {span['start_step']}), final loss "
        f"{info['final_loss']} -> {out_dir / LORA_DIR} ({wall:.1f} s)")
    return info


def finetune_command(cfg: FinetuneConfig, log: Callable[[str], None] = print) -> int:
    """`dc3ray finetune-diffusion`."""
    with run_logs(log_file(cfg.out)):
        finetune_diffusion(cfg, log=log)
    return 0
