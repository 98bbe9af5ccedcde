"""Vectorised GraphCut (dc3ray.core.selection.graphcut_greedy) vs a plain per-candidate greedy,
and factored vs materialised gradient similarity: time and peak memory, over a few class sizes.

For each n (items in one class): the two greedies on the same similarity (time, ratio, whether
the picks are identical) and the two ways of building s_ij = 0.5 + 0.5 cos(g_i, g_j) for the
last-layer gradient g = [e, e (x) h] (time; peak memory of the call measured with tracemalloc,
which tracks numpy's buffers; timings are taken in separate runs without tracemalloc).
Writes results/bench_graphcut.json (see benchlib.save).

    OMP_NUM_THREADS=1 python benchmarks/bench_graphcut.py                 # n = 500 1300 2600
    OMP_NUM_THREADS=1 python benchmarks/bench_graphcut.py --n 1300 --budget 50 --classes 100
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load, save  # noqa: E402

from dc3ray.core.selection import (factored_similarity, graphcut_greedy,  # noqa: E402
                                   materialised_gradient)


def reference_greedy(sim: np.ndarray, budget: int, lam: float = 1.0):
    """The textbook greedy: recompute every remaining candidate's gain at every step."""
    n = len(sim)
    chosen: list[int] = []
    gains: list[float] = []
    for _ in range(budget):
        best, best_gain = -1, -np.inf
        for x in range(n):
            if x in chosen:
                continue
            g = sim[:, x].sum() - 2.0 * lam * sim[chosen, x].sum()
            if g > best_gain:
                best, best_gain = x, g
        chosen.append(best)
        gains.append(float(best_gain))
    return np.asarray(chosen), np.asarray(gains)


def materialised_similarity(e: np.ndarray, h: np.ndarray) -> np.ndarray:
    """The same s_ij as factored_similarity, through the explicit (n, C + C*D) gradients."""
    g = materialised_gradient(e, h)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return 0.5 + 0.5 * g @ g.T


def best_of(fn, repeats: int) -> tuple[float, object]:
    """(fastest wall seconds over `repeats` calls, the last call's output)."""
    out, best = None, float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def traced_peak_mb(fn) -> float:
    """Peak Python + numpy memory allocated during fn() (MiB), above what was live before it."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del out
    return round((peak - base) / 2**20, 2)


def synthetic_factors(n: int, classes: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """e (n, classes) ~ N(0, 1) and h (n, dim) = |N(0, 1)| (post-ReLU-like), float64."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, classes)), np.abs(rng.normal(size=(n, dim)))


def measure(n: int, budget: int, classes: int, dim: int, repeats: int, seed: int) -> dict:
    """All measurements for one class of n items (see the module docstring)."""
    e, h = synthetic_factors(n, classes, dim, seed)
    t_fact, sim = best_of(lambda: factored_similarity(e, h), repeats)
    t_mat, sim_mat = best_of(lambda: materialised_similarity(e, h), 1)
    t_fast, (fast_picks, fast_gains) = best_of(lambda: graphcut_greedy(sim, budget), repeats)
    t_ref, (ref_picks, ref_gains) = best_of(lambda: reference_greedy(sim, budget), 1)
    mem_fact = traced_peak_mb(lambda: factored_similarity(e, h))
    mem_mat = traced_peak_mb(lambda: materialised_similarity(e, h))
    return {
        "n": n, "budget": budget, "C": classes, "D": dim,
        "graphcut_vectorised_s": round(t_fast, 5),
        "graphcut_reference_s": round(t_ref, 4),
        "speedup": round(t_ref / t_fast, 1),
        "same_picks": bool(np.array_equal(fast_picks, ref_picks)),
        "max_gain_diff": float(np.max(np.abs(fast_gains - ref_gains))),
        "similarity_factored_s": round(t_fact, 4),
        "similarity_materialised_s": round(t_mat, 4),
        "similarity_speedup": round(t_mat / t_fact, 1),
        "similarity_max_abs_diff": float(np.max(np.abs(sim - sim_mat))),
        "similarity_factored_peak_mb": mem_fact,
        "similarity_materialised_peak_mb": mem_mat,
        "memory_ratio": round(mem_mat / mem_fact, 1) if mem_fact > 0 else None,
        "materialised_gradient_mb": round(n * classes * (1 + dim) * 8 / 2**20, 1),
    }


def summary_rows(runs: list[dict]) -> list[dict]:
    """One flat row per n for the markdown table."""
    return [{"n": r["n"], "budget": r["budget"], "C": r["C"], "D": r["D"],
             "greedy_reference_s": r["graphcut_reference_s"],
             "greedy_vectorised_s": r["graphcut_vectorised_s"], "speedup": r["speedup"],
             "same_picks": r["same_picks"],
             "sim_materialised_s": r["similarity_materialised_s"],
             "sim_factored_s": r["similarity_factored_s"],
             "sim_materialised_peak_mb": r["similarity_materialised_peak_mb"],
             "sim_factored_peak_mb": r["similarity_factored_peak_mb"]} for r in runs]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[500, 1300, 2600],
                    help="items in the class (ImageNet: ~1300)")
    ap.add_argument("--budget", type=int, default=50)
    ap.add_argument("--classes", type=int, default=10, help="C, the size of e")
    ap.add_argument("--dim", type=int, default=512, help="D, the size of h (ResNet-18: 512)")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs (fast paths)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default=None, help="where the JSON record goes (default results/)")
    return ap


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    load_before = load()
    runs = []
    for n in args.n:
        if args.budget > n:
            raise SystemExit(f"--budget {args.budget} is larger than --n {n}; lower --budget")
        r = measure(n, args.budget, args.classes, args.dim, args.repeats, args.seed)
        print(f"n={n}: greedy {r['graphcut_reference_s']}s -> {r['graphcut_vectorised_s']}s "
              f"(x{r['speedup']}, same picks {r['same_picks']}); similarity "
              f"{r['similarity_materialised_s']}s/{r['similarity_materialised_peak_mb']} MiB -> "
              f"{r['similarity_factored_s']}s/{r['similarity_factored_peak_mb']} MiB", flush=True)
        runs.append(r)
    result = {"summary": summary_rows(runs), "runs": runs, "numpy": np.__version__,
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    save("bench_graphcut", result, argv, load_before=load_before, out_dir=args.out_dir)
    return result


if __name__ == "__main__":
    main()
