"""`dc3ray generate`: sample N images per class from a base or LoRA-fine-tuned pipeline as Ray
tasks, and score them against real images with FID / KID.

The maths lives in dc3ray.core.lora and dc3ray.core.fid; `_generate_chunk` and `_compare_task`
are the only Ray tasks. Writes out/generated/ (Parquet shards, GENERATED_SCHEMA), samples.png,
manifest.json and one MLflow run. Paths must be on storage every node sees.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import ray
import torch

from ..config import GenerateConfig
from ..core import datasets, schema
from ..core.atomic import write_json
from ..core.lora import LORA_WEIGHTS_FILE, resolve_base
from ..core.shards import write_shards_atomic
from ..errors import ConfigError, DataError
from ..logs import log_file, run_logs
from .finetune import EXPERIMENT, FINETUNE_JSON
from .resources import cuda_available_in_cluster, init_ray
from .tracking import log_run

GENERATED_DIR = "generated"
MANIFEST_JSON = "manifest.json"
SAMPLES_PNG = "samples.png"
PROMPT = "prompt"
SEED = "seed"

# Generated rows: the image columns of every stage plus the prompt and the per-image seed.
GENERATED_SCHEMA = pa.schema(list(schema.IMAGE_SCHEMA) + [
    pa.field(PROMPT, pa.string(), nullable=False),
    pa.field(SEED, pa.int64(), nullable=False),
])


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
    raise ConfigError("generate: no class map; pass class_map (a dict, a class_map.json or an image set), "
                     "a lora from finetune-diffusion, or a real set")


def _save_samples(table: pa.Table, path: Path, per_row: int = 10) -> None:
    from ..core.grid import save_sample_grid
    from ..core.imageio import decode_rgb

    labels = np.asarray(table.column(schema.LABEL).to_pylist())
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_row] for c in np.unique(labels)])
    images = np.stack([decode_rgb(table.column(schema.IMAGE)[int(i)].as_py()) for i in keep])
    save_sample_grid(images, labels[keep], path, per_row)


def _compare_task(set_a: str, set_b: str, model_path: str | None, batch_size: int, cache_dir: str | None,
                  kid_seed: int) -> dict:
    from ..core.fid import compare_sets

    return compare_sets(set_a, set_b, model_path=model_path, batch_size=batch_size, kid_seed=kid_seed,
                        cache_dir=cache_dir)


def _inputs(cfg: GenerateConfig) -> tuple[str, str | None, str | None]:
    """(base, lora folder, real set) as absolute paths, checked."""
    base = resolve_base(cfg.base)
    base = str(Path(base).resolve()) if Path(base).exists() else base
    lora_dir = str(Path(cfg.lora).resolve()) if cfg.lora else None
    if lora_dir and not (Path(lora_dir) / LORA_WEIGHTS_FILE).is_file():
        raise DataError(f"generate: {lora_dir} holds no {LORA_WEIGHTS_FILE}; pass the lora/ folder "
                        "written by finetune-diffusion")
    real = str(Path(cfg.real).resolve()) if cfg.real else None
    if real and not Path(real).exists():
        raise DataError(f"generate: real set {real} does not exist")
    return base, lora_dir, real


def _sample(cfg: GenerateConfig, base: str, lora_dir: str | None, cmap: dict, use_gpu: bool,
            cpus_per_worker: float) -> tuple[pa.Table, int, float]:
    """All images as a GENERATED_SCHEMA table, the number of tasks used, and the seconds."""
    from ..core.lora import generation_items

    items = generation_items(cmap, cfg.n_per_class)
    task = ray.remote(num_cpus=cpus_per_worker, num_gpus=1 if use_gpu else 0)(_generate_chunk)
    chunks = [c.tolist() for c in np.array_split(np.arange(len(items)), min(cfg.workers, len(items)))
              if len(c)]
    t0 = time.perf_counter()
    parts = ray.get([task.remote(base, lora_dir, [items[i] for i in c], cfg.seed, cfg.size,
                                 cfg.steps, cfg.guidance, cfg.batch_size, cfg.template)
                     for c in chunks])
    seconds = time.perf_counter() - t0
    rows = {k: [v for p in parts for v in p[k]] for k in ("images", "labels", "keys", "prompts", "seeds")}
    h, w = parts[0]["shape"]
    names = {v: k for k, v in cmap.items()}
    n = len(rows["keys"])
    table = pa.table({
        schema.KEY: rows["keys"], schema.LABEL: rows["labels"],
        schema.CLASS_NAME: [names[lab] for lab in rows["labels"]], schema.IMAGE: rows["images"],
        schema.HEIGHT: [h] * n, schema.WIDTH: [w] * n, PROMPT: rows["prompts"],
        SEED: rows["seeds"]}, schema=GENERATED_SCHEMA)
    return table, len(chunks), seconds


def generate_images(cfg: GenerateConfig, *, class_map: dict | None = None,
                    cpus_per_worker: float = 1.0, fid_batch_size: int = 64,
                    fid_cache_dir: str | Path | None = None, experiment: str = EXPERIMENT,
                    log: Callable[[str], None] = print) -> dict:
    """Sample cfg.n_per_class images per class from cfg.base (+ the LoRA folder cfg.lora) with
    prompts cfg.template, split over cfg.workers Ray tasks (a GPU each when cfg.use_gpu; None =
    when the cluster has GPUs). Per-image noise comes from (seed, class, index), so the images do
    not depend on how the work is split (up to kernel rounding).

    Class map: `class_map` (a dict), else cfg.class_map (class_map.json or an image set), else
    the LoRA run's, else cfg.real's. With cfg.real, FID / KID of generated vs real (clean-fid
    clean mode, a Ray task) go into manifest.json and MLflow. Writes out/generated/,
    out/samples.png, out/manifest.json (merged into an existing one); returns its "generate" entry.
    """
    base, lora_dir, real = _inputs(cfg)
    cmap = _class_map_for(class_map if class_map is not None else cfg.class_map, lora_dir, real)
    out_dir = Path(cfg.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    init_ray()
    use_gpu = cuda_available_in_cluster() if cfg.use_gpu is None else cfg.use_gpu
    table, tasks, gen_s = _sample(cfg, base, lora_dir, cmap, use_gpu, cpus_per_worker)
    gen_path = out_dir / GENERATED_DIR
    write_shards_atomic(table, gen_path, extra_files={schema.CLASS_MAP_FILE: cmap})
    _save_samples(table, out_dir / SAMPLES_PNG)
    n = table.num_rows
    entry: dict[str, Any] = {
        "base": base, "lora": lora_dir, "n_per_class": cfg.n_per_class, "num_classes": len(cmap),
        "num_images": n, "seed": cfg.seed, "size": [table.column(schema.HEIGHT)[0].as_py(),
                                                    table.column(schema.WIDTH)[0].as_py()],
        "steps": cfg.steps, "guidance": cfg.guidance, "batch_size": cfg.batch_size,
        "template": cfg.template, "workers": tasks, "use_gpu": bool(use_gpu),
        "generate_s": round(gen_s, 3), "images_per_s": round(n / max(gen_s, 1e-9), 4),
        "generated": str(gen_path), "class_map": cmap}
    log(f"[generate] {n} images ({len(cmap)} classes x {cfg.n_per_class}) -> {gen_path} "
        f"({gen_s:.1f} s, {entry['images_per_s']:.2f} img/s)")
    metrics = {"num_images": n, "generate_s": gen_s, "images_per_s": entry["images_per_s"]}
    if real:
        fid_task = ray.remote(num_cpus=cpus_per_worker, num_gpus=1 if use_gpu else 0)(_compare_task)
        entry["fid"] = ray.get(fid_task.remote(str(gen_path), real, cfg.fid_model, fid_batch_size,
                                               str(fid_cache_dir) if fid_cache_dir else None, cfg.seed))
        log(f"[generate] FID {entry['fid']['fid']:.3f}, KID {entry['fid']['kid']:.5f} vs {real} "
            f"({entry['fid']['n_a']} vs {entry['fid']['n_b']} images, {entry['fid']['seconds']:.1f} s)")
        metrics.update({"fid": entry["fid"]["fid"], "kid": entry["fid"]["kid"],
                        "fid_s": entry["fid"]["seconds"]})
    entry["mlflow"] = log_run(
        out_dir, experiment, f"generate-{'lora' if lora_dir else 'base'}-{cfg.n_per_class}pc",
        params={f"generate.{k}": v for k, v in entry.items()
                if k not in ("class_map", "generate_s", "images_per_s", "fid")} | {"real": real},
        metrics=metrics, artifacts=[out_dir / SAMPLES_PNG])
    _merge_manifest(out_dir / MANIFEST_JSON, {"generate": entry})
    return entry


def _merge_manifest(path: Path, update: dict) -> None:
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update(update)
    write_json(path, data)


def generate_command(cfg: GenerateConfig, log: Callable[[str], None] = print) -> int:
    """`dc3ray generate`."""
    with run_logs(log_file(cfg.out)):
        generate_images(cfg, log=log)
    return 0
