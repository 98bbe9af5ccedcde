"""Load image sets (Parquet shard folders or ImageFolder trees) into memory for small stages.

Condensed sets and held-out splits are small enough to decode in memory; big sources stream
through Ray Data in `dc3ray.pipeline` instead.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..errors import DataError
from . import schema
from .imageio import decode_rgb, eval_view, fit_side, image_size
from .shards import ShardError, read_shards
from .sources import read_class_map, scan_plain_folder, scan_source


def is_shard_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p.is_file() and p.suffix == ".parquet") or (p.is_dir() and any(p.glob("*.parquet")))


def load_table(path: str | Path, class_map: dict[str, int] | None = None) -> pa.Table:
    """An image table (IMAGE_SCHEMA columns, maybe more) from shards, an ImageFolder tree, or a
    plain folder of images (one class named after the folder, as clean-fid reads sets).

    Folders are scanned in memory (skipped files are ignored here: ingest reports them).
    """
    p = Path(path)
    if is_shard_dir(p):
        return read_shards(p)
    if not p.exists():
        raise ShardError(f"image set {p} does not exist")
    if p.is_dir() and class_map is None and not any(
            d.is_dir() and not d.name.startswith(".") for d in p.iterdir()):
        scan = scan_plain_folder(p)
        return pa.Table.from_pylist(scan.rows, schema=schema.IMAGE_SCHEMA)
    scan = scan_source(p, class_map)
    return pa.Table.from_pylist(scan.rows, schema=schema.IMAGE_SCHEMA)


def load_class_map(path: str | Path) -> dict[str, int]:
    """The class map of a set: `class_map.json` next to shards, else derived from the table."""
    p = Path(path)
    f = (p if p.is_dir() else p.parent) / schema.CLASS_MAP_FILE
    if f.is_file():
        return {str(k): int(v) for k, v in json.loads(f.read_text()).items()}
    if p.is_dir() and not is_shard_dir(p):
        return read_class_map_or_folders(p)
    t = read_shards(p, columns=[schema.LABEL, schema.CLASS_NAME])
    pairs = set(zip(t.column(schema.CLASS_NAME).to_pylist(), t.column(schema.LABEL).to_pylist()))
    return {n: int(i) for n, i in sorted(pairs, key=lambda x: x[1])}


def read_class_map_or_folders(p: Path) -> dict[str, int]:
    names = sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    return {n: i for i, n in enumerate(names)}


def decode_images(table: pa.Table, size: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode a table's images -> (uint8 (N, H, W, 3), int64 labels (N,), keys).

    `size` resizes to size x size; without it all images must share one shape.
    """
    images = table.column(schema.IMAGE).to_pylist()
    keys = table.column(schema.KEY).to_pylist()
    labels = np.asarray(table.column(schema.LABEL).to_pylist(), dtype=np.int64)
    arrs = [decode_rgb(b, size) for b in images]
    shapes = {a.shape for a in arrs}
    if len(shapes) > 1:
        raise DataError(f"images have different shapes {sorted(shapes)[:3]}...; pass size=")
    out = np.stack(arrs) if arrs else np.zeros((0, size or 0, size or 0, 3), np.uint8)
    return out, labels, keys


def decode_stored(table: pa.Table, max_side: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A training set at its stored resolution -> (uint8 (N, H, W, 3), int64 labels, keys), for
    augmentations that crop before resizing. Images of one shape keep it (scaled down, aspect
    kept, when the longer side exceeds `max_side`); a set of mixed shapes is resized once
    (bicubic, aspect not kept) to L x L, L its largest side but at most `max_side`."""
    images = table.column(schema.IMAGE).to_pylist()
    keys = table.column(schema.KEY).to_pylist()
    labels = np.asarray(table.column(schema.LABEL).to_pylist(), dtype=np.int64)
    if not images:
        return np.zeros((0, 0, 0, 3), np.uint8), labels, keys
    shapes = {image_size(b) for b in images}  # headers only: decode each image once
    if len(shapes) == 1:
        [(h, w)] = shapes
        target = fit_side(h, w, max_side) if max_side else (h, w)
    else:
        side = max(max(hw) for hw in shapes)
        side = min(side, max_side) if max_side else side
        target = (side, side)
    return np.stack([decode_rgb(b, target) for b in images]), labels, keys


def decode_eval(table: pa.Table, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A held-out set as a model at `size` px sees it -> (uint8 (N, size, size, 3), int64
    labels, keys): imageio.eval_view per image (kept at size x size, resized and centre-cropped
    when larger: the ImageNet protocol, upsampled whole when smaller)."""
    images = table.column(schema.IMAGE).to_pylist()
    keys = table.column(schema.KEY).to_pylist()
    labels = np.asarray(table.column(schema.LABEL).to_pylist(), dtype=np.int64)
    arrs = [eval_view(decode_rgb(b), size) for b in images]
    out = np.stack(arrs) if arrs else np.zeros((0, size, size, 3), np.uint8)
    return out, labels, keys


def stored_side(table: pa.Table, limit: int | None = 256) -> int:
    """The largest image side (px) among the first `limit` images of a table (all when None),
    read from the image headers without decoding."""
    col = table.column(schema.IMAGE)
    col = col if limit is None else col.slice(0, limit)
    if len(col) == 0:
        raise DataError("stored_side: the image set is empty")
    return max(max(image_size(b)) for b in col.to_pylist())


__all__ = ["load_table", "load_class_map", "decode_images", "decode_stored", "decode_eval",
           "stored_side", "read_class_map", "is_shard_dir"]
