"""RDED as a selection method (Sun et al., "On the Diversity and Realism of Distilled Dataset",
CVPR 2024): per class, crop candidate patches from real images, keep the most realistic ones
(lowest cross-entropy of a teacher on the patch), and stitch factor x factor of them into each
condensed image.

Pure numpy; the scorer is a callable, so the teacher (and its device) stay with the caller.
Two known differences from the reference code (LINs-lab/RDED): it scores a patch zero-padded to
the input size and fills image k with patches k, k + ipc, ...; here a crop is scored at the
output size and each image takes consecutive best-first patches. With factor 1 (its CIFAR-10
setting) both are the same.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from PIL import Image

from .seeding import rng_for

# images uint8 (N, S, S, 3) of one class -> p(true class) float (N,) under the teacher.
Scorer = Callable[[np.ndarray], np.ndarray]


def random_crop_boxes(h: int, w: int, n: int, min_scale: float, rng: np.random.Generator
                      ) -> np.ndarray:
    """n square crop boxes (top, left, side) covering min_scale..1 of the shorter side's area."""
    short = min(h, w)
    sides = np.sqrt(rng.uniform(min_scale, 1.0, n)) * short
    sides = np.clip(np.rint(sides).astype(int), 1, short)
    tops = (rng.random(n) * (h - sides + 1)).astype(int)
    lefts = (rng.random(n) * (w - sides + 1)).astype(int)
    return np.stack([tops, lefts, sides], axis=1)


def crop_resize(img: np.ndarray, box: Sequence[int], size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> the box (top, left, side) resized to (size, size, 3), bilinear."""
    t, l, s = (int(v) for v in box)
    patch = Image.fromarray(np.ascontiguousarray(img[t:t + s, l:l + s]))
    return np.asarray(patch.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def stitch(patches: np.ndarray, factor: int) -> np.ndarray:
    """factor^2 uint8 (p, p, 3) patches -> one (factor*p, factor*p, 3) image, row-major."""
    if len(patches) != factor * factor:
        raise ValueError(f"stitch needs factor^2 = {factor * factor} patches, got {len(patches)}")
    rows = [np.concatenate(list(patches[r * factor:(r + 1) * factor]), axis=1)
            for r in range(factor)]
    return np.concatenate(rows, axis=0)


def draw_candidates(keys: Sequence[str], candidates: int, seed: int) -> np.ndarray:
    """Sorted indices of the images whose crops compete: a seeded draw of `candidates` of them
    (the reference's mipc: it crops a random subset of each class), or all when 0 or >= N."""
    n = len(keys)
    if not 0 < candidates < n:
        return np.arange(n)
    return np.sort(rng_for(seed, "rded-candidates", min(keys)).choice(n, candidates, replace=False))


def rded_class(images: np.ndarray, keys: Sequence[str], score: Scorer, ipc: int, factor: int,
               crops_per_image: int, min_scale: float, seed: int, size: int | None = None,
               candidates: int = 0) -> tuple[np.ndarray, list[list[str]]]:
    """RDED for one class.

    images: uint8 (N, H, W, 3) of the class, with their keys. With 0 < candidates < N only a
    seeded draw of `candidates` images competes (the reference's mipc). Each competing image gives
    `crops_per_image` random square crops (seeded by `seed` and its first key), each
    resized to the output side `size` (default H) and scored by `score`; the
    ipc * factor^2 crops with the highest p(true class) (lowest cross-entropy) are kept, at most
    ceil(that / N) per source image so one photo cannot fill a class, shrunk to size // factor
    and stitched factor x factor, best first. Returns (uint8 (ipc, size, size, 3), for each
    image the source keys of its patches in stitch order).
    """
    n, h, w, _ = images.shape
    size = size or h
    need = ipc * factor * factor
    if n == 0 or size % factor:
        raise ValueError(f"rded needs images and a side divisible by factor={factor}; got "
                         f"{n} images of side {size}")
    pick = draw_candidates(keys, candidates, seed)
    if len(pick) < n:  # the draw is idempotent: a caller may decode only these images first
        images, keys, n = images[pick], [keys[i] for i in pick], len(pick)
    rng = rng_for(seed, "rded", min(keys))
    crops, owners = [], []
    for i in range(n):
        for box in random_crop_boxes(h, w, crops_per_image, min_scale, rng):
            crops.append(crop_resize(images[i], box, size))
            owners.append(i)
    crops_arr = np.stack(crops)
    p_true = np.asarray(score(crops_arr), dtype=np.float64)
    # Most realistic first; ties by crop index, so the order is deterministic.
    order = np.lexsort((np.arange(len(p_true)), -p_true))
    per_source = -(-need // n)
    taken, used = [], np.zeros(n, int)
    for j in order:
        if used[owners[j]] < per_source:
            taken.append(j)
            used[owners[j]] += 1
        if len(taken) == need:
            break
    if len(taken) < need:
        raise ValueError(f"rded: {len(crops)} candidate crops from {n} images give {len(taken)} "
                         f"patches but ipc x factor^2 = {need} are needed; raise "
                         "select.rded_crops or select.rded_candidates, or lower select.ipc")
    side = size // factor
    small = np.stack([crop_resize(crops_arr[j], (0, 0, size), side) for j in taken])
    out = np.stack([stitch(small[k * factor * factor:(k + 1) * factor * factor], factor)
                    for k in range(ipc)])
    sources = [[keys[owners[j]] for j in taken[k * factor * factor:(k + 1) * factor * factor]]
               for k in range(ipc)]
    return out, sources
