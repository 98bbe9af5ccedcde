"""Read and write shard folders from Ray Data; atomic writes come from dc3ray.core.shards."""
from __future__ import annotations

import os
from pathlib import Path

import ray

from ..core import schema
from ..core.shards import check_shards, write_shards_atomic

write_table_atomic = write_shards_atomic


# Below this many bytes of shards, splitting the read into blocks is cheap (it is held in the
# object store once); above it Ray's reader already yields many blocks.
SPLIT_BELOW_BYTES = 2 << 30


def read_shards(path: str | Path, columns: list[str] | None = None,
                min_blocks: int = 1) -> "ray.data.Dataset":
    """Stream a shard folder with ray.data.read_parquet (files in shard order).

    Every file's footer is checked on the driver first, so a shard with a missing or mistyped
    column fails here (ShardError naming file and column), not inside a Ray Data task.
    min_blocks > 1: Ray 2.60 bins small Parquet files into a single read task, so a CIFAR-sized
    folder arrives as one block and an actor pool of k > 1 keeps one actor busy; a folder under
    SPLIT_BELOW_BYTES is then split into max(min_blocks, files) blocks, order kept.
    """
    files = [str(f) for f in check_shards(path, schema.IMAGE_SCHEMA, columns)]
    ds = ray.data.read_parquet(files)
    # read_parquet(columns=) is deprecated in Ray 2.60; projection pushdown still applies.
    ds = ds.select_columns(columns) if columns else ds
    if min_blocks > 1 and sum(os.path.getsize(f) for f in files) < SPLIT_BELOW_BYTES:
        ds = ds.repartition(max(min_blocks, len(files)))
    return ds


__all__ = ["read_shards", "write_table_atomic"]
