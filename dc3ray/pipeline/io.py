"""Read and write shard folders from Ray Data; atomic writes come from dc3ray.core.shards."""
from __future__ import annotations

from pathlib import Path

import ray

from ..core.shards import shard_files, write_shards_atomic

write_table_atomic = write_shards_atomic


def read_shards(path: str | Path, columns: list[str] | None = None) -> "ray.data.Dataset":
    """Stream a shard folder with ray.data.read_parquet (files in shard order)."""
    files = [str(f) for f in shard_files(path)]
    ds = ray.data.read_parquet(files)
    # read_parquet(columns=) is deprecated in Ray 2.60; projection pushdown still applies.
    return ds.select_columns(columns) if columns else ds


__all__ = ["read_shards", "write_table_atomic"]
