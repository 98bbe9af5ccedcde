"""Sample grid: one row per class, the first `per_row` images of that class."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def sample_grid(images: np.ndarray, labels: np.ndarray, per_row: int = 10, pad: int = 2) -> np.ndarray:
    """uint8 (N, H, W, 3) + labels (N,) -> uint8 grid image with a row per class (sorted labels)."""
    if len(images) == 0:
        raise ValueError("sample_grid needs at least one image")
    n, h, w, _ = images.shape
    classes = sorted(set(int(x) for x in labels))
    grid = np.full((len(classes) * (h + pad) + pad, per_row * (w + pad) + pad, 3), 255, np.uint8)
    for r, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)[:per_row]
        for j, i in enumerate(idx):
            y, x = pad + r * (h + pad), pad + j * (w + pad)
            grid[y:y + h, x:x + w] = images[i]
    return grid


def save_sample_grid(images: np.ndarray, labels: np.ndarray, path: str | Path, per_row: int = 10) -> Path:
    Image.fromarray(sample_grid(images, labels, per_row)).save(path, format="PNG")
    return Path(path)


def compare_grid(before: np.ndarray, after: np.ndarray, labels: np.ndarray, pairs: int = 5,
                 pad: int = 2, gap: int = 6) -> np.ndarray:
    """Before/after pairs, a row per class: uint8 (N, H, W, 3) twice (row i of `after` is the
    edit of row i of `before`) + labels (N,) -> uint8 grid; each pair sits side by side, pairs
    are `gap` px apart, at most `pairs` per class."""
    if len(before) == 0 or before.shape != after.shape:
        raise ValueError(f"compare_grid needs two equal, non-empty stacks, got {before.shape} "
                         f"and {after.shape}")
    _, h, w, _ = before.shape
    classes = sorted(set(int(x) for x in labels))
    pairs = min(pairs, max(int(np.sum(labels == c)) for c in classes))
    cell = 2 * w + pad + gap
    grid = np.full((len(classes) * (h + pad) + pad, pairs * cell - gap + 2 * pad, 3), 255, np.uint8)
    for r, c in enumerate(classes):
        for j, i in enumerate(np.flatnonzero(labels == c)[:pairs]):
            y, x = pad + r * (h + pad), pad + j * cell
            grid[y:y + h, x:x + w] = before[i]
            grid[y:y + h, x + w + pad:x + 2 * w + pad] = after[i]
    return grid
