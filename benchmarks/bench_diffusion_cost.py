"""The real cost of diffusion colour compensation: full-size InstructPix2Pix, random weights.

The pipeline is benchmarks/diffusion_fullsize.py's (published SD-1.5 / CLIP-L / SD-VAE numbers,
random weights: the compute does not depend on the weights' values). It is saved once to
--model (~4.3 GB fp32, reused while its marker matches) and driven through the project's own
`dc3ray.pipeline.compensate.CompensatorActor`, called as a plain Python object (no Ray), with
the batch format Ray Data hands it (key, label, class_name, encoded image bytes).

One call edits every image twice (warm + cold prompt; 3 guidance branches each, so the UNet
sees 6 x images samples per step) at --size px, then blends. Measured per step count in --steps:
  single   one image per call (compensate.batch_size 1)
  batched  --batch images in one call (compensate.batch_size --batch)
each after an untimed 1-step warm-up call of the same shape (the first call pays one-time
kernel set-up: ~60% extra on a UNet forward here). On a shared CPU machine every point waits
for a quiet moment and is repeated (--attempts) while this process's threads spent more than
--contention-threshold of a thread waiting for a CPU (schedstat run-queue time / wall); a point
never clean keeps its fastest call, flagged contended. `--nice -5` raises this process's
priority against other work. Reported per image: seconds, the least-
squares line t(steps) = fixed + per_step x steps and its residuals, the prediction at the
configured --configured-steps (CompensateConfig.steps, 100), and peak memory of the call (CPU:
process RSS high-water mark, reset before each call; CUDA: torch.cuda.max_memory_allocated).
Check of the slope: one bare UNet forward at the single mode's batch (6 samples), timed alone.
FLOPs: torch.utils.flop_counter.FlopCounterMode on one UNet forward (batch 1, size/8 latent),
one VAE encode and decode at --size and one text-encoder pass, with attention as explicit
matmuls (PyTorch's CPU SDPA kernel has no FLOP formula). From them, a GPU time per image is
ESTIMATED (not measured) at an assumed utilisation of a stated peak.

fp32 on CPU; `--device cuda` loads fp16 (dc3ray.core.diffusers_io) on CUDA, same script.
Writes results/bench_diffusion_cost.json (see benchlib.save).

    python benchmarks/bench_diffusion_cost.py --threads 1            # CPU: ~15 min on an idle core
    python benchmarks/bench_diffusion_cost.py --device cuda --steps 10 25 50 --batch 8
    python benchmarks/bench_diffusion_cost.py --tiny --steps 1 2 --size 64 --out-dir /tmp/b  # seconds
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load, peak_rss_mb, save  # noqa: E402
from diffusion_fullsize import (arch_for, check_against_published, expected_param_counts,  # noqa: E402
                                module_param_counts, save_random_pipeline)
from gpu_check import source_images  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "runs" / "cache" / "p2p_fullsize_random"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10" / "train"
# Dense fp16 tensor-core peak of an H100 SXM (no sparsity), NVIDIA's data sheet.
H100_FP16_DENSE_TFLOPS = 989.0
ASSUMED_UTILISATION = 0.40


# ------------------------------------------------------------------------------- memory

def _rss_bytes() -> int:
    """Current resident memory of this process (bytes), from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class PeakMemory:
    """Peak memory of the `with` body, in MiB (`.mib`), and how it was taken (`.method`).

    CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats (tensors only).
    CPU: the RSS high-water mark VmHWM after resetting it (writing 5 to /proc/self/clear_refs,
    Linux >= 4.0); where that is not allowed, psutil sampling every 10 ms; failing both, the
    process-lifetime ru_maxrss (an upper bound that includes earlier work).
    """

    def __init__(self, device: str):
        self.device, self.mib, self.method = device, None, None
        self._stop = threading.Event()
        self._sampled = 0

    def __enter__(self):
        if self.device.startswith("cuda"):
            import torch
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.method = "torch.cuda.max_memory_allocated"
            return self
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method = "VmHWM after clear_refs reset"
        except OSError:
            try:
                import psutil
                proc = psutil.Process()
                self._sampled = proc.memory_info().rss

                def sample():
                    while not self._stop.wait(0.01):
                        self._sampled = max(self._sampled, proc.memory_info().rss)
                self._thread = threading.Thread(target=sample, daemon=True)
                self._thread.start()
                self.method = "psutil RSS sampled every 10 ms"
            except ImportError:
                self.method = "ru_maxrss (process lifetime, includes earlier work)"
        return self

    def __exit__(self, *exc):
        if self.method == "torch.cuda.max_memory_allocated":
            import torch
            torch.cuda.synchronize()
            self.mib = torch.cuda.max_memory_allocated() / 2**20
        elif self.method.startswith("VmHWM"):
            hwm = [ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:")]
            self.mib = int(hwm[0].split()[1]) / 1024
        elif self.method.startswith("psutil"):
            self._stop.set()
            self._thread.join()
            self.mib = self._sampled / 2**20
        else:
            self.mib = peak_rss_mb()
        self.mib = round(self.mib, 1)
        return False


# ------------------------------------------------------------------------------- timing

def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


def actor_batch(images: np.ndarray, keys: list[str], class_names: list[str]) -> dict[str, np.ndarray]:
    """uint8 (N, H, W, 3) + keys + class names -> the numpy batch CompensatorActor takes
    (key, label, class_name, image as PNG bytes, height, width), as Ray Data would pass it."""
    from dc3ray.core import schema
    from dc3ray.core.imageio import encode_png

    names = sorted(set(class_names))
    return {schema.KEY: np.array(keys, dtype=object),
            schema.LABEL: np.array([names.index(c) for c in class_names], dtype=np.int64),
            schema.CLASS_NAME: np.array(class_names, dtype=object),
            schema.IMAGE: np.array([encode_png(im) for im in images], dtype=object),
            schema.HEIGHT: np.array([im.shape[0] for im in images], dtype=np.int32),
            schema.WIDTH: np.array([im.shape[1] for im in images], dtype=np.int32)}


def make_actor(model: Path, steps: int, per_call: int, size: int, device: str):
    """A CompensatorActor for InstructPix2Pix at `steps` steps, `per_call` images per pipeline
    call, `size` px, on `device`; returns (actor, seconds it took to build = pipeline load)."""
    from dc3ray.pipeline.compensate import CompensatorActor

    cfg = {"compensator": "instructpix2pix", "model_path": str(model), "steps": steps,
           "size": size, "batch_size": per_call}
    t0 = time.perf_counter()
    actor = CompensatorActor(cfg, device=device)
    return actor, time.perf_counter() - t0


def _cpu_busy_s() -> float:
    """Seconds of CPU (all cores) the whole machine has spent busy since boot (/proc/stat)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


class OtherCpu:
    """Cores' worth of CPU that OTHER processes used during the `with` body (`.cores`): machine
    busy time minus this process's CPU time, over the wall time. On a 2-core machine any other
    work slows the benchmark, so a point is only kept clean when this stays small."""

    def __enter__(self):
        self.t0, self.busy0, self.mine0 = time.perf_counter(), _cpu_busy_s(), time.process_time()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        self.cpu_s = time.process_time() - self.mine0
        self.cores = max(0.0, (_cpu_busy_s() - self.busy0 - self.cpu_s) / wall) if wall > 0 else 0.0
        return False


def _runqueue_wait_s() -> float:
    """Seconds this process's threads have spent runnable but waiting for a CPU (summed over
    threads, /proc/self/task/*/schedstat field 2): time lost to other processes."""
    total = 0
    for t in Path("/proc/self/task").iterdir():
        try:
            total += int((t / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):   # a thread that ended meanwhile
            pass
    return total / 1e9


def wait_for_quiet(max_wait_s: float, threshold: float, window_s: float = 5.0, log=print) -> float:
    """Block until other processes use < `threshold` cores over a `window_s` window, or
    max_wait_s passes (max_wait_s <= 0: no wait, no window); returns the seconds waited."""
    if max_wait_s <= 0:
        return 0.0
    t0 = time.perf_counter()
    while True:
        with OtherCpu() as other:
            time.sleep(window_s)
        if other.cores < threshold or time.perf_counter() - t0 >= max_wait_s:
            return time.perf_counter() - t0
        log(f"  machine busy ({other.cores:.2f} other cores); waiting")


def timed_call(actor, batch: dict, device: str) -> dict:
    """One actor call on `batch`: {seconds, cpu_s (this process), waiting_threads (mean number of
    this process's threads waiting for a CPU: time lost to other work), other_cores (other
    processes' mean CPU use meanwhile), peak_memory_mib, memory_method}. The peak includes the
    loaded weights (CPU: whole-process RSS; CUDA: every allocated tensor)."""
    _sync(device)
    w0 = _runqueue_wait_s()
    with OtherCpu() as other, PeakMemory(device) as mem:
        t0 = time.perf_counter()
        out = actor(batch)
        _sync(device)
        secs = time.perf_counter() - t0
    waiting = (_runqueue_wait_s() - w0) / secs
    assert len(out["key"]) == len(batch["key"])
    return {"seconds": secs, "cpu_s": other.cpu_s, "waiting_threads": round(waiting, 4),
            "other_cores": round(other.cores, 3), "peak_memory_mib": mem.mib, "memory_method": mem.method}


def clean_call(actor, batch: dict, device: str, attempts: int, threshold: float,
               quiet_cores: float, max_wait_s: float, log=print) -> dict:
    """timed_call after waiting for a quiet machine (CPU only), repeated up to `attempts` times
    while this process's threads spent on average >= `threshold` of a thread waiting for a CPU
    (others took it). Returns the first clean call, or the fastest one flagged contended=True;
    `attempts` says how many calls were made."""
    tries = []
    for _ in range(max(1, attempts)):
        if not device.startswith("cuda"):
            wait_for_quiet(max_wait_s, quiet_cores, log=log)
        r = timed_call(actor, batch, device)
        tries.append(r)
        if device.startswith("cuda") or r["waiting_threads"] < threshold:
            return {**r, "attempts": len(tries), "contended": False}
        log(f"  contended call ({r['waiting_threads']:.3f} threads waiting for a CPU, "
            f"{r['other_cores']:.2f} other cores, {r['seconds']:.1f} s); again")
    best = min(tries, key=lambda r: r["seconds"])
    return {**best, "attempts": len(tries), "contended": True}


def line_fit(steps: list[int], secs: list[float], at: int) -> dict:
    """Least-squares t = fixed + per_step x steps over the points; with one point only the
    point itself is reported (fixed/per_step/predicted None). Residuals are measured - fitted."""
    out = {"points": [[s, round(t, 4)] for s, t in zip(steps, secs)]}
    if len(set(steps)) < 2:
        return {**out, "fixed_s": None, "per_step_s": None, "predicted_s": None,
                "max_abs_residual_s": None, "at_steps": at}
    slope, intercept = np.polyfit(np.asarray(steps, float), np.asarray(secs, float), 1)
    resid = [t - (intercept + slope * s) for s, t in zip(steps, secs)]
    return {**out, "fixed_s": round(float(intercept), 4), "per_step_s": round(float(slope), 4),
            "predicted_s": round(float(intercept + slope * at), 2),
            "max_abs_residual_s": round(float(max(abs(r) for r in resid)), 4), "at_steps": at}


# ------------------------------------------------------------------------------- FLOPs

def count_flops(pipe, size: int, device: str) -> dict:
    """FLOPs (FlopCounterMode: 2 per multiply-add) of one UNet forward (batch 1, latent size/8,
    77 text tokens), one VAE encode and one decode of a size x size image, one text-encoder
    pass. Attention runs as explicit matmuls while counting (the CPU SDPA kernel has no FLOP
    formula and would count 0); the pipeline's own processors are restored afterwards."""
    import torch
    from diffusers.models.attention_processor import AttnProcessor
    from torch.utils.flop_counter import FlopCounterMode

    dt = pipe.unet.dtype
    lat = size // pipe.vae_scale_factor
    ctx = pipe.text_encoder.config.hidden_size
    ntok = pipe.tokenizer.model_max_length
    saved = {m: getattr(pipe, m).attn_processors for m in ("unet", "vae")}
    te_impl = pipe.text_encoder.config._attn_implementation
    out = {}
    try:
        for m in ("unet", "vae"):
            getattr(pipe, m).set_attn_processor(AttnProcessor())
        pipe.text_encoder.set_attn_implementation("eager")
        with torch.inference_mode():
            x = torch.randn(1, pipe.unet.config.in_channels, lat, lat, device=device, dtype=dt)
            ehs = torch.randn(1, ntok, ctx, device=device, dtype=dt)
            img = torch.randn(1, 3, size, size, device=device, dtype=pipe.vae.dtype)
            ids = pipe.tokenizer(["Adjust the color hue to be sunny"], padding="max_length",
                                 max_length=ntok, return_tensors="pt").input_ids.to(device)
            runs = {"unet_forward": lambda: pipe.unet(x, torch.tensor(500, device=device),
                                                      encoder_hidden_states=ehs),
                    "vae_encode": lambda: pipe.vae.encode(img),
                    "vae_decode": lambda: pipe.vae.decode(
                        torch.randn(1, pipe.vae.config.latent_channels, lat, lat, device=device,
                                    dtype=pipe.vae.dtype)),
                    "text_encode": lambda: pipe.text_encoder(ids)}
            for name, fn in runs.items():
                with FlopCounterMode(display=False) as fc:
                    fn()
                out[name] = int(fc.get_total_flops())
    finally:
        for m, procs in saved.items():
            getattr(pipe, m).set_attn_processor(procs)
        pipe.text_encoder.set_attn_implementation(te_impl)
    out["latent"] = [lat, lat]
    return out


def _sig(x: float, digits: int = 4) -> float:
    """x rounded to `digits` significant figures (tiny-variant figures stay non-zero)."""
    return float(f"{x:.{digits}g}")


def flops_per_image(f: dict, steps: int) -> int:
    """FLOPs of one compensated image: 2 edits (warm, cold), each = steps x 3 guidance branches of
    the UNet + 1 VAE encode + 1 VAE decode + 2 text passes (prompt and empty negative prompt)."""
    edit = 3 * steps * f["unet_forward"] + f["vae_encode"] + f["vae_decode"] + 2 * f["text_encode"]
    return 2 * edit


def unet_check(pipe, samples: int, size: int, device: str) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one bare UNet forward at `samples` samples,
    timed after one untimed forward."""
    import torch

    lat = size // pipe.vae_scale_factor
    dt = pipe.unet.dtype
    x = torch.randn(samples, pipe.unet.config.in_channels, lat, lat, device=device, dtype=dt)
    ehs = torch.randn(samples, pipe.tokenizer.model_max_length, pipe.text_encoder.config.hidden_size,
                      device=device, dtype=dt)
    t = torch.tensor(500, device=device)
    with torch.inference_mode():
        pipe.unet(x, t, encoder_hidden_states=ehs)
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        pipe.unet(x, t, encoder_hidden_states=ehs)
        _sync(device)
        return time.perf_counter() - t0, time.process_time() - c0


# ------------------------------------------------------------------------------- the record

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL),
                   help="folder of the random full-size pipeline (built there when missing)")
    p.add_argument("--tiny", action="store_true", help="the tiny variant (tests / dry runs)")
    p.add_argument("--steps", type=int, nargs="+", default=[2, 4, 8], help="denoising steps measured")
    p.add_argument("--batch", type=int, default=2, help="images per call in the batched mode")
    p.add_argument("--size", type=int, default=256, help="diffusion working size (CompensateConfig.size)")
    p.add_argument("--configured-steps", type=int, default=None,
                   help="steps to extrapolate to (default: CompensateConfig's, 100)")
    p.add_argument("--device", default="cpu", help="cpu (fp32) or cuda (fp16)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default torch's). 1 is what a 1-CPU Ray actor gets, and "
                        "makes the CPU-time figures equal to idle-core wall time")
    p.add_argument("--peak-tflops", type=float, default=H100_FP16_DENSE_TFLOPS,
                   help="GPU peak for the FLOP-count estimate (default: H100 SXM dense fp16)")
    p.add_argument("--utilisation", type=float, default=ASSUMED_UTILISATION,
                   help="ASSUMED fraction of that peak reached (an assumption, not measured)")
    p.add_argument("--attempts", type=int, default=2,
                   help="CPU: calls per point while other processes use the machine (fastest kept)")
    p.add_argument("--contention-threshold", type=float, default=0.05,
                   help="CPU: a call counts as contended when this process's threads spent on average "
                        "this much of a thread waiting for a CPU (schedstat run-queue time / wall)")
    p.add_argument("--quiet-cores", type=float, default=0.5,
                   help="CPU: before a call, wait until other processes use fewer cores than this")
    p.add_argument("--max-wait", type=float, default=30.0,
                   help="CPU: seconds to wait for a quiet machine before each call")
    p.add_argument("--nice", type=int, default=0,
                   help="CPU: os.nice increment for this process (negative needs root): on a shared "
                        "machine a higher priority keeps other work from inflating the timings")
    p.add_argument("--data", default=str(DEFAULT_DATA),
                   help="ImageFolder of real images; noise images are used when it is missing")
    p.add_argument("--out-dir", default=None, help="where the JSON record goes (default results/)")
    return p


def collect(args: argparse.Namespace, log=print) -> dict:
    """Run every measurement of `args` (build_parser's) and return the record's `result` dict:
    args, model (params counted / expected / published), runs, fit, unet_check, flops,
    gpu_estimate, summary (flat rows for render.py), notes, peak_rss_mb."""
    import torch

    from dc3ray.config import CompensateConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.nice:
        os.nice(args.nice)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    at = args.configured_steps or CompensateConfig.steps
    steps = sorted(set(args.steps))
    t0 = time.perf_counter()
    model = save_random_pipeline(args.model, tiny=args.tiny, log=log)
    build_s = time.perf_counter() - t0
    gc.collect()

    n_img = max(args.batch, 1)
    images, keys, class_names, origin = source_images(args.data, n_img)
    result: dict = {"args": {k: v for k, v in vars(args).items() if k != "out_dir"},
                    "device": device, "dtype": "float16" if device.startswith("cuda") else "float32",
                    "torch_threads": torch.get_num_threads(), "size": args.size,
                    "configured_steps": at, "images_from": origin,
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                    "build_or_reuse_s": round(build_s, 2)}
    counts_expected = expected_param_counts(arch_for(args.tiny))
    result["model"] = {"path": str(model), "tiny": args.tiny, "random_weights": True,
                       "params_expected": counts_expected}
    if not args.tiny:
        result["model"]["published"] = check_against_published(counts_expected)

    modes = [("single", 1)] + ([("batched", args.batch)] if args.batch > 1 else [])
    runs, loads, fits, fits_cpu, first_calls, raw, raw_cpu = [], [], {}, {}, {}, {}, {}
    for mode, per_call in modes:
        batch = actor_batch(images[:per_call], keys[:per_call], class_names[:per_call])
        # Untimed 1-step call of the same shape: one-time kernel set-up stays out of the slope.
        actor, load_s = make_actor(model, 1, per_call, args.size, device)
        loads.append(load_s)
        if "params" not in result["model"]:
            result["model"]["params"] = module_param_counts(actor.compensator.pipe)
        first_calls[mode] = round(timed_call(actor, batch, device)["seconds"], 3)
        del actor
        gc.collect()
        for s in steps:
            actor, load_s = make_actor(model, s, per_call, args.size, device)
            loads.append(load_s)
            r = clean_call(actor, batch, device, args.attempts, args.contention_threshold,
                           args.quiet_cores, args.max_wait, log=log)
            secs = r.pop("seconds")
            raw.setdefault(mode, []).append(secs / per_call)   # the fit takes unrounded times
            raw_cpu.setdefault(mode, []).append(r["cpu_s"] / per_call)
            runs.append({"mode": mode, "images_per_call": per_call, "steps": s,
                         "seconds": round(secs, 4), "seconds_per_image": round(secs / per_call, 4),
                         **r, "cpu_s": round(r["cpu_s"], 3),
                         "cpu_s_per_image": round(r["cpu_s"] / per_call, 4),
                         "unet_samples_per_step": 6 * per_call})
            log(f"{mode:>7} x{per_call}  steps {s:>3}: {secs:8.2f} s per call, "
                f"{secs / per_call:8.2f} s per image, CPU {r['cpu_s'] / per_call:8.2f} s per image, peak {r['peak_memory_mib']:,.0f} MiB "
                f"({r['memory_method']}), {r['waiting_threads']:.3f} threads waiting for a CPU, "
                f"other processes {r['other_cores']:.2f} cores")
            if s != steps[-1]:
                del actor
                gc.collect()
        fits[mode] = line_fit(steps, raw[mode], at)
        fits_cpu[mode] = line_fit(steps, raw_cpu[mode], at)
        if mode == "single":
            pipe = actor.compensator.pipe
            if not device.startswith("cuda"):
                wait_for_quiet(args.max_wait, args.quiet_cores, log=log)
            w0 = _runqueue_wait_s()
            with OtherCpu() as other:   # spans the untimed forward too: contention, not timing
                unet_s, unet_cpu = unet_check(pipe, 6, args.size, device)
            unet_other = {"other_cores": round(other.cores, 3), "cpu_s": round(unet_cpu, 4),
                          "waiting_threads": round((_runqueue_wait_s() - w0) / (time.perf_counter() - other.t0), 4)}
            result["flops"] = count_flops(pipe, args.size, device)
        del actor
        gc.collect()
    result["runs"] = runs
    result["fit"] = fits
    # This process's CPU time: with 1 torch thread, the wall time on an idle core, and unlike
    # wall time it does not grow while other processes hold the CPU (CUDA: host time, unused).
    result["fit_cpu"] = None if device.startswith("cuda") else fits_cpu
    result["pipeline_load_s"] = round(float(np.median(loads)), 3)
    result["first_call_1_step_s"] = first_calls

    slope = fits["single"]["per_step_s"]
    result["unet_check"] = {"samples": 6, "seconds": round(unet_s, 4), **unet_other,
                            "slope_over_unet": round(slope / unet_s, 3) if slope else None}
    if result["fit_cpu"] and result["fit_cpu"]["single"]["per_step_s"]:
        result["unet_check"]["cpu_slope_over_unet_cpu"] = round(
            result["fit_cpu"]["single"]["per_step_s"] / unet_other["cpu_s"], 3)
    f = result["flops"]
    per_image = flops_per_image(f, at)
    f["per_image_at_configured_steps"] = per_image
    f["unet_share"] = round(2 * 3 * at * f["unet_forward"] / per_image, 4)
    best = min((fits[m]["predicted_s"] for m in fits if (fits[m]["predicted_s"] or 0) > 0), default=None)
    f["effective_gflops"] = round(per_image / best / 1e9, 1) if best else None
    if result["fit_cpu"]:
        best = min((v["predicted_s"] for v in fits_cpu.values() if (v["predicted_s"] or 0) > 0), default=None)
        f["gflops_per_cpu_second"] = round(per_image / best / 1e9, 1) if best else None
    rate = args.peak_tflops * 1e12 * args.utilisation
    result["gpu_estimate"] = {
        "kind": "ESTIMATE from the FLOP count, not a measurement",
        "peak_tflops": args.peak_tflops, "assumed_utilisation": args.utilisation,
        "seconds_per_image": _sig(per_image / rate),
        "imagenet1k_gpu_hours": {f"ipc{ipc}": _sig(1000 * ipc * per_image / rate / 3600)
                                 for ipc in (10, 50)}}
    result["summary"] = summary_rows(result)
    result["notes"] = notes(result)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def summary_rows(r: dict) -> list[dict]:
    """Flat rows for docs/BENCHMARKS.md: one per calling mode (measured), per image."""
    rows = []
    # Speed ratios from CPU time where there is one: wall time carries other processes' load.
    basis = r["fit_cpu"] or r["fit"]
    single = basis["single"]["predicted_s"]
    for mode, fit in r["fit"].items():
        mine = [x for x in r["runs"] if x["mode"] == mode]
        row = {"mode": f"{mine[0]['images_per_call']} image(s) per call", "device": r["device"],
               "dtype": r["dtype"], "size": r["size"]}
        for x in mine:
            row[f"s_per_image_{x['steps']}_steps"] = x["seconds_per_image"]
        row.update({"fixed_s_per_image": fit["fixed_s"], "s_per_image_per_step": fit["per_step_s"],
                    f"predicted_s_per_image_{fit['at_steps']}_steps": fit["predicted_s"],
                    "max_abs_residual_s": fit["max_abs_residual_s"]})
        if r["fit_cpu"]:
            c = r["fit_cpu"][mode]
            row.update({"cpu_fixed_s_per_image": c["fixed_s"], "cpu_s_per_image_per_step": c["per_step_s"],
                        f"cpu_predicted_s_per_image_{c['at_steps']}_steps": c["predicted_s"],
                        "cpu_max_abs_residual_s": c["max_abs_residual_s"]})
        row["peak_memory_mib"] = max(x["peak_memory_mib"] for x in mine)
        row["contended_points"] = sum(bool(x.get("contended")) for x in mine)
        if single and basis[mode]["predicted_s"]:
            row["speedup"] = round(single / basis[mode]["predicted_s"], 3)
        rows.append(row)
    return rows


def notes(r: dict) -> list[str]:
    """Record notes, every figure taken from `r` (rendered under the table)."""
    f, g, u = r["flops"], r["gpu_estimate"], r["unet_check"]
    m = r["model"]
    out = [f"Random weights ({'tiny variant' if m['tiny'] else 'full size'}): "
           + ", ".join(f"{k} {v:,}" for k, v in m["params"].items()) + " parameters "
           + ("(equal to the config formula)" if {k: m["params"][k] for k in m["params_expected"]}
              == m["params_expected"] else f"(formula says {m['params_expected']})") + ".",
           f"Per image = one warm + one cold edit (UNet batch 6 per image per step), "
           f"{r['dtype']} on {r['device']}, torch threads: {r['torch_threads']}; one timed call per "
           f"point after an untimed 1-step warm-up call (single: {r['first_call_1_step_s'].get('single')} s).",
           f"Slope check: a bare UNet forward of 6 samples took {u['seconds']} s wall, "
           f"{u.get('cpu_s')} s CPU; the single-image slope is {u['slope_over_unet']} x that (wall), "
           f"{u.get('cpu_slope_over_unet_cpu')} x (CPU).",
           f"FLOPs (FlopCounterMode, attention as matmuls): UNet forward at "
           f"{f['latent'][0]}x{f['latent'][1]} latent, batch 1: {f['unet_forward'] / 1e9:.1f} GFLOP; "
           f"VAE encode {f['vae_encode'] / 1e9:.1f}, decode {f['vae_decode'] / 1e9:.1f}, text "
           f"{f['text_encode'] / 1e9:.1f} GFLOP; per image at {r['configured_steps']} steps "
           f"{f['per_image_at_configured_steps'] / 1e12:.2f} TFLOP ({100 * f['unet_share']:.1f}% UNet).",
           f"GPU ESTIMATE (not measured): {g['seconds_per_image']} s per image = FLOPs / "
           f"({g['peak_tflops']:g} TFLOP/s peak x {g['assumed_utilisation']:g} ASSUMED utilisation); "
           f"ImageNet-1K IPC 10: {g['imagenet1k_gpu_hours']['ipc10']} GPU-h, IPC 50: "
           f"{g['imagenet1k_gpu_hours']['ipc50']} GPU-h."]
    bad = [f"{x['mode']} {x['steps']} steps" for x in r["runs"] if x.get("contended")]
    out.append(f"Contention (shared machine, process nice {r['args']['nice']:+d}): at most "
               f"{max(x['waiting_threads'] for x in r['runs']):.3f} of this process's threads waited for "
               f"a CPU on average during a kept call (other processes: up to "
               f"{max(x['other_cores'] for x in r['runs']):.2f} cores); "
               + (f"CONTENDED (fastest of {r['args']['attempts']} kept): " + ", ".join(bad)
                  if bad else f"every point under {r['args']['contention_threshold']}") + ".")
    if r["fit_cpu"]:
        out.append("cpu_* columns: this process's CPU time (time.process_time)"
                   + (", which with 1 torch thread is the wall time of an idle core" if r["torch_threads"] == 1
                      else f", summed over {r['torch_threads']} torch threads")
                   + "; unlike wall time it does not grow while other processes hold the CPU, so on a "
                   "shared machine it is the figure to read (cache sharing can still inflate it a little)."
                   + (f" {f['gflops_per_cpu_second']} GFLOP per CPU-second at the predicted "
                      f"{r['configured_steps']} steps." if f.get("gflops_per_cpu_second") else ""))
    if f.get("effective_gflops"):
        out.append(f"The measured {r['device']} runs the predicted {r['configured_steps']}-step edit at "
                   f"{f['effective_gflops']} GFLOP/s effective (per-image FLOPs / predicted seconds).")
    return out


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    load_before = load()
    result = collect(args)
    for row in result["summary"]:
        print(row, flush=True)
    for line in result["notes"]:
        print(line, flush=True)
    save("bench_diffusion_cost", result, argv, load_before=load_before, out_dir=args.out_dir)
    return result


if __name__ == "__main__":
    main()
