"""Throughput and seeding check of the InstructPix2Pix compensator on a borrowed GPU (or CPU dry run).

Builds the tiny random InstructPix2Pix pipeline (tests/tiny_diffusion.py), then measures:
  core   warm in-process DiffusionCompensator: images/s with 8 images per pipeline call vs one
         image per call, the max pixel difference between the two (fp16 on CUDA, fp32 on CPU),
         and whether a rerun gives identical bytes;
  ray    the whole `compensate_dataset` stage on a local Ray actor pool (actor start and model
         load included), batch_size 8 vs 1.
The tiny model's speed is not Stable Diffusion's; the numbers compare batching and check that
the fp16 CUDA path, the actor pool and the seeding work. Writes gpu_check.json to --out
(default $OUT, else benchmarks/out).

  python benchmarks/gpu_check.py                      # GPU: 64 images, 20 steps, 256 px
  python benchmarks/gpu_check.py --images 16 --steps 2 --size 32   # CPU dry run
  python benchmarks/gpu_check.py --skip-ray --diffusion-cost          # + full-size cost, fp16 on CUDA
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "out"))
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8, help="images per pipeline call in the batched run")
    p.add_argument("--num-actors", type=int, default=1)
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray instance")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"
                                         / "cifar10" / "train"),
                   help="ImageFolder of real images; random images are used when it is missing")
    p.add_argument("--skip-ray", action="store_true", help="only the in-process measurement")
    p.add_argument("--diffusion-cost", action="store_true",
                   help="also run bench_diffusion_cost.py (full-size random InstructPix2Pix) with "
                        "--device cuda (fp16) when CUDA is visible, else cpu; its record goes to --out")
    return p


def source_images(data: str, n: int) -> tuple[np.ndarray, list[str], list[str], str]:
    """n images (uint8 (n, 32, 32, 3) or real sizes), keys, class names and where they came from."""
    from dc3ray.core.imageio import decode_rgb

    root = Path(data)
    if root.is_dir():
        classes = sorted(d for d in root.iterdir() if d.is_dir())
        listing = {}                # one sorted listing per class, not one per image
        files = []
        for i in range(n):          # round-robin over classes
            d = classes[i % len(classes)]
            if d not in listing:
                listing[d] = sorted(d.iterdir())
            files.append(listing[d][i // len(classes)])
        images = np.stack([decode_rgb(f.read_bytes()) for f in files])
        return images, [f"{f.parent.name}/{f.name}" for f in files], [f.parent.name for f in files], str(root)
    # Speed does not depend on content: seeded noise images stand in when no data is mounted.
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return images, [f"synthetic/{i:05d}" for i in range(n)], ["synthetic"] * n, "synthetic"


def write_source_shards(images, keys, class_names, out: Path) -> Path:
    import pyarrow as pa

    from dc3ray.core import schema
    from dc3ray.core.imageio import encode_png
    from dc3ray.core.shards import write_shards_atomic

    names = sorted(set(class_names))
    rows = [{schema.KEY: k, schema.LABEL: names.index(c), schema.CLASS_NAME: c, schema.IMAGE: encode_png(im),
             schema.HEIGHT: im.shape[0], schema.WIDTH: im.shape[1]} for im, k, c in zip(images, keys, class_names)]
    table = pa.Table.from_pylist(rows, schema=schema.IMAGE_SCHEMA)
    class_map = {c: i for i, c in enumerate(names)}
    return write_shards_atomic(table, out, 1000, extra_files={schema.CLASS_MAP_FILE: class_map})


def _sync():
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def core_check(model: Path, images, keys, *, batch: int, steps: int, size: int) -> dict:
    """Warm in-process throughput: `batch` images per pipeline call vs one image per call.

    images: uint8 (N, H, W, 3) with N keys; steps and size as CompensateConfig's. Returns
    {"batch_<b>": {load_s, seconds, images_per_s}, "speedup", "rerun_identical",
    "batched_vs_single": {max_abs_diff, ...}, device, dtype}."""
    import torch

    from dc3ray.config import CompensateConfig
    from dc3ray.core.editing import DiffusionCompensator

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = {"device": device, "dtype": "float16" if device == "cuda" else "float32"}
    results = {}
    for bs in (batch, 1):
        cfg = CompensateConfig(compensator="instructpix2pix", model_path=str(model), steps=steps,
                               size=size, batch_size=bs, blend="none")
        t0 = time.perf_counter()
        comp = DiffusionCompensator(cfg, device=device)
        load_s = time.perf_counter() - t0
        comp.compensate(images[:bs], keys[:bs])          # warm-up (kernels, allocator)
        _sync()
        t0 = time.perf_counter()
        res = comp.compensate(images, keys)
        _sync()
        secs = time.perf_counter() - t0
        results[bs] = np.stack([r["image"] for r in res])
        out[f"batch_{bs}"] = {"load_s": round(load_s, 3), "seconds": round(secs, 3),
                              "images_per_s": round(len(keys) / secs, 3)}
        if bs == batch:
            again = np.stack([r["image"] for r in comp.compensate(images, keys)])
            out["rerun_identical"] = bool(np.array_equal(again, results[bs]))
        del comp
        if device == "cuda":
            torch.cuda.empty_cache()
    diff = np.abs(results[batch].astype(int) - results[1].astype(int))
    out["batched_vs_single"] = {"max_abs_diff": int(diff.max()), "frac_pixels_differing": float((diff > 0).mean()),
                                "mean_abs_diff": float(diff.mean())}
    out["speedup"] = round(out[f"batch_{batch}"]["images_per_s"] / out["batch_1"]["images_per_s"], 3)
    if device == "cuda":
        out["gpu"] = torch.cuda.get_device_name(0)
        out["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return out


def ray_check(model: Path, src: Path, work: Path, args) -> dict:
    """The real stage on a local actor pool; seconds include actor start and model load."""
    from dc3ray.config import CompensateConfig
    from dc3ray.pipeline.compensate import compensate_dataset
    from dc3ray.pipeline.resources import configure_data_context, cuda_available_in_cluster, init_ray

    init_ray(num_cpus=args.num_cpus)
    configure_data_context(show_progress=False)
    out = {"cluster_has_gpu": cuda_available_in_cluster()}
    for bs in (args.batch, 1):
        cfg = CompensateConfig(compensator="instructpix2pix", model_path=str(model), steps=args.steps,
                               size=args.size, batch_size=bs, num_actors=args.num_actors)
        info = compensate_dataset(str(src), cfg, str(work / f"out_b{bs}"))
        out[f"batch_{bs}"] = {"seconds": info["seconds"], "images_per_s": info["images_per_s"], "rows": info["rows"]}
    return out


def diffusion_cost(work: Path, out_dir: Path) -> list[dict]:
    """bench_diffusion_cost.main on this machine's device (the 4.3 GB pipeline is built under
    `work`, not in out_dir, so it is not shipped back); returns its summary rows."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_diffusion_cost

    cuda = torch.cuda.is_available()
    # A GPU edit step takes tens of milliseconds: more steps and a larger batch steady the line.
    extra = ["--device", "cuda", "--steps", "10", "25", "50", "--batch", "8"] if cuda else []
    argv0, sys.argv[0] = sys.argv[0], bench_diffusion_cost.__file__  # the record names its own script
    try:
        res = bench_diffusion_cost.main(["--model", str(work / "p2p_fullsize_random"),
                                         "--out-dir", str(out_dir)] + extra)
    finally:
        sys.argv[0] = argv0
    return res["summary"]


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchlib import tiny_diffusion
    build_tiny_instruct_pix2pix = tiny_diffusion().build_tiny_instruct_pix2pix

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"args": vars(args), "python": platform.python_version(), "torch": torch.__version__,
              "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        model = build_tiny_instruct_pix2pix(work / "tiny_p2p", seed=0)
        report["build_s"] = round(time.perf_counter() - t0, 3)
        images, keys, classes, origin = source_images(args.data, args.images)
        report["images_from"] = origin
        report["core"] = core_check(model, images, keys, batch=args.batch, steps=args.steps,
                                    size=args.size)
        print(json.dumps(report["core"], indent=2), flush=True)
        if not args.skip_ray:
            src = write_source_shards(images, keys, classes, work / "src")
            report["ray"] = ray_check(model, src, work, args)
            print(json.dumps(report["ray"], indent=2), flush=True)
        if args.diffusion_cost:
            report["diffusion_cost"] = diffusion_cost(work, out_dir)
    path = out_dir / "gpu_check.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
