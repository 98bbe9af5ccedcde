"""DC3 step 1-2 maths: per-class bins, budget split, GraphCut on gradient similarity, baselines.

Pure numpy / sklearn / apricot; never imports ray. Every objective has one interface:

    objective(sim_or_features, budget, rng=None) -> (indices int64 (budget,),
                                                    gains float64 (budget,))

`indices` are positions in the input, best first (greedy order); `gains` are the marginal gains
(or the method's score, see each docstring) at the moment each item was picked.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa

from ..config import SelectConfig
from ..errors import ConfigError, DataError
from . import schema
from .seeding import rng_for

# Manifest columns (one row per selected image), in the order written to Parquet.
BIN = "bin"
RANK = "rank"
GAIN = "gain"
METHOD = "method"
SEED = "seed"
MANIFEST_COLUMNS = (schema.KEY, schema.LABEL, BIN, RANK, GAIN, METHOD, SEED)
MANIFEST_SCHEMA = pa.schema([
    pa.field(schema.KEY, pa.string(), nullable=False),
    pa.field(schema.LABEL, pa.int64(), nullable=False),
    pa.field(BIN, pa.int32(), nullable=False),
    pa.field(RANK, pa.int32(), nullable=False),
    pa.field(GAIN, pa.float64(), nullable=False),
    pa.field(METHOD, pa.string(), nullable=False),
    pa.field(SEED, pa.int64(), nullable=False),
])

_EMPTY = (np.zeros(0, np.int64), np.zeros(0, np.float64))


# --------------------------------------------------------------------------------------------
# Gradient similarity
# --------------------------------------------------------------------------------------------

def materialised_gradient(e: np.ndarray, h: np.ndarray) -> np.ndarray:
    """g = [e, e (x) h] per row: (n, C) and (n, D) -> float64 (n, C + C*D). Tests/bench only."""
    e = np.asarray(e, np.float64)
    h = np.asarray(h, np.float64)
    outer = (e[:, :, None] * h[:, None, :]).reshape(len(e), -1)
    return np.concatenate([e, outer], axis=1)


def factored_similarity(e: np.ndarray, h: np.ndarray) -> np.ndarray:
    """s_ij = 0.5 + 0.5 * cos(g_i, g_j) for g = [e, e (x) h], without building g.

    e: (n, C) dL/dz, h: (n, D) penultimate features (any float dtype). Returns float64 (n, n)
    in [0, 1]. Uses <g_i, g_j> = <e_i, e_j> (1 + <h_i, h_j>) and ||g_i||^2 = ||e_i||^2 (1 +
    ||h_i||^2), so memory is O(n^2 + n (C + D)) instead of O(n C D). A zero gradient has no
    direction: its cosine with everything (itself included) is taken as 0, i.e. s = 0.5.
    """
    e = np.asarray(e, np.float64)
    h = np.asarray(h, np.float64)
    if e.ndim != 2 or h.ndim != 2 or len(e) != len(h):
        raise ValueError(f"factored_similarity expects e (n, C) and h (n, D) with the same n, "
                         f"got {e.shape} and {h.shape}")
    dot = (e @ e.T) * (1.0 + h @ h.T)
    sq = np.einsum("ij,ij->i", e, e) * (1.0 + np.einsum("ij,ij->i", h, h))
    norm = np.sqrt(np.maximum(sq, 0.0))
    ok = norm > 0
    inv = np.zeros_like(norm)
    inv[ok] = 1.0 / norm[ok]
    cos = dot * inv[:, None] * inv[None, :]
    np.clip(cos, -1.0, 1.0, out=cos)  # rounding can push |cos| a hair above 1
    return 0.5 + 0.5 * cos


def cosine_similarity01(x: np.ndarray) -> np.ndarray:
    """0.5 + 0.5 * cos(x_i, x_j) for features x (n, d) -> float64 (n, n) in [0, 1]."""
    x = np.asarray(x, np.float64)
    norm = np.linalg.norm(x, axis=1)
    inv = np.where(norm > 0, 1.0 / np.where(norm > 0, norm, 1.0), 0.0)
    cos = (x * inv[:, None]) @ (x * inv[:, None]).T
    return 0.5 + 0.5 * np.clip(cos, -1.0, 1.0)


# --------------------------------------------------------------------------------------------
# Objectives
# --------------------------------------------------------------------------------------------

def _check_budget(budget: int, n: int, what: str) -> int:
    budget = int(budget)
    if budget < 0 or budget > n:
        raise ValueError(f"{what}: budget {budget} must be between 0 and the {n} items given")
    return budget


def graphcut_greedy(sim: np.ndarray, budget: int, rng: np.random.Generator | None = None,
                    *, lam: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Greedy GraphCut: gain(x|S) = sum_i s_ix - 2 * lam * sum_{j in S} s_jx (DESIGN step 2).

    sim: (n, n) similarity (symmetric in practice; row j of `sim` is s_j.). Keeps the running
    gain vector and subtracts one row per pick: O(n) per step after the O(n^2) column sums.
    Ties go to the lowest index. `rng` is unused (the greedy is deterministic).
    Returns (indices int64 (budget,), gains float64 (budget,)).
    """
    sim = np.asarray(sim, np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"graphcut_greedy expects a square similarity matrix, got {sim.shape}")
    n = sim.shape[0]
    budget = _check_budget(budget, n, "graphcut_greedy")
    gains = sim.sum(axis=0)
    taken = np.zeros(n, bool)
    picks = np.empty(budget, np.int64)
    picked_gains = np.empty(budget, np.float64)
    for t in range(budget):
        masked = np.where(taken, -np.inf, gains)
        x = int(np.argmax(masked))  # first maximum = lowest index on ties
        picks[t], picked_gains[t] = x, gains[x]
        taken[x] = True
        gains = gains - (2.0 * lam) * sim[x]
    return picks, picked_gains


def facility_location(sim_or_features: np.ndarray, budget: int,
                      rng: np.random.Generator | None = None, *, metric: str = "precomputed",
                      backend: str = "apricot") -> tuple[np.ndarray, np.ndarray]:
    """Greedy facility location f(S) = sum_i max_{j in S} s_ij; returns (indices, gains).

    With metric="precomputed" (default) the input is an (n, n) non-negative similarity matrix
    (e.g. `factored_similarity`); any other sklearn metric name takes features (n, d), which
    apricot turns into similarities max(dist) - dist (apricot backend only).
    backend="apricot": apricot-select's FacilityLocationSelection (lazy greedy); note that
    apricot re-JITs its numba kernels on every fit (about 2.5 s per call on our CPUs).
    backend="numpy": the same greedy, exact and vectorised (O(n^2) per pick, ties to the
    lowest index), no compile cost. `rng` is unused (both are deterministic).
    """
    x = np.asarray(sim_or_features, np.float64)
    n = x.shape[0]
    budget = _check_budget(budget, n, "facility_location")
    if budget == 0:
        return _EMPTY
    if backend == "numpy":
        if metric != "precomputed" or x.shape != (n, n):
            raise ValueError("facility_location(backend='numpy') takes a square similarity "
                             "matrix with metric='precomputed'")
        cur = np.zeros(n)
        taken = np.zeros(n, bool)
        picks = np.empty(budget, np.int64)
        gains = np.empty(budget, np.float64)
        for t in range(budget):
            g = np.maximum(x, cur[:, None]).sum(axis=0) - cur.sum()
            g[taken] = -np.inf
            j = int(np.argmax(g))
            picks[t], gains[t] = j, g[j]
            taken[j] = True
            cur = np.maximum(cur, x[:, j])
        return picks, gains
    if backend != "apricot":
        raise ValueError(f"facility_location: backend={backend!r} must be 'apricot' or 'numpy'")
    if n == 1:
        return np.zeros(1, np.int64), np.array([float(x[0, 0]) if metric == "precomputed" else 0.0])
    from apricot import FacilityLocationSelection  # lazy: apricot pulls in numba

    sel = FacilityLocationSelection(budget, metric=metric, optimizer="lazy", verbose=False)
    sel.fit(x)
    return np.asarray(sel.ranking, np.int64), np.asarray(sel.gains, np.float64)


def random_select(n: int, budget: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`budget` distinct indices of range(n) drawn with `rng`; gains are all 0 (no objective)."""
    budget = _check_budget(budget, n, "random_select")
    if rng is None:
        raise ValueError("random_select needs an rng (use dc3ray.core.seeding.rng_for)")
    return rng.choice(n, size=budget, replace=False).astype(np.int64), np.zeros(budget)


def herding(features: np.ndarray, budget: int,
            rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Herding (Welling 2009, as in the DC benchmarks): greedily keep the running mean of the
    selection closest to the class mean.

    features: (n, d). Step t picks argmin_x ||mu - (sum_S + f_x) / (t + 1)||; the gain reported
    is minus that distance (higher is better). Ties go to the lowest index; `rng` is unused.
    """
    f = np.asarray(features, np.float64)
    n = len(f)
    budget = _check_budget(budget, n, "herding")
    mu = f.mean(axis=0) if n else None
    total = np.zeros(f.shape[1]) if n else None
    taken = np.zeros(n, bool)
    picks = np.empty(budget, np.int64)
    gains = np.empty(budget, np.float64)
    for t in range(budget):
        dist = np.linalg.norm(mu[None, :] - (total[None, :] + f) / (t + 1), axis=1)
        dist[taken] = np.inf
        x = int(np.argmin(dist))
        picks[t], gains[t] = x, -dist[x]
        taken[x] = True
        total = total + f[x]
    return picks, gains


def kcenter(features: np.ndarray, budget: int, rng: np.random.Generator | None = None, *,
            start: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center (farthest-point) on Euclidean features (n, d).

    The first center is the item nearest the class mean (start="mean", deterministic) or a
    uniform draw from `rng` (start="random"); every next pick is the item farthest from its
    nearest chosen center. Gain = that distance (for the first pick: its distance to the mean).
    Ties go to the lowest index.
    """
    f = np.asarray(features, np.float64)
    n = len(f)
    budget = _check_budget(budget, n, "kcenter")
    if budget == 0:
        return _EMPTY
    to_mean = np.linalg.norm(f - f.mean(axis=0), axis=1)
    if start == "mean":
        first = int(np.argmin(to_mean))
    elif start == "random":
        if rng is None:
            raise ValueError("kcenter(start='random') needs an rng")
        first = int(rng.integers(n))
    else:
        raise ValueError(f"kcenter: start={start!r} must be 'mean' or 'random'")
    picks = [first]
    gains = [float(to_mean[first])]
    nearest = np.linalg.norm(f - f[first], axis=1)
    nearest[first] = -np.inf
    for _ in range(budget - 1):
        x = int(np.argmax(nearest))
        picks.append(x)
        gains.append(float(nearest[x]))
        nearest = np.minimum(nearest, np.linalg.norm(f - f[x], axis=1))
        nearest[picks] = -np.inf  # chosen centers never come back
    return np.asarray(picks, np.int64), np.asarray(gains, np.float64)


def centroid(features: np.ndarray, budget: int,
             rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The `budget` items nearest the class mean (features (n, d)); gain = minus the distance.

    Stable sort, so ties go to the lowest index; `rng` is unused.
    """
    f = np.asarray(features, np.float64)
    budget = _check_budget(budget, len(f), "centroid")
    if budget == 0:
        return _EMPTY
    dist = np.linalg.norm(f - f.mean(axis=0), axis=1)
    order = np.argsort(dist, kind="stable")[:budget]
    return order.astype(np.int64), -dist[order]


# --------------------------------------------------------------------------------------------
# Bins and budgets
# --------------------------------------------------------------------------------------------

def split_budget(bin_sizes: Sequence[int], ipc: int) -> list[int]:
    """Per-bin budgets that sum to exactly min(ipc, sum(bin_sizes)), each <= its bin's size.

    Water-filling: every bin that still has room gets an equal share of what is left; the
    remainder goes one each to the bins with the fewest picks so far, then the largest bins,
    then the lower bin index (in the first round: largest bins first); bins that hit their size
    hand the rest back and the loop repeats. So bins with room differ by at most one image.
    Deterministic, O(K^2 log K) at worst.
    """
    sizes = [int(s) for s in bin_sizes]
    if any(s < 0 for s in sizes):
        raise ValueError(f"split_budget: bin sizes must be >= 0, got {sizes}")
    if ipc < 0:
        raise ValueError(f"split_budget: ipc must be >= 0, got {ipc}")
    alloc = [0] * len(sizes)
    remaining = min(int(ipc), sum(sizes))
    while remaining > 0:
        active = sorted((b for b in range(len(sizes)) if alloc[b] < sizes[b]),
                        key=lambda b: (alloc[b], -sizes[b], b))
        share, extra = divmod(remaining, len(active))
        for i, b in enumerate(active):
            give = min(sizes[b] - alloc[b], share + (1 if i < extra else 0))
            alloc[b] += give
            remaining -= give
    return alloc


def proportional_budget(bin_sizes: Sequence[int], ipc: int) -> list[int]:
    """Per-bin budgets proportional to bin size, summing to exactly min(ipc, sum(sizes)), each
    <= its bin's size: floors of ipc * size / total, then one more to the largest remainders
    (ties: larger bin, then lower index); room left by a capped bin goes the same way."""
    sizes = [int(s) for s in bin_sizes]
    if any(s < 0 for s in sizes) or ipc < 0:
        raise ValueError(f"proportional_budget: sizes {sizes} and ipc {ipc} must be >= 0")
    total, want = sum(sizes), min(int(ipc), sum(sizes))
    if total == 0:
        return [0] * len(sizes)
    exact = [want * s / total for s in sizes]
    out = [min(int(e), s) for e, s in zip(exact, sizes)]
    order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - int(exact[i])), -sizes[i], i))
    while sum(out) < want:
        for i in order:
            if sum(out) < want and out[i] < sizes[i]:
                out[i] += 1
    return out


def reference_budget(bin_sizes: Sequence[int], ipc: int) -> list[int]:
    """The reference code's per-bin budget max(1, ipc // K), capped at each bin's size.

    Kept for comparison only: the class total is K * max(1, ipc // K), not ipc.
    """
    k = len(bin_sizes)
    per = max(1, int(ipc) // max(k, 1))
    return [min(per, int(s)) for s in bin_sizes]


def make_bins(embeddings: np.ndarray, k: int, ipc: int, pca_dim: int, seed: int, *,
              clamp: bool = True) -> np.ndarray:
    """KMeans bins of one class: PCA(min(pca_dim, n-1, d)) then KMeans(K, n_init=10).

    embeddings: (n, d) float. K = min(k, ipc, n) (clamp=True; DESIGN step 1) or min(k, n)
    (clamp=False, the reference's K at small IPC). Returns int64 labels (n,) in [0, K).
    KMeans may leave a bin empty on duplicate points; `split_budget` copes with size-0 bins.
    """
    x = np.asarray(embeddings, np.float64)
    if x.ndim != 2:
        raise ValueError(f"make_bins expects embeddings (n, d), got shape {x.shape}")
    n, d = x.shape
    kk = min(int(k), int(ipc), n) if clamp else min(int(k), n)
    if n <= 1 or kk <= 1:
        return np.zeros(n, np.int64)
    from sklearn.cluster import KMeans  # lazy: sklearn import is slow
    from sklearn.decomposition import PCA

    dim = min(int(pca_dim), n - 1, d)
    z = PCA(n_components=dim, random_state=seed).fit_transform(x) if dim < d else x
    km = KMeans(n_clusters=kk, random_state=seed, n_init=10).fit(z)
    return km.labels_.astype(np.int64)


# --------------------------------------------------------------------------------------------
# One class end to end
# --------------------------------------------------------------------------------------------

def _round_robin(bin_picks: list[tuple[int, np.ndarray, np.ndarray]]
                 ) -> list[tuple[int, int, float]]:
    """(bin, index, gain) ordered by pick position within the bin, then by bin index.

    So a prefix of the class ranking is spread over all bins instead of draining bin 0 first.
    """
    out = []
    depth = max((len(p) for _, p, _ in bin_picks), default=0)
    for t in range(depth):
        for b, picks, gains in bin_picks:
            if t < len(picks):
                out.append((b, int(picks[t]), float(gains[t])))
    return out


def select_class(keys: Sequence[str], label: int, embeddings: np.ndarray | None,
                 e: np.ndarray | None, h: np.ndarray | None, cfg: SelectConfig, *,
                 class_name: str | None = None) -> list[dict]:
    """Select min(ipc, n) images of one class; returns manifest rows ranked best first.

    keys: n image keys; embeddings (n, d) for bins and the baselines; e (n, C), h (n, D)
    gradient factors for the GraphCut / facility objectives (None where the method needs none).
    Row: {key, label, bin, rank, gain, method, seed}; rank 0..budget-1 is the order in the class.

    Methods:
    - dc3: bins = make_bins(embeddings) (K clamped to ipc unless cfg.faithful); per-bin budgets
      from split_budget (exactly ipc per class, also when faithful); GraphCut on
      factored_similarity inside each bin; ranks interleave bins by pick depth.
    - graphcut / facility: the objective over the whole class on factored similarity (one bin,
      bin = 0), the DC3 ablation without bins.
    - random / herding / kcenter / centroid: baselines on embeddings (random needs nothing).
    Items are processed in key order and randomness comes from rng_for(cfg.seed, "select",
    label, method), so rows depend only on the (key -> features) contents, not on row order;
    method "random" picks the same keys as `random_subset` with the same seed.
    An ipc larger than the class raises ValueError unless cfg.take_all (then all n are kept).
    """
    n = len(keys)
    name = f"{class_name!r} (label {label})" if class_name is not None else f"label {label}"
    if n == 0:
        raise DataError(f"class {name} has no images; remove it from the class map or re-ingest")
    if cfg.ipc > n and not cfg.take_all:
        raise ConfigError(f"class {name} has {n} images but select.ipc={cfg.ipc}; lower "
                         "select.ipc or set select.take_all=true to keep the whole class")
    budget = min(cfg.ipc, n)
    method = cfg.method
    rng = rng_for(cfg.seed, "select", int(label), method)
    # Work in key order so the result depends on the class's contents, not on row order.
    order = np.argsort(np.asarray([str(k) for k in keys], dtype=object), kind="stable")
    keys = [keys[i] for i in order]

    def need(arr, what):
        if arr is None:
            raise ValueError(f"select.method={method!r} needs {what} for class {name}; "
                             "compute features first (compute_features)")
        arr = np.asarray(arr)
        if len(arr) != n:
            raise ValueError(f"class {name}: {what} has {len(arr)} rows for {n} keys")
        arr = arr[order]  # now aligned with `keys` (key order)
        # NaN/inf would make KMeans raise and turn every similarity into NaN; name the images.
        bad = np.flatnonzero(~np.isfinite(arr.reshape(n, -1)).all(axis=1))
        if bad.size:
            raise ValueError(f"class {name}: {what} of {bad.size} image(s) hold NaN/inf, e.g. "
                             f"{[str(keys[i]) for i in bad[:3]]}; the backbone produced broken "
                             "features (fp16 overflow? bad weights?): fix it and recompute them")
        return arr

    if method == "dc3":
        emb = need(embeddings, "embeddings")
        ee, hh = need(e, "gradient factor e"), need(h, "gradient factor h")
        bins = make_bins(emb, cfg.k, cfg.ipc, cfg.pca_dim, cfg.seed, clamp=not cfg.faithful)
        nbins = int(bins.max()) + 1
        sizes = np.bincount(bins, minlength=nbins)
        budgets = (proportional_budget if cfg.budget == "proportional" else split_budget)(
            sizes, budget)
        bin_picks = []
        for b in range(nbins):
            if budgets[b] == 0:
                continue
            members = np.flatnonzero(bins == b)
            sim = factored_similarity(ee[members], hh[members])
            picks, gains = graphcut_greedy(sim, budgets[b])
            bin_picks.append((b, members[picks], gains))
        ranked = _round_robin(bin_picks)
    elif method in ("graphcut", "facility"):
        sim = factored_similarity(need(e, "gradient factor e"), need(h, "gradient factor h"))
        objective = graphcut_greedy if method == "graphcut" else facility_location
        picks, gains = objective(sim, budget, rng)
        ranked = [(0, int(i), float(g)) for i, g in zip(picks, gains)]
    elif method == "random":
        picks, gains = random_select(n, budget, rng)
        ranked = [(0, int(i), float(g)) for i, g in zip(picks, gains)]
    elif method in ("herding", "kcenter", "centroid"):
        objective = {"herding": herding, "kcenter": kcenter, "centroid": centroid}[method]
        picks, gains = objective(need(embeddings, "embeddings"), budget, rng)
        ranked = [(0, int(i), float(g)) for i, g in zip(picks, gains)]
    else:
        raise ValueError(f"select.method={method!r} is unknown")

    if len(ranked) != budget or len({i for _, i, _ in ranked}) != budget:
        # An invariant, not a user error: say where it broke.
        raise AssertionError(f"class {name}: {method} returned {len(ranked)} picks for "
                             f"budget {budget}")
    return [{schema.KEY: str(keys[i]), schema.LABEL: int(label), BIN: int(b), RANK: r,
             GAIN: g, METHOD: method, SEED: int(cfg.seed)}
            for r, (b, i, g) in enumerate(ranked)]


def manifest_table(rows: list[dict]) -> pa.Table:
    """Manifest rows -> Arrow table (MANIFEST_SCHEMA) sorted by (label, rank)."""
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    return table.sort_by([(schema.LABEL, "ascending"), (RANK, "ascending")])


# --------------------------------------------------------------------------------------------
# The model-free baseline set
# --------------------------------------------------------------------------------------------

def random_subset(table: pa.Table, ipc: int, seed: int, *, take_all: bool = False) -> pa.Table:
    """`ipc` rows per label drawn with rng_for(seed, "select", label, "random").

    Rows of a class are ordered by key before drawing, so the pick does not depend on shard or
    row order. Output: the chosen rows (all input columns), by label then draw order. A class
    with fewer than ipc rows raises ValueError naming it unless take_all.
    """
    labels = np.asarray(table.column(schema.LABEL).to_numpy(zero_copy_only=False), np.int64)
    keys = np.asarray(table.column(schema.KEY).to_pylist(), dtype=object)
    has_names = schema.CLASS_NAME in table.column_names
    chosen = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        rows = rows[np.argsort(keys[rows].astype(str), kind="stable")]
        if ipc > len(rows) and not take_all:
            cname = table.column(schema.CLASS_NAME)[int(rows[0])].as_py() if has_names else None
            who = f"{cname!r} (label {label})" if cname is not None else f"label {label}"
            raise ConfigError(f"class {who} has {len(rows)} images but ipc={ipc}; lower ipc or "
                             "pass take_all=True")
        picks, _ = random_select(len(rows), min(ipc, len(rows)),
                                 rng_for(seed, "select", int(label), "random"))
        chosen.append(rows[picks])
    idx = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    return table.take(pa.array(idx, pa.int64()))


__all__ = [
    "factored_similarity", "materialised_gradient", "cosine_similarity01", "graphcut_greedy",
    "facility_location", "random_select", "herding", "kcenter", "centroid", "split_budget",
    "proportional_budget",
    "reference_budget", "make_bins", "select_class", "manifest_table", "random_subset",
    "MANIFEST_SCHEMA", "MANIFEST_COLUMNS",
]
