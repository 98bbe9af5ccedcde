"""Color maths: the classical compensator's warm/cold shifts, blend masks, color metrics.

Pure numpy (matplotlib only inside `plot_color_kde`). Images are uint8 (H, W, 3) RGB arrays;
sets of images are uint8 (N, H, W, 3) arrays or lists of (H, W, 3) arrays of any sizes.

Colour shifts work in OKLab (Ottosson 2020), a perceptual space where L is lightness in [0, 1]
and (a, b) are opponent axes: +a red / -a green, +b yellow (warm) / -b blue (cold). Chroma is
sqrt(a^2 + b^2) and hue its angle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

# --------------------------------------------------------------------------------------------
# sRGB <-> OKLab
# --------------------------------------------------------------------------------------------

_RGB_TO_LMS = np.array([[0.4122214708, 0.5363325363, 0.0514459929],
                        [0.2119034982, 0.6806995451, 0.1073969566],
                        [0.0883024619, 0.2817188376, 0.6299787005]])
_LMS_TO_LAB = np.array([[0.2104542553, 0.7936177850, -0.0040720468],
                        [1.9779984951, -2.4285922050, 0.4505937099],
                        [0.0259040371, 0.7827717662, -0.8086757660]])
_LAB_TO_LMS = np.array([[1.0, 0.3963377774, 0.2158037573],
                        [1.0, -0.1055613458, -0.0638541728],
                        [1.0, -0.0894841775, -1.2914855480]])
_LMS_TO_RGB = np.array([[4.0767416621, -3.3077115913, 0.2309699292],
                        [-1.2684380046, 2.6097574011, -0.3413193965],
                        [-0.0041960863, -0.7034186147, 1.7076147010]])


def _check_rgb(img: np.ndarray, what: str = "image") -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim < 3 or img.shape[-1] != 3:
        shape = getattr(img, "shape", None)
        dtype = getattr(img, "dtype", type(img).__name__)
        raise ValueError(f"{what} must be a uint8 array (..., H, W, 3), got {dtype} {shape}")


def rgb_to_oklab(img: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) sRGB -> float64 (..., 3) OKLab (L in [0, 1], a and b roughly in [-0.4, 0.4])."""
    x = img.astype(np.float64) / 255.0
    lin = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    lms = np.cbrt(lin @ _RGB_TO_LMS.T)
    return lms @ _LMS_TO_LAB.T


def oklab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """float (..., 3) OKLab -> uint8 (..., 3) sRGB; out-of-gamut colours are clipped per channel."""
    lms = (lab @ _LAB_TO_LMS.T) ** 3
    lin = np.clip(lms @ _LMS_TO_RGB.T, 0.0, 1.0)
    x = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1.0 / 2.4) - 0.055)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Classical compensator: warm/cold word -> deterministic shift in OKLab
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ColorShift:
    """One colour edit in OKLab, applied in this order:
    L *= lightness; chroma *= chroma; hue += hue_deg; then a white-balance tint
    (a, b) += (da, db) * L (scaled by L so shadows stay dark instead of turning coloured)."""
    lightness: float = 1.0
    chroma: float = 1.0
    hue_deg: float = 0.0
    da: float = 0.0
    db: float = 0.0

    def scaled(self, strength: float) -> "ColorShift":
        """The same edit at `strength` (0 = identity, 1 = as defined, >1 = exaggerated)."""
        return ColorShift(self.lightness ** strength, self.chroma ** strength,
                          self.hue_deg * strength, self.da * strength, self.db * strength)


# The vocabulary of DESIGN.md step 3. Warm words push b (and a little a) up, cold words down.
WORD_SHIFTS: dict[str, ColorShift] = {
    "sunny": ColorShift(lightness=1.06, chroma=1.15, da=0.01, db=0.05),
    "golden hour": ColorShift(lightness=0.97, chroma=1.2, da=0.03, db=0.08),
    # Sepia: desaturate first, then a uniform brown tint.
    "sepia": ColorShift(chroma=0.2, da=0.02, db=0.06),
    "vivid colors": ColorShift(chroma=1.5, db=0.015),
    "daylight": ColorShift(lightness=1.08, chroma=1.05, db=0.025),
    "rainy": ColorShift(lightness=0.9, chroma=0.7, da=-0.005, db=-0.04),
    "snowy": ColorShift(lightness=1.12, chroma=0.65, db=-0.05),
    "frozen lake": ColorShift(lightness=1.02, chroma=0.9, da=-0.02, db=-0.08),
    # False-colour look: the hue wheel turned half way (warm tones become cyan/blue), then cooled.
    "infrared": ColorShift(chroma=1.1, hue_deg=180.0, db=-0.03),
    "underwater": ColorShift(lightness=0.9, chroma=0.9, da=-0.04, db=-0.05),
    # A subtler vocabulary (configs/sweep_compensation_cifar10.yaml): about half the tint of the
    # words above, chroma within 0.85-1.1, no hue turn and no desaturation like sepia's.
    "warm light": ColorShift(chroma=1.05, da=0.005, db=0.025),
    "soft sunlight": ColorShift(lightness=1.03, chroma=1.05, db=0.02),
    "late afternoon": ColorShift(lightness=0.98, chroma=1.08, da=0.01, db=0.03),
    "candlelight": ColorShift(lightness=0.97, chroma=1.05, da=0.015, db=0.035),
    "autumn": ColorShift(chroma=1.1, da=0.01, db=0.02),
    "overcast": ColorShift(lightness=0.97, chroma=0.9, db=-0.015),
    "cool shade": ColorShift(lightness=0.96, chroma=0.95, da=-0.005, db=-0.025),
    "dusk": ColorShift(lightness=0.94, chroma=0.95, da=0.005, db=-0.03),
    "misty morning": ColorShift(lightness=1.04, chroma=0.85, db=-0.015),
    "blue hour": ColorShift(lightness=0.93, chroma=0.9, da=-0.01, db=-0.035),
}
# Words outside WORD_SHIFTS (custom vocabularies) get these, by the list they come from.
GENERIC_SHIFTS: dict[str, ColorShift] = {
    "warm": ColorShift(chroma=1.1, da=0.01, db=0.05),
    "cold": ColorShift(chroma=0.9, da=-0.01, db=-0.05),
}


def shift_for_word(word: str, kind: str | None = None) -> ColorShift:
    """The ColorShift of a colour word (case and surrounding spaces ignored).

    A word of WORD_SHIFTS uses its own edit whatever `kind` says. Any other word uses the generic
    warm or cold shift named by `kind` ("warm" or "cold": the list the word came from), so custom
    vocabularies work; an unknown word without `kind` is an error.
    """
    key = " ".join(word.lower().split())
    if key in WORD_SHIFTS:
        return WORD_SHIFTS[key]
    if kind in GENERIC_SHIFTS:
        return GENERIC_SHIFTS[kind]
    raise ValueError(
        f"colour word {word!r} has no built-in shift (known: {', '.join(WORD_SHIFTS)}); "
        "pass kind='warm' or kind='cold' to use the generic shift of its list")


def apply_shift(img: np.ndarray, shift: ColorShift) -> np.ndarray:
    """Apply a ColorShift to uint8 (..., H, W, 3); returns uint8 of the same shape."""
    _check_rgb(img)
    lab = rgb_to_oklab(img)
    L = np.clip(lab[..., 0] * shift.lightness, 0.0, 1.0)
    a, b = lab[..., 1] * shift.chroma, lab[..., 2] * shift.chroma
    if shift.hue_deg:
        t = math.radians(shift.hue_deg)
        a, b = a * math.cos(t) - b * math.sin(t), a * math.sin(t) + b * math.cos(t)
    a = a + shift.da * L
    b = b + shift.db * L
    return oklab_to_rgb(np.stack([L, a, b], axis=-1))


def shift_color(img: np.ndarray, word: str, strength: float = 1.0, kind: str | None = None) -> np.ndarray:
    """Deterministic classical colour edit of uint8 (..., H, W, 3) for a warm/cold `word`.

    strength scales the edit (0 returns an unchanged copy). See `shift_for_word` for `kind`.
    """
    _check_rgb(img)
    if strength < 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    shift = shift_for_word(word, kind)
    if strength == 0:
        return img.copy()
    return apply_shift(img, shift.scaled(strength))


# --------------------------------------------------------------------------------------------
# Blend masks
# --------------------------------------------------------------------------------------------

def gradient_profile(n: int, ramp: int) -> np.ndarray:
    """float32 (n,) from 0 to 1: zeros, then `ramp` values (j+1)/(ramp+1) strictly in (0, 1), then ones.

    The ramp is centred: it starts at (n - ramp) // 2, so the 0 and 1 parts differ by at most one
    pixel. ramp is clamped to n; ramp=0 is a hard step at n // 2.
    """
    ramp = max(0, min(int(ramp), n))
    start = (n - ramp) // 2
    out = np.zeros(n, dtype=np.float32)
    out[start:start + ramp] = (np.arange(ramp, dtype=np.float32) + 1) / (ramp + 1)
    out[start + ramp:] = 1.0
    return out


def blend_mask(mode: str, h: int, w: int, rng: np.random.Generator, ramp: int = 20, cell: int = 8,
               grid_pattern: str = "random") -> np.ndarray:
    """Weight of the warm edit per pixel: float32 (h, w) in [0, 1] (1 = warm, 0 = cold).

    - "gradient": half/half along a random axis (rng picks the axis, then which side is warm)
      with a centred linear ramp of exactly `ramp` px strictly between 0 and 1 (see
      `gradient_profile`). The DC3 reference uses linspace(0, 1, ramp), whose ends are 0 and 1.
    - "random": per-pixel Bernoulli(0.5) of 0/1 (the reference draws per pixel and channel;
      we keep pixels whole).
    - "grid": the image cut into `cell` x `cell` cells (`cell` cells per side, near-equal sizes),
      each all 0 or all 1: Bernoulli(0.5) per cell for grid_pattern="random" (as the reference,
      which uses 8-px cells at 256 px), or a checkerboard whose phase rng picks ("checker").
    - "none": all ones (keep the warm edit only).
    """
    if h < 1 or w < 1:
        raise ValueError(f"blend mask needs h, w >= 1, got {h}x{w}")
    if mode == "gradient":
        axis = int(rng.integers(2))           # 0: split top/bottom (along rows), 1: left/right
        warm_first = bool(rng.integers(2))    # warm on the top/left half
        prof = gradient_profile(h if axis == 0 else w, ramp)
        if warm_first:
            prof = prof[::-1].copy()
        mask = np.broadcast_to(prof[:, None] if axis == 0 else prof[None, :], (h, w))
        return np.ascontiguousarray(mask, dtype=np.float32)
    if mode == "random":
        return (rng.random((h, w)) < 0.5).astype(np.float32)
    if mode == "grid":
        if cell < 1:
            raise ValueError(f"grid blend needs cell >= 1 (cells per side), got {cell}")
        rows = (np.arange(h) * cell) // h
        cols = (np.arange(w) * cell) // w
        if grid_pattern == "random":
            cells = (rng.random((cell, cell)) < 0.5).astype(np.float32)
        elif grid_pattern == "checker":
            phase = int(rng.integers(2))
            cells = ((np.add.outer(np.arange(cell), np.arange(cell)) + phase) % 2).astype(np.float32)
        else:
            raise ValueError(f"grid_pattern={grid_pattern!r} is unknown; choose 'random' or 'checker'")
        return np.ascontiguousarray(cells[rows][:, cols])
    if mode == "none":
        return np.ones((h, w), dtype=np.float32)
    raise ValueError(f"blend mode {mode!r} is unknown; choose gradient, random, grid or none")


def blend(warm: np.ndarray, cold: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """mask * warm + (1 - mask) * cold, rounded to uint8 (H, W, 3); mask float (H, W) in [0, 1]."""
    _check_rgb(warm, "warm image")
    _check_rgb(cold, "cold image")
    if warm.shape != cold.shape or mask.shape != warm.shape[:-1]:
        raise ValueError(f"blend shapes differ: warm {warm.shape}, cold {cold.shape}, mask {mask.shape}")
    m = mask.astype(np.float32)[..., None]
    out = m * warm.astype(np.float32) + (1.0 - m) * cold.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def interpolate(source: np.ndarray, edit: np.ndarray, strength: float) -> np.ndarray:
    """(1 - strength) * source + strength * edit, rounded to uint8 (H, W, 3): a pixel-space edit
    strength (0 = the source, 1 = the edit; both ends are returned as they are, not recomputed)."""
    _check_rgb(source, "source image")
    _check_rgb(edit, "edited image")
    if source.shape != edit.shape:
        raise ValueError(f"interpolate shapes differ: source {source.shape}, edit {edit.shape}")
    if strength == 1:
        return edit
    if strength == 0:
        return source
    out = (1.0 - strength) * source.astype(np.float32) + strength * edit.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------

def _as_image_list(images: np.ndarray | Sequence[np.ndarray], what: str = "images") -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = images[None]
        _check_rgb(images, what)
        return list(images)
    out = list(images)
    if not out:
        raise ValueError(f"{what} is empty; pass at least one image")
    for i, im in enumerate(out):
        _check_rgb(im, f"{what}[{i}]")
    return out


def colorfulness(img: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colourfulness of one uint8 (H, W, 3) image, on 0-255 values.

    rg = R - G, yb = 0.5 (R + G) - B; M = sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2).
    The means are of the SIGNED rg and yb, as in the paper (many re-implementations take absolute
    values first, which makes M larger for images with opposite colour casts). A gray image gives 0.
    """
    _check_rgb(img)
    x = img.reshape(-1, 3).astype(np.float64)
    rg = x[:, 0] - x[:, 1]
    yb = 0.5 * (x[:, 0] + x[:, 1]) - x[:, 2]
    return float(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean()))


def colorfulness_stats(images: np.ndarray | Sequence[np.ndarray]) -> tuple[float, float]:
    """(mean, std) over a set of per-image `colorfulness` values."""
    vals = np.array([colorfulness(im) for im in _as_image_list(images)])
    return float(vals.mean()), float(vals.std())


def kde_grid(grid: int = 256) -> np.ndarray:
    """The pixel values (float64 (grid,), 0..255) at which `channel_kde` is evaluated."""
    return np.linspace(0.0, 255.0, grid)


def channel_kde(images: np.ndarray | Sequence[np.ndarray], grid: int = 256,
                bandwidth: float | None = None) -> np.ndarray:
    """Per-channel density of pixel values: float64 (3, grid), evaluated at `kde_grid(grid)`.

    An exact Gaussian KDE over ALL pixels (no subsampling, so no seed): pixel values are the
    integers 0..255, so the KDE is the 256-bin histogram convolved with the kernel. Bandwidth per
    channel is `bandwidth` or Scott's rule std * n^(-1/5) (scipy.stats.gaussian_kde's default),
    floored at 1 so huge sets do not show the integer comb. Densities integrate to ~1 over 0..255
    (a little mass near 0 and 255 falls outside the range).
    """
    ims = _as_image_list(images)
    counts = np.zeros((3, 256), dtype=np.float64)
    for im in ims:
        flat = im.reshape(-1, 3)
        for c in range(3):
            counts[c] += np.bincount(flat[:, c], minlength=256)
    xs = kde_grid(grid)
    values = np.arange(256, dtype=np.float64)
    out = np.empty((3, grid), dtype=np.float64)
    for c in range(3):
        n = counts[c].sum()
        p = counts[c] / n
        if bandwidth is None:
            mean = (p * values).sum()
            std = math.sqrt(max((p * (values - mean) ** 2).sum(), 0.0))
            h = max(std * n ** (-0.2), 1.0)
        else:
            h = float(bandwidth)
        z = (xs[:, None] - values[None, :]) / h
        out[c] = (np.exp(-0.5 * z * z) @ p) / (h * math.sqrt(2.0 * math.pi))
    return out


def rgb_to_hsv(img: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) RGB -> float64 (..., 3) HSV with hue in degrees [0, 360), s and v in [0, 1]."""
    x = img.astype(np.float64) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    mx, mn = x.max(-1), x.min(-1)
    d = mx - mn
    safe = np.where(d > 0, d, 1.0)
    hue = np.where(mx == r, ((g - b) / safe) % 6.0,
                   np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    hue = np.where(d > 0, hue * 60.0, 0.0) % 360.0
    s = np.where(mx > 0, d / np.where(mx > 0, mx, 1.0), 0.0)
    return np.stack([hue, s, mx], axis=-1)


def hue_histogram(images: np.ndarray | Sequence[np.ndarray], bins: int = 36,
                  min_saturation: float = 0.2, min_value: float = 0.2) -> np.ndarray:
    """float64 (bins,) pixel counts per hue bin (0-360 degrees) over a set of images.

    A pixel counts when HSV saturation >= min_saturation and value >= min_value (grays and
    near-blacks have no meaningful hue).
    """
    hist = np.zeros(bins, dtype=np.float64)
    for im in _as_image_list(images):
        hsv = rgb_to_hsv(im.reshape(-1, 3))
        keep = (hsv[:, 1] >= min_saturation) & (hsv[:, 2] >= min_value)
        hist += np.histogram(hsv[keep, 0], bins=bins, range=(0.0, 360.0))[0]
    return hist


def entropy_bits(hist: np.ndarray) -> float:
    """Shannon entropy (bits) of a histogram of counts; 0 for an empty one."""
    total = hist.sum()
    if total == 0:
        return 0.0
    p = hist[hist > 0] / total
    return float(-(p * np.log2(p)).sum())


def hue_entropy(images: np.ndarray | Sequence[np.ndarray], bins: int = 36,
                min_saturation: float = 0.2, min_value: float = 0.2) -> float:
    """Shannon entropy (bits) of `hue_histogram` over a set of images: range [0, log2(bins)];
    0 when no pixel counts."""
    return entropy_bits(hue_histogram(images, bins, min_saturation, min_value))


def color_report(name_to_images: dict[str, np.ndarray | Sequence[np.ndarray]]) -> list[dict]:
    """One dict of colour statistics per named image set, in the dict's order.

    Keys: name, images (count), colorfulness and colorfulness_std (per-image Hasler-Suesstrunk,
    signed means), hue_entropy (bits, 36 bins), mean_r/g/b and std_r/g/b (0-255 pixel values),
    oklab_chroma (mean OKLab chroma) and oklab_b (mean OKLab b: > 0 warm cast, < 0 cold cast).
    """
    rows = []
    for name, images in name_to_images.items():
        ims = _as_image_list(images, f"image set {name!r}")
        cf_mean, cf_std = colorfulness_stats(ims)
        # Running sums, image by image, so big sets never sit in memory as one float array.
        n = 0
        s1, s2 = np.zeros(3), np.zeros(3)
        chroma_sum = b_sum = 0.0
        for im in ims:
            x = im.reshape(-1, 3).astype(np.float64)
            n += len(x)
            s1 += x.sum(0)
            s2 += (x * x).sum(0)
            lab = rgb_to_oklab(im.reshape(-1, 3))
            chroma_sum += float(np.hypot(lab[:, 1], lab[:, 2]).sum())
            b_sum += float(lab[:, 2].sum())
        mean = s1 / n
        std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
        row = {"name": name, "images": len(ims), "colorfulness": cf_mean, "colorfulness_std": cf_std,
               "hue_entropy": hue_entropy(ims)}
        for c, ch in enumerate("rgb"):
            row[f"mean_{ch}"] = float(mean[c])
            row[f"std_{ch}"] = float(std[c])
        row["oklab_chroma"] = chroma_sum / n
        row["oklab_b"] = b_sum / n
        rows.append(row)
    return rows


def plot_color_kde(name_to_images: dict[str, np.ndarray | Sequence[np.ndarray]],
                   out_png: str | Path, grid: int = 256, title: str | None = None) -> Path:
    """Write the "colour homogenization" figure: 3 panels (R, G, B), one KDE curve per set.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change). Returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(12, 3.6), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3, sharey=True)
    xs = kde_grid(grid)
    for name, images in name_to_images.items():
        dens = channel_kde(images, grid)
        for c, ax in enumerate(axes):
            ax.plot(xs, dens[c], label=name, linewidth=1.4)
    for ax, ch, col in zip(axes, ("R", "G", "B"), ("tab:red", "tab:green", "tab:blue")):
        ax.set_title(f"{ch} channel", color=col)
        ax.set_xlim(0, 255)
        ax.set_xlabel("pixel value")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("density")
    axes[-1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, format="png")
    return out


def format_color_table(rows: Iterable[dict]) -> str:
    """A fixed-width text table of `color_report` rows (for printing)."""
    cols = [("images", "n", 6, "d"), ("colorfulness", "colorful", 9, ".2f"),
            ("hue_entropy", "hue_H", 6, ".3f"), ("mean_r", "R", 6, ".1f"), ("mean_g", "G", 6, ".1f"),
            ("mean_b", "B", 6, ".1f"), ("oklab_chroma", "chroma", 7, ".4f"), ("oklab_b", "b*", 8, ".4f")]
    lines = [f"{'set':<24}" + "".join(f" {h:>{w}}" for _, h, w, _ in cols)]
    for r in rows:
        lines.append(f"{str(r['name'])[:24]:<24}" + "".join(f" {r[k]:>{w}{f}}" for k, _, w, f in cols))
    return "\n".join(lines)
