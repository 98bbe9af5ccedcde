"""Read and write shard folders from Ray Data; atomic writes come from dc3ray.core.shards."""
from __future__ import annotations

from pathlib import Path

import ray

from ..core import schema
from ..core.shards import check_shards, write_shards_atomic

write_table_atomic = write_shards_atomic


def read_shards(path: str | Path, columns: list[str] | None = None) -> "ray.data.Dataset":
    """Stream a shard folder with ray.data.read_parquet (files in shard order).

    Every file's footer is checked on the driver first, so a shard with a missing or mistyped
    column fails here (ShardError naming file and column), not inside a Ray Data task.
    """
    files = [str(f) for f in check_shards(path, schema.IMAGE_SCHEMA, columns)]
    ds = ray.data.read_parquet(files)
    # read_parquet(columns=) is deprecated in Ray 2.60; projection pushdown still applies.
    return ds.select_columns(columns) if columns else ds


__all__ = ["read_shards", "write_table_atomic"]
