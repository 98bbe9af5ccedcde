"""Compensation batched vs one image per call, in process: the tiny random InstructPix2Pix
pipeline (tests/tiny_diffusion.py) and the classical OKLab compensator.

diffusion  DiffusionCompensator with `--batch` images per pipeline call vs one image per call
           (gpu_check.core_check: warm model, one warm-up call each, then the timed run; max
           pixel difference between the two; whether a rerun gives identical bytes). On CPU
           the tiny model's speed is not Stable Diffusion's: the figure is what batching buys.
classical  ClassicalCompensator: one compensate() call over all images vs one call per image.
           It has no vectorised path (it loops over images inside), so the two should be
           close; `vectorised_shift_images_per_s` times color.shift_color over the whole stack
           with one word, an upper bound on what a vectorised classical path could reach.
Real CIFAR-10 images from --data (32 px JPEG), noise images when it is missing.
Writes results/bench_compensate.json (see benchlib.save).

    OMP_NUM_THREADS=1 python benchmarks/bench_compensate.py
    OMP_NUM_THREADS=1 python benchmarks/bench_compensate.py --images 4 --steps 1 --size 16 \\
        --classical-images 8 --out-dir /tmp/bench                     # seconds: a dry run
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load, peak_rss_mb, save  # noqa: E402
from gpu_check import core_check, source_images  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "train"


def classical_check(images: np.ndarray, keys: list[str], repeats: int = 3) -> dict:
    """ClassicalCompensator over uint8 (N, H, W, 3): one call of N vs N calls of one image."""
    from dc3ray.config import CompensateConfig
    from dc3ray.core import color
    from dc3ray.core.editing import ClassicalCompensator

    comp = ClassicalCompensator(CompensateConfig(compensator="classical"))
    n = len(keys)

    def batched():
        return comp.compensate(images, keys)

    def single():
        return [comp.compensate(images[i:i + 1], keys[i:i + 1])[0] for i in range(n)]

    out, imgs = {"images": n, "size": list(images.shape[1:3])}, {}
    for name, fn in (("batched", batched), ("single", single)):
        fn()  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            res = fn()
            best = min(best, time.perf_counter() - t0)
        imgs[name] = np.stack([r["image"] for r in res])
        out[name] = {"seconds": round(best, 4), "images_per_s": round(n / best, 1)}
    out["speedup"] = round(out["batched"]["images_per_s"] / out["single"]["images_per_s"], 3)
    out["identical"] = bool(np.array_equal(imgs["batched"], imgs["single"]))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        color.shift_color(images, "sunny", kind="warm")
        best = min(best, time.perf_counter() - t0)
    # One edit per image, where the compensator makes two plus a blend: halve for a like figure.
    out["vectorised_shift_images_per_s"] = round(n / best / 2, 1)
    return out


def summary_rows(diffusion: dict | None, classical: dict, batch: int, n_diff: int) -> list[dict]:
    """Flat rows for the markdown table: one per compensator and calling mode."""
    rows = []
    if diffusion is not None:
        diff = diffusion["batched_vs_single"]["max_abs_diff"]
        for bs, mode in ((batch, f"{batch} images per call"), (1, "1 image per call")):
            d = diffusion[f"batch_{bs}"]
            rows.append({"compensator": "instructpix2pix (tiny, random)", "device": diffusion["device"],
                         "mode": mode, "images": n_diff, "seconds": d["seconds"],
                         "images_per_s": d["images_per_s"],
                         "speedup": diffusion["speedup"] if bs == batch else 1.0,
                         "max_abs_diff_vs_single": diff if bs == batch else 0})
    for key, mode in (("batched", f"{classical['images']} images per call"),
                      ("single", "1 image per call")):
        d = classical[key]
        rows.append({"compensator": "classical", "device": "cpu", "mode": mode,
                     "images": classical["images"], "seconds": d["seconds"],
                     "images_per_s": d["images_per_s"],
                     "speedup": classical["speedup"] if key == "batched" else 1.0,
                     "max_abs_diff_vs_single": 0 if classical["identical"] else None})
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=16, help="images for the diffusion runs")
    p.add_argument("--steps", type=int, default=10, help="denoising steps per edit")
    p.add_argument("--size", type=int, default=64, help="diffusion working size (divisible by 8)")
    p.add_argument("--batch", type=int, default=8, help="images per pipeline call when batched")
    p.add_argument("--channels", type=int, nargs=2, default=(32, 64),
                   help="UNet/VAE block widths of the tiny model")
    p.add_argument("--classical-images", type=int, default=1000)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's own, i.e. OMP_NUM_THREADS)")
    p.add_argument("--skip-diffusion", action="store_true", help="classical only")
    p.add_argument("--data", default=str(DEFAULT_DATA),
                   help="ImageFolder of real images; noise images are used when it is missing")
    p.add_argument("--out-dir", default=None, help="where the JSON record goes (default results/)")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    load_before = load()
    result: dict = {"args": {k: v for k, v in vars(args).items() if k != "out_dir"}}
    diffusion = None
    if not args.skip_diffusion:
        import torch

        from benchlib import tiny_diffusion
        build_tiny_instruct_pix2pix = tiny_diffusion().build_tiny_instruct_pix2pix

        if args.threads:
            torch.set_num_threads(args.threads)
        result["torch_threads"] = torch.get_num_threads()
        images, keys, _, origin = source_images(args.data, args.images)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            model = build_tiny_instruct_pix2pix(Path(tmp) / "tiny_p2p", seed=0,
                                                channels=tuple(args.channels))
            result["build_s"] = round(time.perf_counter() - t0, 3)
            diffusion = core_check(model, images, keys, batch=args.batch, steps=args.steps,
                                   size=args.size)
        diffusion["images_from"] = origin
        result["diffusion"] = diffusion
        print(f"diffusion: {diffusion[f'batch_{args.batch}']['images_per_s']} img/s batched vs "
              f"{diffusion['batch_1']['images_per_s']} one per call (x{diffusion['speedup']})",
              flush=True)
    images, keys, _, origin = source_images(args.data, args.classical_images)
    classical = classical_check(images, keys)
    classical["images_from"] = origin
    result["classical"] = classical
    print(f"classical: {classical['batched']['images_per_s']} img/s batched vs "
          f"{classical['single']['images_per_s']} one per call", flush=True)
    result["summary"] = summary_rows(diffusion, classical, args.batch, args.images)
    result["peak_rss_mb"] = peak_rss_mb()
    result["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    save("bench_compensate", result, argv, load_before=load_before, out_dir=args.out_dir)
    return result


if __name__ == "__main__":
    main()
