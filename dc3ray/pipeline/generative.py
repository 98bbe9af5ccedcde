"""The generative side on Ray (DESIGN.md step 5): LoRA fine-tuning on a condensed set as a Ray Train
job, class-prompted sampling as Ray tasks, FID / KID of generated vs real images.

The maths lives in `dc3ray.core.lora` and `dc3ray.core.fid`; `_lora_loop` is the only Ray Train
part and `_generate_chunk` / `_compare_task` the only Ray tasks. The base model, the condensed
set, the real set and `out_dir` are read by workers: on a multi-node cluster they must be on
storage every node sees.

Outputs:
- finetune_diffusion(out_dir): lora/pytorch_lora_weights.safetensors (diffusers LoRA format),
  finetune.json, lora_run/ (Ray Train checkpoints: adapter + optimizer state; a rerun on the same
  out_dir resumes from the latest), one MLflow run.
- generate_images(out_dir): generated/ (Parquet shards, IMAGE_SCHEMA + prompt + seed columns,
  class_map.json), samples.png, manifest.json (settings, counts, timings, FID/KID against
  `real`), one MLflow run.
- fid_command(out_json): {fid, kid, n_a, n_b, seconds, ...}.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import ray
import ray.train
import torch

from ..core import datasets, schema
from ..core.lora import LORA_WEIGHTS_FILE, PROMPT_TEMPLATE, resolve_base
from ..core.shards import atomic_dir, write_shards_atomic
from .resources import cuda_available_in_cluster, init_ray
from .tracking import tracking_uri
from .train import (_all_sum, _changed, _check_v2, _fit, _worker, _worker_cpus, _worker_logging,
                    _write_json)

logger = logging.getLogger("dc3ray.pipeline.train")   # the logger _worker_logging forwards

LORA_RUN = "lora_run"
LORA_DIR = "lora"
STATE_FILE = "state.pt"
FINETUNE_JSON = "finetune.json"
GENERATED_DIR = "generated"
MANIFEST_JSON = "manifest.json"
SAMPLES_PNG = "samples.png"
EXPERIMENT = "dc3ray-generative"
PROMPT = "prompt"
SEED = "seed"

# Generated rows: the image columns of every stage plus the prompt and the per-image seed.
GENERATED_SCHEMA = pa.schema(list(schema.IMAGE_SCHEMA) + [
    pa.field(PROMPT, pa.string(), nullable=False),
    pa.field(SEED, pa.int64(), nullable=False),
])

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


# --------------------------------------------------------------------------------------------
# Fine-tuning (Ray Train)
# --------------------------------------------------------------------------------------------

def _lora_loop(config: dict) -> dict:
    from ..core import lora
    from ..core.models import unwrap

    _worker_logging()
    s = config["settings"]
    rank, world, device = _worker(config)
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
        changed = _changed(state["settings"], s, _RESUMABLE_CHANGES)
        if changed:
            raise ValueError(f"{config['out_dir']} holds a fine-tuning run with other settings ({changed}); "
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
        loss = _all_sum([loss], device)[0] / world
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


def finetune_diffusion(condensed: str | Path, base: str | Path, out_dir: str | Path, *, steps: int = 1000,
                       lr: float = 1e-4, rank: int = 4, alpha: float | None = None, batch_size: int = 8,
                       resolution: int = 512, workers: int = 1, use_gpu: bool | None = None, seed: int = 0,
                       checkpoint_every: int = 100, template: str = PROMPT_TEMPLATE,
                       weight_decay: float = 1e-2, mixed_precision: str = "auto",
                       cpus_per_worker: float | None = None, stop_after: int | None = None,
                       log_every: int = 50, experiment: str = EXPERIMENT,
                       log: Callable[[str], None] = print) -> dict:
    """LoRA-fine-tune the UNet of the Stable Diffusion pipeline `base` (local folder or hub id) on
    the image set `condensed` (shards or ImageFolder), prompts `template` per class, as a Ray Train
    job of `workers` DDP workers (one GPU each when use_gpu; None = GPUs if the cluster has them).

    Images are resized to resolution x resolution (512 for SD 1.x); `batch_size` is the global
    batch. Checkpoints (adapter + optimizer) every `checkpoint_every` steps and at the end; a rerun
    on the same out_dir resumes from the latest (settings other than steps / workers / use_gpu /
    checkpoint_every / log_every must be unchanged); `stop_after` runs at most that many steps in
    this call. mixed_precision: auto (bf16 autocast on CUDA when supported), bf16, fp16, no.

    Writes out_dir/lora/ (load with generate_images(lora=...) or pipe.load_lora_weights) and
    out_dir/finetune.json; logs one MLflow run. Returns the finetune.json dict.
    """
    _check_v2()

    if steps < 1 or checkpoint_every < 1 or batch_size < 1 or log_every < 1 or workers < 1:
        raise ValueError("finetune: steps, checkpoint_every, batch_size, log_every and workers must "
                         "be >= 1 (fine-tuning resumes from Ray Train checkpoints: no in-process "
                         "mode)")
    if batch_size < workers:
        raise ValueError(f"finetune: batch_size={batch_size} < workers={workers} leaves a worker without "
                         "images; raise batch_size or lower workers")
    if resolution % 8:
        raise ValueError(f"finetune: resolution={resolution} must be divisible by 8")
    if mixed_precision not in ("auto", "bf16", "fp16", "no"):
        raise ValueError(f"finetune: mixed_precision={mixed_precision!r}; use auto, bf16, fp16 or no")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    base_src = resolve_base(base)
    base_src = str(Path(base_src).resolve()) if Path(base_src).exists() else base_src
    condensed = str(Path(condensed).resolve())
    class_map = datasets.load_class_map(condensed)
    class_names = [n for n, _ in sorted(class_map.items(), key=lambda kv: kv[1])]
    if [class_map[n] for n in class_names] != list(range(len(class_names))):
        raise ValueError(f"class map of {condensed} is not 0..C-1 ({class_map}); re-ingest the set")
    settings = {"base": base_src, "condensed": condensed, "steps": int(steps), "lr": float(lr),
                "rank": int(rank), "alpha": None if alpha is None else float(alpha),
                "batch_size": int(batch_size), "resolution": int(resolution), "seed": int(seed),
                "template": template, "weight_decay": float(weight_decay),
                "checkpoint_every": int(checkpoint_every), "log_every": int(log_every)}
    prev_file = out_dir / FINETUNE_JSON
    if prev_file.is_file():
        prev = json.loads(prev_file.read_text())
        changed = _changed(prev.get("settings", {}), settings, _RESUMABLE_CHANGES)
        if changed:
            raise ValueError(f"{out_dir} holds a fine-tuning run with other settings ({changed}); rerun "
                             "with the same settings to resume, or use a new out_dir")
        if prev.get("steps_done", 0) >= steps and (out_dir / LORA_DIR / LORA_WEIGHTS_FILE).is_file():
            log(f"[finetune] {out_dir / LORA_DIR} is already trained ({prev['steps_done']} steps)")
            return {**prev, "steps_this_call": 0, "resumed_from_step": prev["steps_done"], "wall_s": 0.0}
    init_ray()
    if use_gpu is None:
        use_gpu = cuda_available_in_cluster()
    cpus_per_worker = _worker_cpus(cpus_per_worker, workers, use_gpu, "finetune", log)
    config = {"settings": settings, "class_names": class_names, "out_dir": str(out_dir),
              "mixed_precision": mixed_precision, "stop_after": stop_after}
    result, wall = _fit(_lora_loop, config, workers=workers, use_gpu=use_gpu,
                        cpus_per_worker=cpus_per_worker, name=LORA_RUN, storage=out_dir,
                        keep_checkpoints=2)
    if result.checkpoint is None:
        raise RuntimeError(f"fine-tuning run in {out_dir} produced no checkpoint (stop_after=0?)")
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
        with atomic_dir(out_dir / LORA_DIR, overwrite=True) as tmp:
            shutil.copyfile(Path(d) / LORA_DIR / LORA_WEIGHTS_FILE, tmp / LORA_WEIGHTS_FILE)
    span = result.return_value or {"start_step": state["step"], "end_step": state["step"], "train_s": 0.0}
    history = state["history"]
    info = {"settings": settings, "class_map": class_map, "steps_done": int(state["step"]),
            "steps": int(steps), "complete": int(state["step"]) >= steps,
            "resumed_from_step": span["start_step"], "steps_this_call": span["end_step"] - span["start_step"],
            "final_loss": history[-1][1] if history else None,
            "mean_loss_last_10": float(np.mean([h[1] for h in history[-10:]])) if history else None,
            "workers": workers, "use_gpu": bool(use_gpu), "mixed_precision": mixed_precision,
            "num_images": int(datasets.load_table(condensed).num_rows), "wall_s": round(wall, 2),
            "train_s": span.get("train_s"), "lora": str(out_dir / LORA_DIR), "history": history}
    info["mlflow"] = _mlflow_log(
        out_dir, experiment, f"finetune-r{rank}-{steps}steps",
        params={**{f"finetune.{k}": v for k, v in settings.items()}, "workers": workers,
                "use_gpu": bool(use_gpu), "mixed_precision": mixed_precision},
        metrics={"steps_done": info["steps_done"], "wall_s": wall,
                 **({"final_loss": info["final_loss"]} if history else {})},
        series={"loss": [(int(st), float(v)) for st, v in history]})
    _write_json(out_dir / FINETUNE_JSON, info)
    log(f"[finetune] {info['steps_done']}/{steps} steps (from {span['start_step']}), final loss "
        f"{info['final_loss']} -> {out_dir / LORA_DIR} ({wall:.1f} s)")
    return info


# --------------------------------------------------------------------------------------------
# Generation (Ray tasks) and FID
# --------------------------------------------------------------------------------------------

def _generate_chunk(base: str, lora_dir: str | None, items: list, seed: int, size: int | None, steps: int,
                    guidance: float, batch_size: int, template: str) -> dict:
    """Ray task body: load the pipeline (+ adapter) once, sample `items`, return PNG rows."""
    from ..core import lora
    from ..core.imageio import encode_png

    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = lora.load_text2img(base, device)
    if lora_dir:
        lora.load_lora(pipe, lora_dir)
    out = lora.generate_items(pipe, [tuple(it) for it in items], seed, size, steps, guidance, batch_size,
                              template)
    return {"images": [encode_png(im) for im in out["images"]], "labels": out["labels"].tolist(),
            "keys": out["keys"], "prompts": out["prompts"], "seeds": out["seeds"],
            "shape": list(out["images"].shape[1:3])}


def _class_map_for(class_map: dict | str | Path | None, lora_dir: str | None, real: str | None) -> dict[str, int]:
    if isinstance(class_map, dict):
        return {str(k): int(v) for k, v in class_map.items()}
    if class_map is not None:
        p = Path(class_map)
        if p.is_file() and p.suffix == ".json":
            return {str(k): int(v) for k, v in json.loads(p.read_text()).items()}
        return datasets.load_class_map(p)
    if lora_dir and (Path(lora_dir).parent / FINETUNE_JSON).is_file():
        return json.loads((Path(lora_dir).parent / FINETUNE_JSON).read_text())["class_map"]
    if real:
        return datasets.load_class_map(real)
    raise ValueError("generate: no class map; pass class_map (a dict, a class_map.json or an image set), "
                     "a lora from finetune-diffusion, or a real set")


def generate_images(base: str | Path, out_dir: str | Path, *, lora: str | Path | None = None,
                    n_per_class: int = 10, class_map: dict | str | Path | None = None, seed: int = 0,
                    size: int | None = None, steps: int = 30, guidance: float = 7.5, batch_size: int = 8,
                    template: str = PROMPT_TEMPLATE, workers: int = 1, use_gpu: bool | None = None,
                    cpus_per_worker: float = 1.0, real: str | Path | None = None,
                    fid_model_path: str | Path | None = None, fid_batch_size: int = 64,
                    fid_cache_dir: str | Path | None = None, experiment: str = EXPERIMENT,
                    log: Callable[[str], None] = print) -> dict:
    """Sample n_per_class images per class from `base` (+ the LoRA folder `lora`) with prompts
    `template`, split over `workers` Ray tasks (one GPU each when use_gpu; None = GPUs if the
    cluster has them). Per-image noise comes from (seed, class, index), so the images do not depend
    on how `workers` and `batch_size` split the work (up to kernel rounding).

    class_map: a dict, a class_map.json, or an image set; by default the one the LoRA was trained
    with, else that of `real`. size: generation side (divisible by 8), default the model's own.
    With `real` (shards or ImageFolder), FID / KID of generated vs real (clean-fid clean mode, as a
    Ray task on a GPU when use_gpu) go into manifest.json and MLflow.

    Writes out_dir/generated/ (shards, GENERATED_SCHEMA), out_dir/samples.png and
    out_dir/manifest.json (merged into an existing one); returns the manifest's "generate" entry.
    """
    base_src = resolve_base(base)
    base_src = str(Path(base_src).resolve()) if Path(base_src).exists() else base_src
    lora_dir = str(Path(lora).resolve()) if lora else None
    if lora_dir and not (Path(lora_dir) / LORA_WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"generate: {lora_dir} holds no {LORA_WEIGHTS_FILE}; pass the lora/ folder "
                                "written by finetune-diffusion")
    real = str(Path(real).resolve()) if real else None
    if real and not Path(real).exists():
        raise FileNotFoundError(f"generate: real set {real} does not exist")
    if workers < 1:
        raise ValueError(f"generate: workers={workers} must be >= 1")
    from ..core.lora import generation_items

    cmap = _class_map_for(class_map, lora_dir, real)
    items = generation_items(cmap, n_per_class)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    init_ray()
    if use_gpu is None:
        use_gpu = cuda_available_in_cluster()
    task = ray.remote(num_cpus=cpus_per_worker, num_gpus=1 if use_gpu else 0)(_generate_chunk)
    chunks = [c.tolist() for c in np.array_split(np.arange(len(items)), min(workers, len(items))) if len(c)]
    t0 = time.perf_counter()
    refs = [task.remote(base_src, lora_dir, [items[i] for i in c], seed, size, steps, guidance, batch_size,
                        template) for c in chunks]
    parts = ray.get(refs)
    gen_s = time.perf_counter() - t0
    rows = {k: [v for p in parts for v in p[k]] for k in ("images", "labels", "keys", "prompts", "seeds")}
    h, w = parts[0]["shape"]
    names = {v: k for k, v in cmap.items()}
    table = pa.table({
        schema.KEY: rows["keys"], schema.LABEL: rows["labels"],
        schema.CLASS_NAME: [names[lab] for lab in rows["labels"]], schema.IMAGE: rows["images"],
        schema.HEIGHT: [h] * len(rows["keys"]), schema.WIDTH: [w] * len(rows["keys"]),
        PROMPT: rows["prompts"], SEED: rows["seeds"]}, schema=GENERATED_SCHEMA)
    gen_path = out_dir / GENERATED_DIR
    write_shards_atomic(table, gen_path, extra_files={schema.CLASS_MAP_FILE: cmap})
    _save_samples(table, out_dir / SAMPLES_PNG)
    entry: dict[str, Any] = {
        "base": base_src, "lora": lora_dir, "n_per_class": n_per_class, "num_classes": len(cmap),
        "num_images": len(items), "seed": seed, "size": [h, w], "steps": steps, "guidance": guidance,
        "batch_size": batch_size, "template": template, "workers": len(chunks), "use_gpu": bool(use_gpu),
        "generate_s": round(gen_s, 3), "images_per_s": round(len(items) / max(gen_s, 1e-9), 4),
        "generated": str(gen_path), "class_map": cmap}
    log(f"[generate] {len(items)} images ({len(cmap)} classes x {n_per_class}) -> {gen_path} "
        f"({gen_s:.1f} s, {entry['images_per_s']:.2f} img/s)")
    if real:
        fid_task = ray.remote(num_cpus=cpus_per_worker, num_gpus=1 if use_gpu else 0)(_compare_task)
        entry["fid"] = ray.get(fid_task.remote(str(gen_path), real, fid_model_path, fid_batch_size,
                                               str(fid_cache_dir) if fid_cache_dir else None, seed))
        log(f"[generate] FID {entry['fid']['fid']:.3f}, KID {entry['fid']['kid']:.5f} vs {real} "
            f"({entry['fid']['n_a']} vs {entry['fid']['n_b']} images, {entry['fid']['seconds']:.1f} s)")
    metrics = {"num_images": len(items), "generate_s": gen_s, "images_per_s": entry["images_per_s"]}
    if "fid" in entry:
        metrics.update({"fid": entry["fid"]["fid"], "kid": entry["fid"]["kid"], "fid_s": entry["fid"]["seconds"]})
    entry["mlflow"] = _mlflow_log(
        out_dir, experiment, f"generate-{'lora' if lora_dir else 'base'}-{n_per_class}pc",
        params={f"generate.{k}": v for k, v in entry.items()
                if k not in ("class_map", "generate_s", "images_per_s", "fid")} | {"real": real},
        metrics=metrics, artifacts=[out_dir / SAMPLES_PNG])
    _merge_manifest(out_dir / MANIFEST_JSON, {"generate": entry})
    return entry


def _compare_task(set_a: str, set_b: str, model_path: str | None, batch_size: int, cache_dir: str | None,
                  kid_seed: int) -> dict:
    from ..core.fid import compare_sets

    return compare_sets(set_a, set_b, model_path=model_path, batch_size=batch_size, kid_seed=kid_seed,
                        cache_dir=cache_dir)


def _save_samples(table: pa.Table, path: Path, per_row: int = 10) -> None:
    from ..core.grid import save_sample_grid
    from ..core.imageio import decode_rgb

    labels = np.asarray(table.column(schema.LABEL).to_pylist())
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_row] for c in np.unique(labels)])
    images = np.stack([decode_rgb(table.column(schema.IMAGE)[int(i)].as_py()) for i in keep])
    save_sample_grid(images, labels[keep], path, per_row)


def fid_command(set_a: str | Path, set_b: str | Path, out_json: str | Path | None = None, *,
                model_path: str | Path | None = None, device: str | None = None, batch_size: int = 64,
                kid_seed: int = 0, cache_dir: str | Path | None = None, fid_method: str = "eig",
                log: Callable[[str], None] = print) -> dict:
    """FID and KID between two image sets (shards or ImageFolder trees), in this process (CUDA
    when present, or `device`); writes `out_json` when given. Returns core.fid.compare_sets' dict."""
    from ..core.fid import compare_sets

    for p in (set_a, set_b):
        if not Path(p).exists():
            raise FileNotFoundError(f"fid: image set {p} does not exist")
    res = compare_sets(set_a, set_b, model_path=model_path, device=device, batch_size=batch_size,
                       kid_seed=kid_seed, cache_dir=cache_dir, fid_method=fid_method, log=log)
    if out_json:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        _write_json(Path(out_json), res)
    log(f"[fid] FID {res['fid']:.3f}  KID {res['kid']:.5f}  ({res['n_a']} vs {res['n_b']} images, "
        f"{res['device']}, {res['seconds']:.1f} s)")
    return res


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------

def _merge_manifest(path: Path, update: dict) -> None:
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update(update)
    _write_json(path, data)


def _mlflow_log(out_dir: Path, experiment: str, run_name: str, params: dict, metrics: dict,
                series: dict[str, list[tuple[int, float]]] | None = None,
                artifacts: list[Path] | tuple = ()) -> dict:
    """One MLflow run (MLFLOW_TRACKING_URI, else sqlite:///<out_dir>/mlflow.db)."""
    import os

    import mlflow
    from mlflow.entities import Metric, Param

    uri = tracking_uri(out_dir)
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        loc = None if os.environ.get("MLFLOW_TRACKING_URI") else (out_dir / "mlartifacts").as_uri()
        exp_id = client.create_experiment(experiment, artifact_location=loc)
    else:
        exp_id = exp.experiment_id
    run = client.create_run(exp_id, run_name=run_name)
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


__all__ = ["finetune_diffusion", "generate_images", "fid_command", "GENERATED_SCHEMA"]
