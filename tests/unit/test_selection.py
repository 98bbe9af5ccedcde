"""DC3 selection maths: similarity, GraphCut, budgets, bins, per-class selection (no Ray)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from dc3ray.config import SelectConfig
from dc3ray.core import schema
from dc3ray.core.selection import (
    centroid, cosine_similarity01, facility_location, factored_similarity, graphcut_greedy,
    herding, kcenter, make_bins, manifest_table, materialised_gradient, random_select,
    random_subset, select_class, split_budget,
)


def reference_graphcut(sim: np.ndarray, budget: int, lam: float = 1.0):
    """Plain greedy, one candidate at a time: gain(x|S) = sum_i s_ix - 2*lam*sum_{j in S} s_jx."""
    n = len(sim)
    chosen, gains = [], []
    for _ in range(budget):
        best, best_gain = None, -np.inf
        for x in range(n):
            if x in chosen:
                continue
            g = sum(sim[i, x] for i in range(n)) - 2 * lam * sum(sim[j, x] for j in chosen)
            if g > best_gain:  # strict: the first (lowest) index wins ties
                best, best_gain = x, g
        chosen.append(best)
        gains.append(best_gain)
    return np.array(chosen), np.array(gains)


def class_data(n: int, c: int = 5, d: int = 8, emb_dim: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    keys = [f"img{i:04d}" for i in range(n)]
    return (keys, rng.normal(size=(n, emb_dim)), rng.normal(size=(n, c)), rng.normal(size=(n, d)))


# ------------------------------------------------------------------ similarity

def test_factored_similarity_equals_cosine_of_materialised_gradient():
    rng = np.random.default_rng(1)
    e, h = rng.normal(size=(30, 4)), rng.normal(size=(30, 7))
    g = materialised_gradient(e, h)
    assert g.shape == (30, 4 + 4 * 7)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    expected = 0.5 + 0.5 * gn @ gn.T
    np.testing.assert_allclose(factored_similarity(e, h), expected, atol=1e-12)


def test_factored_similarity_gives_zero_gradients_half_similarity_without_nans():
    rng = np.random.default_rng(2)
    e, h = rng.normal(size=(5, 3)), rng.normal(size=(5, 4))
    e[2] = 0.0
    s = factored_similarity(e, h)
    assert np.isfinite(s).all()
    np.testing.assert_allclose(s[2], 0.5)
    np.testing.assert_allclose(s[:, 2], 0.5)
    assert s.min() >= 0.0 and s.max() <= 1.0
    np.testing.assert_allclose(np.diag(s)[[0, 1, 3, 4]], 1.0)


def test_cosine_similarity01_matches_definition():
    x = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    np.testing.assert_allclose(cosine_similarity01(x),
                               [[1, 0.5, 0], [0.5, 1, 0.5], [0, 0.5, 1]], atol=1e-12)


# ------------------------------------------------------------------ GraphCut

@pytest.mark.parametrize("n,budget,seed", [(1, 1, 0), (7, 3, 1), (25, 10, 2), (40, 40, 3),
                                           (60, 17, 4)])
def test_fast_graphcut_matches_plain_reference_greedy(n, budget, seed):
    rng = np.random.default_rng(seed)
    e, h = rng.normal(size=(n, 3)), rng.normal(size=(n, 5))
    sim = factored_similarity(e, h)
    picks, gains = graphcut_greedy(sim, budget)
    ref_picks, ref_gains = reference_graphcut(sim, budget)
    np.testing.assert_array_equal(picks, ref_picks)
    np.testing.assert_allclose(gains, ref_gains, rtol=1e-9, atol=1e-9)


def test_graphcut_breaks_ties_by_lowest_index():
    picks, gains = graphcut_greedy(np.ones((6, 6)), 3)
    np.testing.assert_array_equal(picks, [0, 1, 2])
    np.testing.assert_allclose(gains, [6.0, 4.0, 2.0])


def test_graphcut_first_pick_is_the_most_central_item():
    sim = np.array([[1.0, 0.9, 0.1], [0.9, 1.0, 0.8], [0.1, 0.8, 1.0]])
    assert graphcut_greedy(sim, 1)[0][0] == 1


def test_graphcut_rejects_a_budget_above_n():
    with pytest.raises(ValueError, match="budget 4"):
        graphcut_greedy(np.eye(3), 4)


# ------------------------------------------------------------------ other objectives

def test_facility_location_picks_one_item_per_cluster():
    # Two tight groups far apart: facility location must cover both with its two picks.
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.01, (10, 3)), rng.normal(5, 0.01, (10, 3))])
    picks, gains = facility_location(cosine_similarity01(x - x.mean(0)), 2, backend="numpy")
    assert {int(p) // 10 for p in picks} == {0, 1}
    assert gains[0] >= gains[1] > 0


def test_facility_location_apricot_and_numpy_backends_agree():
    rng = np.random.default_rng(3)
    sim = factored_similarity(rng.normal(size=(80, 4)), rng.normal(size=(80, 6)))
    a_picks, a_gains = facility_location(sim, 12)  # apricot (default)
    n_picks, n_gains = facility_location(sim, 12, backend="numpy")
    np.testing.assert_array_equal(a_picks, n_picks)
    np.testing.assert_allclose(a_gains, n_gains, rtol=1e-9)
    # Greedy facility-location gains never increase (submodularity).
    assert (np.diff(n_gains) <= 1e-12).all()


def test_random_select_is_seeded_and_distinct():
    a, ga = random_select(50, 20, np.random.default_rng(3))
    b, _ = random_select(50, 20, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 20 and (ga == 0).all()


def test_centroid_picks_items_nearest_the_mean():
    x = np.array([[0.0], [10.0], [-10.0], [1.0], [-2.0]])  # mean 0.2
    picks, gains = centroid(x, 3)
    np.testing.assert_array_equal(picks, [0, 3, 4])
    assert gains[0] > gains[1] > gains[2]


def test_kcenter_starts_near_the_mean_then_takes_the_farthest_point():
    x = np.array([[0.0], [1.0], [9.0], [-3.0]])  # mean 1.75: item 1 is nearest
    picks, gains = kcenter(x, 3)
    np.testing.assert_array_equal(picks, [1, 2, 3])
    np.testing.assert_allclose(gains, [0.75, 8.0, 4.0])


def test_kcenter_random_start_uses_the_rng():
    x = np.random.default_rng(0).normal(size=(30, 2))
    a, _ = kcenter(x, 5, np.random.default_rng(1), start="random")
    b, _ = kcenter(x, 5, np.random.default_rng(1), start="random")
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 5


def test_herding_first_pick_is_nearest_the_mean_and_tracks_it():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    picks, gains = herding(x, 10)
    assert picks[0] == np.argmin(np.linalg.norm(x - x.mean(0), axis=1))
    assert len(set(picks.tolist())) == 10
    # The running mean of the picks ends closer to the class mean than a random 10 do.
    herd_err = np.linalg.norm(x[picks].mean(0) - x.mean(0))
    rand_err = np.mean([np.linalg.norm(x[rng.choice(40, 10, replace=False)].mean(0) - x.mean(0))
                        for _ in range(50)])
    assert herd_err < rand_err
    np.testing.assert_allclose(-gains[-1], herd_err, atol=1e-12)


# ------------------------------------------------------------------ budgets and bins

def test_split_budget_examples():
    assert split_budget([10, 10, 10], 10) == [4, 3, 3]
    assert split_budget([5, 20, 20], 10) == [3, 4, 3]  # remainder to the largest bins first
    assert split_budget([10, 10, 10, 10, 1], 13) == [3, 3, 3, 3, 1]  # leftover to the fewest
    assert split_budget([1, 100, 100], 12) == [1, 6, 5]  # bin 0's leftover goes to the others
    assert split_budget([2, 3], 50) == [2, 3]  # never more than the class
    assert split_budget([0, 4, 4], 2) == [0, 1, 1]
    assert split_budget([3, 3, 3, 3], 1) == [1, 0, 0, 0]


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(0, 60), min_size=1, max_size=25), ipc=st.integers(0, 120))
def test_split_budget_sums_to_min_ipc_total_and_respects_bin_sizes(sizes, ipc):
    alloc = split_budget(sizes, ipc)
    assert sum(alloc) == min(ipc, sum(sizes))
    assert all(0 <= a <= s for a, s in zip(alloc, sizes))
    assert split_budget(sizes, ipc) == alloc  # deterministic
    # Even split: no bin holds more than one image above a bin that still has room.
    open_bins = [a for a, s in zip(alloc, sizes) if a < s]
    if open_bins:
        assert max(alloc) <= min(open_bins) + 1


def test_make_bins_clamps_k_to_ipc_and_class_size():
    emb = np.random.default_rng(0).normal(size=(30, 16))
    assert np.unique(make_bins(emb, k=10, ipc=1, pca_dim=50, seed=42)).tolist() == [0]
    assert len(np.unique(make_bins(emb, k=10, ipc=3, pca_dim=50, seed=42))) == 3
    assert len(np.unique(make_bins(emb[:4], k=10, ipc=50, pca_dim=50, seed=42))) == 4
    # faithful (no clamp): K bins even at IPC 1, like the reference.
    assert len(np.unique(make_bins(emb, k=10, ipc=1, pca_dim=50, seed=42, clamp=False))) == 10


def test_make_bins_handles_a_single_image():
    assert make_bins(np.ones((1, 5)), k=10, ipc=10, pca_dim=50, seed=0).tolist() == [0]


def test_make_bins_recovers_separated_clusters():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 20, size=(3, 10))
    emb = np.concatenate([c + rng.normal(size=(15, 10)) for c in centers])
    bins = make_bins(emb, k=3, ipc=10, pca_dim=5, seed=42)
    for g in range(3):
        assert len(set(bins[g * 15:(g + 1) * 15].tolist())) == 1
    assert len(set(bins.tolist())) == 3


# ------------------------------------------------------------------ select_class

@pytest.mark.parametrize("ipc", [1, 10, 50])
@pytest.mark.parametrize("k", [1, 10, 20])
@pytest.mark.parametrize("n", ["ipc", 73])
def test_dc3_returns_exactly_ipc_distinct_images(ipc, k, n):
    n = ipc if n == "ipc" else n  # a class exactly IPC big, and a bigger one
    keys, emb, e, h = class_data(n, seed=ipc + k)
    rows = select_class(keys, 3, emb, e, h, SelectConfig(ipc=ipc, k=k, pca_dim=8))
    assert len(rows) == ipc
    assert len({r["key"] for r in rows}) == ipc
    assert [r["rank"] for r in rows] == list(range(ipc))
    assert {r["label"] for r in rows} == {3} and {r["method"] for r in rows} == {"dc3"}
    assert len({r["bin"] for r in rows}) <= min(k, ipc)


@pytest.mark.parametrize("k", [1, 10, 20])
@pytest.mark.parametrize("method", ["dc3", "graphcut", "herding"])
def test_tiny_class_with_take_all_keeps_every_image(k, method):
    keys, emb, e, h = class_data(3, seed=k)
    rows = select_class(keys, 0, emb, e, h, SelectConfig(method=method, ipc=10, k=k,
                                                          take_all=True))
    assert sorted(r["key"] for r in rows) == keys


@pytest.mark.parametrize("ipc", [1, 10, 50])
def test_faithful_dc3_keeps_exact_ipc_with_unclamped_bins(ipc):
    keys, emb, e, h = class_data(60, seed=ipc)
    cfg = SelectConfig(ipc=ipc, k=10, pca_dim=8, faithful=True)
    rows = select_class(keys, 0, emb, e, h, cfg)
    assert len(rows) == ipc and len({r["key"] for r in rows}) == ipc


def test_dc3_rank_interleaves_bins():
    keys, emb, e, h = class_data(80, seed=5)
    rows = select_class(keys, 0, emb, e, h, SelectConfig(ipc=8, k=4, pca_dim=8))
    assert sorted(r["bin"] for r in rows[:4]) == [0, 1, 2, 3]


def test_dc3_picks_graphcut_order_within_each_bin():
    keys, emb, e, h = class_data(40, seed=9)
    cfg = SelectConfig(ipc=6, k=2, pca_dim=8)
    rows = select_class(keys, 0, emb, e, h, cfg)
    bins = make_bins(emb, 2, 6, 8, cfg.seed)
    for b in (0, 1):
        members = np.flatnonzero(bins == b)
        budget = sum(r["bin"] == b for r in rows)
        picks, gains = graphcut_greedy(factored_similarity(e[members], h[members]), budget)
        got = [r for r in rows if r["bin"] == b]
        assert [r["key"] for r in got] == [keys[i] for i in members[picks]]
        np.testing.assert_allclose([r["gain"] for r in got], gains)


@pytest.mark.parametrize("method", ["dc3", "graphcut", "facility", "random", "herding", "kcenter",
                                    "centroid"])
def test_every_method_is_deterministic_and_ignores_row_order(method):
    keys, emb, e, h = class_data(45, seed=11)
    cfg = SelectConfig(method=method, ipc=7, k=3, pca_dim=8, seed=5)
    a = select_class(keys, 2, emb, e, h, cfg)
    b = select_class(keys, 2, emb, e, h, cfg)
    assert a == b
    if method == "facility":
        return  # apricot re-JITs per call (~2.5 s); row order is covered by the other methods
    perm = np.random.default_rng(0).permutation(45)
    c = select_class([keys[i] for i in perm], 2, emb[perm], e[perm], h[perm], cfg)
    assert [r["key"] for r in c] == [r["key"] for r in a]
    assert len({r["key"] for r in a}) == 7


def test_random_method_depends_on_the_seed():
    keys, emb, e, h = class_data(100)
    a = select_class(keys, 0, None, None, None, SelectConfig(method="random", ipc=10, seed=1))
    b = select_class(keys, 0, None, None, None, SelectConfig(method="random", ipc=10, seed=2))
    assert {r["key"] for r in a} != {r["key"] for r in b}
    assert {r["seed"] for r in a} == {1}


def test_graphcut_method_matches_the_objective_on_the_whole_class():
    keys, emb, e, h = class_data(30, seed=4)
    rows = select_class(keys, 1, None, e, h, SelectConfig(method="graphcut", ipc=5))
    picks, gains = graphcut_greedy(factored_similarity(e, h), 5)
    assert [r["key"] for r in rows] == [keys[i] for i in picks]
    assert {r["bin"] for r in rows} == {0}


def test_ipc_larger_than_the_class_names_the_class():
    keys, emb, e, h = class_data(4)
    with pytest.raises(ValueError, match=r"'cat' \(label 3\) has 4 images but select.ipc=10"):
        select_class(keys, 3, emb, e, h, SelectConfig(ipc=10), class_name="cat")


def test_take_all_keeps_a_small_class_whole():
    keys, emb, e, h = class_data(4)
    rows = select_class(keys, 3, emb, e, h, SelectConfig(ipc=10, take_all=True))
    assert sorted(r["key"] for r in rows) == keys


def test_methods_say_which_features_they_miss():
    keys, emb, e, h = class_data(10)
    with pytest.raises(ValueError, match="gradient factor e"):
        select_class(keys, 0, emb, None, None, SelectConfig(method="dc3", ipc=2))
    with pytest.raises(ValueError, match="embeddings"):
        select_class(keys, 0, None, e, h, SelectConfig(method="herding", ipc=2))


def test_manifest_table_sorts_by_label_then_rank():
    keys, emb, e, h = class_data(20)
    cfg = SelectConfig(ipc=3, k=2, pca_dim=4)
    rows = (select_class(keys[:10], 1, emb[:10], e[:10], h[:10], cfg)
            + select_class(keys[10:], 0, emb[10:], e[10:], h[10:], cfg))
    t = manifest_table(rows)
    assert t.column("label").to_pylist() == [0, 0, 0, 1, 1, 1]
    assert t.column("rank").to_pylist() == [0, 1, 2, 0, 1, 2]
    assert t.schema.field("gain").type == pa.float64()


# ------------------------------------------------------------------ random_subset

def image_table(per_class: dict[int, int]) -> pa.Table:
    rows = [{schema.KEY: f"c{c}/{i:03d}", schema.LABEL: c, schema.CLASS_NAME: f"class{c}",
             schema.IMAGE: b"x", schema.HEIGHT: 1, schema.WIDTH: 1}
            for c, n in per_class.items() for i in range(n)]
    return pa.Table.from_pylist(rows, schema=schema.IMAGE_SCHEMA)


def test_random_subset_draws_ipc_per_class_reproducibly():
    t = image_table({0: 20, 1: 15, 2: 30})
    a = random_subset(t, 5, seed=7)
    assert a.num_rows == 15
    labels = a.column(schema.LABEL).to_pylist()
    assert [labels.count(c) for c in (0, 1, 2)] == [5, 5, 5]
    assert a.equals(random_subset(t, 5, seed=7))
    assert not a.equals(random_subset(t, 5, seed=8))
    # Shuffling the input rows does not change the pick.
    shuffled = t.take(pa.array(np.random.default_rng(0).permutation(t.num_rows)))
    assert random_subset(shuffled, 5, seed=7).column(schema.KEY).to_pylist() == \
        a.column(schema.KEY).to_pylist()


def test_random_subset_agrees_with_the_random_method():
    t = image_table({4: 25})
    keys = t.column(schema.KEY).to_pylist()
    rows = select_class(keys, 4, None, None, None, SelectConfig(method="random", ipc=6, seed=3))
    assert random_subset(t, 6, seed=3).column(schema.KEY).to_pylist() == [r["key"] for r in rows]


def test_random_subset_names_a_too_small_class():
    with pytest.raises(ValueError, match=r"'class1' \(label 1\) has 3 images"):
        random_subset(image_table({0: 10, 1: 3}), 5, seed=0)
    assert random_subset(image_table({0: 10, 1: 3}), 5, seed=0, take_all=True).num_rows == 8
