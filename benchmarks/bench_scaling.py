"""DC3 selection over a synthetic ImageNet-1K-shaped workload, as Ray tasks, 1 vs 2 workers.

--classes (1000) classes x --items (1300) images, per image a --dim (512) feature h (the
embedding and the gradient model's penultimate features, one forward pass, as dc3ray does when
both backbones are the same model) and a --classes-wide gradient factor e = softmax(z) - onehot
(rows sum to 0; the label's entry is p_y - 1, near -1 for an untrained-looking head).
Each task generates ITS class deterministically from (seed, class) and runs
dc3ray.core.selection.select_class (method dc3: PCA(50) + KMeans bins, GraphCut on the factored
gradient similarity), the call dc3ray.pipeline.select._select_one_class makes; nothing of the
~8 GB the full feature set would take exists in the driver.
Per worker count w: a local Ray instance of its own with num_cpus=w, 1-CPU tasks (Ray sets
OMP_NUM_THREADS=1 in them), at most 2 x w in flight; one untimed warm-up task per worker first
(imports). Reported: wall time, per-class time inside the tasks (generation and selection
apart), classes/s and items/s, speedup (the first --workers entry's wall time over this one's),
peak RSS of the driver and of the task workers (ru_maxrss read in the task: a worker's peak
over the tasks it ran).
Writes results/bench_scaling.json (see benchlib.save).

    python benchmarks/bench_scaling.py                                  # 1000 x 1300, w = 1, 2
    python benchmarks/bench_scaling.py --classes 8 --items 200 --out-dir /tmp/bench   # dry run
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load, peak_rss_mb, save  # noqa: E402


# --------------------------------------------------------------------------------------------
# Pure helpers (no Ray): the synthetic class and one selection
# --------------------------------------------------------------------------------------------

def synthetic_class(seed: int, label: int, items: int, num_classes: int, dim: int,
                    modes: int = 10) -> tuple[list[str], np.ndarray, np.ndarray]:
    """One class's features, drawn from rng_for(seed, "scaling", label) only.

    Returns keys (items,), e float32 (items, num_classes) = softmax(z) - onehot(label) and
    h float32 (items, dim) >= 0 (post-ReLU-like: `modes` prototypes plus noise, half the
    entries zero). z ~ N(0, 1) with the label's logit raised by U(0, 4): p_label is small, so
    e[:, label] is near -1 and every row sums to 0 (up to float rounding).
    """
    from dc3ray.core.seeding import rng_for

    rng = rng_for(seed, "scaling", int(label))
    protos = rng.normal(size=(modes, dim))
    which = rng.integers(modes, size=items)
    h = np.maximum(protos[which] + 0.5 * rng.normal(size=(items, dim)), 0.0).astype(np.float32)
    z = rng.normal(size=(items, num_classes))
    z[:, label] += rng.uniform(0.0, 4.0, size=items)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    p[:, label] -= 1.0
    keys = [f"c{int(label):04d}/{i:05d}" for i in range(items)]
    return keys, p.astype(np.float32), h


def select_synthetic_class(seed: int, label: int, items: int, num_classes: int, dim: int,
                           ipc: int, k: int = 10) -> dict:
    """Generate one class (synthetic_class) and select it with core.select_class (dc3).

    Returns {label, keys (the picked keys, rank order), gen_s, select_s, rss_start_mb,
    peak_rss_mb (this process's ru_maxrss after the call), pid}.
    """
    from dc3ray.config import SelectConfig
    from dc3ray.core.selection import select_class

    rss_start = _rss_now_mb()
    t0 = time.perf_counter()
    keys, e, h = synthetic_class(seed, label, items, num_classes, dim)
    t1 = time.perf_counter()
    # embeddings = h: the embedding is the gradient model's h when the backbones are shared.
    rows = select_class(keys, label, h, e, h, SelectConfig(method="dc3", ipc=ipc, k=k, seed=42))
    t2 = time.perf_counter()
    return {"label": int(label), "keys": [r["key"] for r in rows], "gen_s": t1 - t0,
            "select_s": t2 - t1, "rss_start_mb": rss_start,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "pid": os.getpid()}


def _rss_now_mb() -> float:
    """Current resident memory of this process in MiB (Linux /proc), 0 where unavailable."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def summarise(workers: int, classes: int, items: int, wall_s: float, tasks: list[dict],
              driver_peak_mb: float, startup_s: float) -> dict:
    """One summary row from the task records of one worker count."""
    sel = np.array([t["select_s"] for t in tasks])
    gen = np.array([t["gen_s"] for t in tasks])
    return {"workers": workers, "classes": classes, "items_per_class": items,
            "wall_s": round(wall_s, 2), "ray_start_s": round(startup_s, 2),
            "classes_per_s": round(classes / wall_s, 3),
            "items_per_s": round(classes * items / wall_s, 1),
            "select_s_per_class_mean": round(float(sel.mean()), 4),
            "select_s_per_class_max": round(float(sel.max()), 4),
            "gen_s_per_class_mean": round(float(gen.mean()), 4),
            "driver_peak_rss_mb": round(driver_peak_mb, 1),
            "task_peak_rss_mb_max": round(max(t["peak_rss_mb"] for t in tasks), 1),
            "task_rss_start_mb_max": round(max(t["rss_start_mb"] for t in tasks), 1),
            "worker_processes": len({t["pid"] for t in tasks})}


# --------------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------------

def run_workers(workers: int, args) -> tuple[dict, list[list[str]]]:
    """All classes on a local Ray instance with `workers` CPUs; (summary row, picks by label)."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    t0 = time.perf_counter()
    # address="local": a cluster of its own, never one someone else started on this machine.
    ray.init(address="local", num_cpus=workers, include_dashboard=False)
    startup = time.perf_counter() - t0
    try:
        if __name__ != "__main__":
            # Imported (e.g. from a test): ship this module's functions by value, since the
            # workers cannot import a script folder that is not on their path.
            ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        task = ray.remote(num_cpus=1)(select_synthetic_class)
        # Warm-up: one small task per worker so imports (sklearn, dc3ray) and KMeans' first
        # call are not in the wall time (ipc >= 2, or select_class skips KMeans).
        ray.get([task.remote(args.seed, 0, min(args.items, 50), args.classes, 16,
                             min(2, args.items)) for _ in range(workers)])
        # ... and one full-size class: the per-class estimate before the long run.
        est = ray.get(task.remote(args.seed, 0, args.items, args.classes, args.dim, args.ipc))
        per_class = est["gen_s"] + est["select_s"]
        print(f"[{workers} worker(s)] one class: gen {est['gen_s']:.2f}s + select "
              f"{est['select_s']:.2f}s; {args.classes} classes ~ "
              f"{args.classes * per_class / workers / 60:.1f} min", flush=True)
        t1 = time.perf_counter()
        pending = list(range(args.classes))
        in_flight, tasks = [], []
        while pending or in_flight:
            while pending and len(in_flight) < 2 * workers:
                in_flight.append(task.remote(args.seed, pending.pop(0), args.items, args.classes,
                                             args.dim, args.ipc))
            done, in_flight = ray.wait(in_flight, num_returns=1)
            tasks.extend(ray.get(done))
            if args.progress and len(tasks) % args.progress == 0:
                print(f"  {len(tasks)}/{args.classes} classes, "
                      f"{time.perf_counter() - t1:.0f}s", flush=True)
        wall = time.perf_counter() - t1
    finally:
        ray.shutdown()
    tasks.sort(key=lambda t: t["label"])
    row = summarise(workers, args.classes, args.items, wall, tasks, peak_rss_mb(), startup)
    row["estimate_min"] = round(args.classes * per_class / workers / 60, 1)
    return row, [t["keys"] for t in tasks]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--items", type=int, default=1300, help="images per class")
    p.add_argument("--dim", type=int, default=512, help="size of h (ResNet-18: 512)")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", type=int, default=100, help="print every this many classes (0: never)")
    p.add_argument("--out-dir", default=None, help="where the JSON record goes (default results/)")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.ipc > args.items:
        raise SystemExit(f"--ipc {args.ipc} is larger than --items {args.items}")
    load_before = load()
    rows, picks = [], []
    for w in args.workers:
        row, p = run_workers(w, args)
        print(row, flush=True)
        row["speedup"] = round(rows[0]["wall_s"] / row["wall_s"], 3) if rows else 1.0
        rows.append(row)
        picks.append(p)
    result = {"args": {k: v for k, v in vars(args).items() if k != "out_dir"},
              "feature_gb_if_materialised": round(args.classes * args.items
                                                  * (args.classes + args.dim) * 4 / 2**30, 2),
              "same_picks_across_workers": all(p == picks[0] for p in picks),
              "summary": rows}
    save("bench_scaling", result, argv, load_before=load_before, out_dir=args.out_dir)
    return result


if __name__ == "__main__":
    main()
