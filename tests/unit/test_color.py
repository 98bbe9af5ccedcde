"""dc3ray.core.color: blend masks, classical warm/cold shifts, colour metrics."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dc3ray.config import COLD_WORDS, WARM_WORDS
from dc3ray.core import color
from dc3ray.core.imageio import decode_rgb


@pytest.fixture(scope="module")
def cifar50(cifar_root) -> np.ndarray:
    """50 real CIFAR-10 train images: 5 from each class, uint8 (50, 32, 32, 3)."""
    files = []
    for d in sorted(p for p in (cifar_root / "train").iterdir() if p.is_dir()):
        files += sorted(d.iterdir())[:5]
    return np.stack([decode_rgb(f.read_bytes()) for f in files])


# ------------------------------------------------------------------ blend masks

@pytest.mark.parametrize("h,w,ramp", [(256, 256, 20), (32, 32, 5), (33, 40, 7), (64, 48, 0), (16, 16, 16)])
@pytest.mark.parametrize("seed", range(6))
def test_gradient_mask_has_exactly_ramp_pixels_strictly_between_and_halves_elsewhere(h, w, ramp, seed):
    m = color.blend_mask("gradient", h, w, np.random.default_rng(seed), ramp=ramp)
    assert m.shape == (h, w) and m.dtype == np.float32
    rows_const = bool(np.all(m == m[:, :1]))   # constant along each row: split is top/bottom
    prof = m[:, 0] if rows_const else m[0, :]
    assert np.all(m == (prof[:, None] if rows_const else prof[None, :]))
    n = len(prof)
    inside = (prof > 0) & (prof < 1)
    assert inside.sum() == min(ramp, n)
    idx = np.flatnonzero(inside)
    if len(idx):
        assert idx[-1] - idx[0] + 1 == len(idx)            # one contiguous ramp
        assert abs((idx[0]) - (n - idx[-1] - 1)) <= 1     # centred
    assert np.all(np.diff(prof) >= 0) or np.all(np.diff(prof) <= 0)  # monotone
    assert abs(int((prof == 0).sum()) - int((prof == 1).sum())) <= 1  # halves


def test_gradient_mask_uses_both_axes_and_both_sides_across_seeds():
    seen = set()
    for seed in range(40):
        m = color.blend_mask("gradient", 32, 32, np.random.default_rng(seed), ramp=4)
        axis = "rows" if np.all(m == m[:, :1]) else "cols"
        warm_first = m[0, 0] == 1.0
        seen.add((axis, bool(warm_first)))
    assert seen == {("rows", True), ("rows", False), ("cols", True), ("cols", False)}


def test_random_mask_is_binary_with_about_half_warm_pixels():
    m = color.blend_mask("random", 64, 64, np.random.default_rng(0))
    assert set(np.unique(m)) == {0.0, 1.0}
    assert 0.45 < m.mean() < 0.55


@pytest.mark.parametrize("pattern", ["random", "checker"])
def test_grid_mask_is_cell_by_cell_binary_and_constant_inside_each_cell(pattern):
    m = color.blend_mask("grid", 32, 32, np.random.default_rng(3), cell=8, grid_pattern=pattern)
    assert set(np.unique(m)) <= {0.0, 1.0}
    cells = m.reshape(8, 4, 8, 4)                      # 8 x 8 cells of 4 x 4 px
    assert np.all(cells == cells[:, :1, :, :1])
    if pattern == "checker":
        c = cells[:, 0, :, 0]
        assert np.all(c[1:, :] != c[:-1, :]) and np.all(c[:, 1:] != c[:, :-1])


def test_grid_mask_handles_sizes_not_divisible_by_the_cell_count():
    m = color.blend_mask("grid", 30, 45, np.random.default_rng(0), cell=8, grid_pattern="checker")
    assert m.shape == (30, 45)
    assert len(np.unique(m[0])) == 2 and len(np.unique(m[:, 0])) == 2


def test_none_mask_keeps_only_the_warm_edit():
    m = color.blend_mask("none", 5, 7, np.random.default_rng(0))
    assert m.shape == (5, 7) and np.all(m == 1.0)


def test_same_seed_gives_the_same_mask_and_unknown_mode_is_an_error():
    for mode in ("gradient", "random", "grid"):
        a = color.blend_mask(mode, 24, 24, np.random.default_rng(7))
        b = color.blend_mask(mode, 24, 24, np.random.default_rng(7))
        assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="blend mode 'stripes'"):
        color.blend_mask("stripes", 8, 8, np.random.default_rng(0))


def test_blend_takes_warm_where_mask_is_one_and_cold_where_zero():
    warm = np.full((4, 4, 3), 200, np.uint8)
    cold = np.full((4, 4, 3), 100, np.uint8)
    mask = np.zeros((4, 4), np.float32)
    mask[:, 2:] = 1.0
    mask[0, 0] = 0.5
    out = color.blend(warm, cold, mask)
    assert out.dtype == np.uint8
    assert np.all(out[:, 2:] == 200) and np.all(out[1:, :2] == 100) and np.all(out[0, 0] == 150)


# ------------------------------------------------------------------ classical shifts

def test_oklab_round_trip_is_lossless_on_uint8():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert np.array_equal(color.oklab_to_rgb(color.rgb_to_oklab(img)), img)


def test_gray_has_zero_oklab_chroma():
    lab = color.rgb_to_oklab(np.full((2, 2, 3), 128, np.uint8))
    assert np.allclose(lab[..., 1:], 0.0, atol=1e-6)


def _stats(imgs: np.ndarray) -> tuple[float, float]:
    """(mean OKLab b, mean R - B) of a set."""
    lab_b = color.rgb_to_oklab(imgs)[..., 2].mean()
    rb = imgs[..., 0].astype(float).mean() - imgs[..., 2].astype(float).mean()
    return float(lab_b), float(rb)


@pytest.mark.parametrize("word", WARM_WORDS)
def test_warm_words_raise_yellow_and_red_over_blue_on_real_cifar(cifar50, word):
    b0, rb0 = _stats(cifar50)
    b1, rb1 = _stats(color.shift_color(cifar50, word))
    assert b1 > b0 + 0.003, (word, b0, b1)
    assert rb1 > rb0 + 1.0, (word, rb0, rb1)


@pytest.mark.parametrize("word", COLD_WORDS)
def test_cold_words_lower_yellow_and_red_over_blue_on_real_cifar(cifar50, word):
    b0, rb0 = _stats(cifar50)
    b1, rb1 = _stats(color.shift_color(cifar50, word))
    assert b1 < b0 - 0.003, (word, b0, b1)
    assert rb1 < rb0 - 1.0, (word, rb0, rb1)


def test_vivid_colors_raises_and_sepia_lowers_colorfulness(cifar50):
    base = color.colorfulness_stats(cifar50)[0]
    assert color.colorfulness_stats(color.shift_color(cifar50, "vivid colors"))[0] > base * 1.2
    assert color.colorfulness_stats(color.shift_color(cifar50, "sepia"))[0] < base * 0.7


def test_shift_color_is_deterministic_and_strength_zero_is_identity(cifar50):
    a = color.shift_color(cifar50[:4], "golden hour")
    b = color.shift_color(cifar50[:4], "golden hour")
    assert np.array_equal(a, b) and not np.array_equal(a, cifar50[:4])
    assert np.array_equal(color.shift_color(cifar50[:4], "rainy", strength=0.0), cifar50[:4])


def test_unknown_word_uses_the_generic_shift_of_its_list_and_needs_a_kind(cifar50):
    b0, _ = _stats(cifar50)
    assert _stats(color.shift_color(cifar50, "autumn glow", kind="warm"))[0] > b0
    assert _stats(color.shift_color(cifar50, "moonlight", kind="cold"))[0] < b0
    # A built-in word keeps its own edit whatever list it is in.
    assert np.array_equal(color.shift_color(cifar50, "Sunny ", kind="cold"), color.shift_color(cifar50, "sunny"))
    with pytest.raises(ValueError, match="'moonlight' has no built-in shift"):
        color.shift_color(cifar50, "moonlight")


# ------------------------------------------------------------------ metrics

def test_colorfulness_of_a_gray_image_is_zero():
    assert color.colorfulness(np.full((16, 16, 3), 97, np.uint8)) == 0.0


def test_colorfulness_matches_the_formula_with_signed_means():
    img = np.zeros((1, 2, 3), np.uint8)
    img[0, 0] = (255, 0, 0)      # rg = 255, yb = 127.5
    img[0, 1] = (0, 0, 0)        # rg = 0,   yb = 0
    std = math.hypot(127.5, 63.75)
    mean = math.hypot(127.5, 63.75)
    assert color.colorfulness(img) == pytest.approx(std + 0.3 * mean)
    # Signed means: a red/green pair has rg = +200, -200 (std 200, mean 0) and yb = 100, 100
    # (std 0, mean 100): 200 + 0.3 * 100. Absolute values would give 0 + 0.3 * hypot(200, 100).
    rg = np.zeros((1, 2, 3), np.uint8)
    rg[0, 0] = (200, 0, 0)
    rg[0, 1] = (0, 200, 0)
    assert color.colorfulness(rg) == pytest.approx(200.0 + 0.3 * 100.0)


def test_channel_kde_is_a_density_peaking_at_a_constant_value():
    imgs = np.zeros((3, 8, 8, 3), np.uint8)
    imgs[..., 0], imgs[..., 1], imgs[..., 2] = 50, 128, 200
    dens = color.channel_kde(imgs, grid=256)
    xs = color.kde_grid(256)
    assert dens.shape == (3, 256)
    for c, v in enumerate((50, 128, 200)):
        assert abs(xs[np.argmax(dens[c])] - v) <= 1.0
        assert np.trapezoid(dens[c], xs) == pytest.approx(1.0, abs=0.01)


def test_hue_entropy_is_zero_for_gray_and_maximal_for_a_full_hue_wheel():
    assert color.hue_entropy(np.full((1, 8, 8, 3), 120, np.uint8)) == 0.0
    hues = (np.arange(360 * 4) / 4.0)
    wheel = np.stack([_hsv_to_rgb(h) for h in hues])[None, None]
    assert color.hue_entropy(wheel.astype(np.uint8)[0], bins=36) == pytest.approx(math.log2(36), abs=0.01)


def _hsv_to_rgb(h: float) -> np.ndarray:
    import colorsys
    return np.array([round(255 * x) for x in colorsys.hsv_to_rgb(h / 360.0, 1.0, 1.0)])


def test_color_report_ranks_sets_and_plot_writes_a_png(cifar50, tmp_path):
    sets = {"real": cifar50, "sepia": color.shift_color(cifar50, "sepia"),
            "vivid": [im for im in color.shift_color(cifar50, "vivid colors")]}
    rows = color.color_report(sets)
    assert [r["name"] for r in rows] == ["real", "sepia", "vivid"]
    by = {r["name"]: r for r in rows}
    assert by["vivid"]["colorfulness"] > by["real"]["colorfulness"] > by["sepia"]["colorfulness"]
    assert by["sepia"]["hue_entropy"] < by["real"]["hue_entropy"]
    assert by["real"]["images"] == 50
    assert by["real"]["mean_r"] == pytest.approx(cifar50[..., 0].mean())
    assert by["real"]["std_b"] == pytest.approx(cifar50[..., 2].std())
    table = color.format_color_table(rows)
    assert "sepia" in table and len(table.splitlines()) == 4
    out = color.plot_color_kde(sets, tmp_path / "fig" / "kde.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
