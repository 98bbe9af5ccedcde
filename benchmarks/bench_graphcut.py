"""Vectorised GraphCut (dc3ray.core.selection.graphcut_greedy) vs a plain per-candidate greedy.

Prints one JSON object: timings of both at n items / budget picks, their ratio, whether the
picks are identical, and the factored vs materialised gradient-similarity timings.

    OMP_NUM_THREADS=1 python benchmarks/bench_graphcut.py --n 1300 --budget 50
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from dc3ray.core.selection import factored_similarity, graphcut_greedy, materialised_gradient


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


def best_of(fn, repeats: int) -> tuple[float, object]:
    out, best = None, float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1300, help="items in the class (ImageNet: ~1300)")
    ap.add_argument("--budget", type=int, default=50)
    ap.add_argument("--classes", type=int, default=10, help="C, the size of e")
    ap.add_argument("--dim", type=int, default=512, help="D, the size of h (ResNet-18: 512)")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs (fast paths)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    e = rng.normal(size=(args.n, args.classes))
    h = np.abs(rng.normal(size=(args.n, args.dim)))  # post-ReLU-like features
    t_fact, sim = best_of(lambda: factored_similarity(e, h), args.repeats)

    def materialised():
        g = materialised_gradient(e, h)
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        return 0.5 + 0.5 * g @ g.T

    t_mat, sim_mat = best_of(materialised, 1)
    t_fast, (fast_picks, fast_gains) = best_of(lambda: graphcut_greedy(sim, args.budget),
                                               args.repeats)
    t_ref, (ref_picks, ref_gains) = best_of(lambda: reference_greedy(sim, args.budget), 1)
    result = {
        "n": args.n, "budget": args.budget, "C": args.classes, "D": args.dim,
        "graphcut_vectorised_s": round(t_fast, 5),
        "graphcut_reference_s": round(t_ref, 4),
        "speedup": round(t_ref / t_fast, 1),
        "same_picks": bool(np.array_equal(fast_picks, ref_picks)),
        "max_gain_diff": float(np.max(np.abs(fast_gains - ref_gains))),
        "similarity_factored_s": round(t_fact, 4),
        "similarity_materialised_s": round(t_mat, 4),
        "similarity_max_abs_diff": float(np.max(np.abs(sim - sim_mat))),
        "materialised_gradient_mb": round(args.n * args.classes * (1 + args.dim) * 8 / 2**20, 1),
        "python": platform.python_version(), "numpy": np.__version__,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
