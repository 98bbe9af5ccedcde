"""RDED as a selection method (dc3ray.core.rded) and the per-bin budget options."""
from __future__ import annotations

import numpy as np
import pytest

from dc3ray.config import ConfigError, SelectConfig, from_dict
from dc3ray.core.rded import draw_candidates, rded_class, stitch
from dc3ray.core.selection import proportional_budget, split_budget


def _solid_images(n: int, side: int = 32) -> tuple[np.ndarray, list[str]]:
    """n images, each one solid colour of its own (so a patch tells which image it came from)."""
    colours = np.stack([np.arange(n) * 7 % 256, np.arange(n) * 53 % 256, np.arange(n) * 101 % 256], 1)
    images = np.broadcast_to(colours[:, None, None, :], (n, side, side, 3)).astype(np.uint8)
    return images.copy(), [f"c/{i:03d}.png" for i in range(n)]


def _score_by_colour(crops: np.ndarray) -> np.ndarray:
    return crops[:, 0, 0, 0].astype(np.float64) / 255.0  # "realism" = red level: a known order


def test_a_stitched_image_holds_factor_squared_patches_of_the_class_own_images():
    images, keys = _solid_images(9)
    out, sources = rded_class(images, keys, _score_by_colour, ipc=2, factor=2, crops_per_image=3,
                              min_scale=0.5, seed=0)
    assert out.shape == (2, 32, 32, 3) and all(len(s) == 4 for s in sources)
    colour_of = {tuple(images[i, 0, 0]): keys[i] for i in range(len(keys))}
    for img, src in zip(out, sources):
        quads = [img[:16, :16], img[:16, 16:], img[16:, :16], img[16:, 16:]]
        for q, key in zip(quads, src):
            assert (q == q[0, 0]).all() and colour_of[tuple(q[0, 0])] == key
    # The most realistic crops first, at most ceil(8 / 9) = 1 per source image.
    picked = [k for s in sources for k in s]
    assert len(set(picked)) == 8
    red = {keys[i]: images[i, 0, 0, 0] for i in range(9)}
    assert [red[k] for k in picked] == sorted((red[k] for k in picked), reverse=True)


def test_rded_picks_are_deterministic_for_a_seed_and_move_with_it():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    keys = [f"c/{i}" for i in range(6)]
    score = lambda crops: crops.reshape(len(crops), -1).mean(1)  # noqa: E731
    a = rded_class(images, keys, score, 1, 2, 4, 0.5, seed=3)
    b = rded_class(images, keys, score, 1, 2, 4, 0.5, seed=3)
    c = rded_class(images, keys, score, 1, 2, 4, 0.5, seed=4)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    assert not np.array_equal(a[0], c[0])


def test_too_few_candidates_for_the_budget_is_an_error_naming_the_settings():
    images, keys = _solid_images(2)
    with pytest.raises(ValueError, match="rded_crops"):
        rded_class(images, keys, _score_by_colour, ipc=2, factor=2, crops_per_image=1,
                   min_scale=0.5, seed=0)


def test_only_a_seeded_draw_of_candidates_competes_and_predrawing_gives_the_same_set():
    """The reference crops mipc random images per class; the pipeline decodes only those first."""
    images, keys = _solid_images(40)
    args = dict(score=_score_by_colour, ipc=3, factor=1, crops_per_image=2, min_scale=0.08, seed=5)
    out, sources = rded_class(images, keys, candidates=10, **args)
    drawn = draw_candidates(keys, 10, 5)
    assert len(drawn) == 10 and list(drawn) == sorted(set(drawn.tolist()))
    assert {k for s in sources for k in s} <= {keys[i] for i in drawn}
    # The best of all 40 (reddest) is not among the picks unless it was drawn.
    reddest = keys[int(np.argmax(images[:, 0, 0, 0]))]
    assert (reddest in {k for s in sources for k in s}) == (reddest in {keys[i] for i in drawn})
    pre, pre_sources = rded_class(images[drawn], [keys[i] for i in drawn], candidates=10, **args)
    assert np.array_equal(out, pre) and sources == pre_sources
    assert not np.array_equal(draw_candidates(keys, 10, 6), drawn)
    assert list(draw_candidates(keys, 0, 5)) == list(range(40)) == list(draw_candidates(keys, 99, 5))


def test_stitch_lays_patches_out_row_major():
    p = np.stack([np.full((2, 2, 3), v, np.uint8) for v in (1, 2, 3, 4)])
    assert stitch(p, 2)[:, :, 0].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]


def test_budgets_equal_and_proportional_both_sum_to_ipc_within_bin_sizes():
    sizes = [50, 30, 15, 4, 1]
    for fn in (split_budget, proportional_budget):
        for ipc in (1, 5, 10, 50, 100, 200):
            b = fn(sizes, ipc)
            assert sum(b) == min(ipc, sum(sizes)) and all(0 <= x <= s for x, s in zip(b, sizes))
    assert split_budget(sizes, 5) == [1, 1, 1, 1, 1]          # one pick per bin
    assert proportional_budget(sizes, 10) == [5, 3, 2, 0, 0]  # picks follow bin size


@pytest.mark.parametrize("bad", [{"budget": "half"}, {"rded_factor": 0}, {"rded_crops": 0},
                                 {"rded_min_scale": 0}, {"rded_candidates": -1},
                                 {"method": "rdd"}])
def test_the_new_selection_settings_validate(bad):
    with pytest.raises(ConfigError):
        from_dict(SelectConfig, bad, "select")
