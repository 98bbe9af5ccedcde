"""Parquet shard folders: atomic writes (temp dir + rename) and validated reads."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ShardError  # re-exported: callers catch it from here
from . import schema
from .atomic import atomic_dir  # re-exported: stages import it from here


def write_shards(table: pa.Table, out_dir: str | Path, shard_rows: int) -> list[str]:
    """Write `table` as part-00000.parquet, ... of at most `shard_rows` rows into an existing dir."""
    out = Path(out_dir)
    names = []
    n = table.num_rows
    for i, start in enumerate(range(0, max(n, 1), shard_rows)):
        name = schema.shard_name(i)
        # Small row groups keep Ray Data's read parallelism and memory per block reasonable.
        pq.write_table(table.slice(start, shard_rows), out / name,
                       row_group_size=min(shard_rows, 1024), compression="zstd")
        names.append(name)
    return names


def write_shards_atomic(table: pa.Table, out_dir: str | Path, shard_rows: int = 1000,
                        extra_files: dict[str, object] | None = None,
                        overwrite: bool = True) -> Path:
    """Write `table` as shards plus JSON `extra_files` ({name: obj}) atomically into `out_dir`."""
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        write_shards(table, tmp, shard_rows)
        for name, obj in (extra_files or {}).items():
            (tmp / name).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    return Path(out_dir)


def count_rows(path: str | Path) -> int:
    """Rows of a Parquet shard folder (or file), from the file footers only."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in shard_files(path))


def shard_files(path: str | Path) -> list[Path]:
    """Sorted Parquet files of a shard folder (or the file itself)."""
    p = Path(path)
    if p.is_file() and p.suffix == ".parquet":
        return [p]
    if not p.is_dir():
        raise ShardError(f"{p} does not exist (expected a folder of Parquet shards)")
    files = sorted(p.glob(schema.SHARD_GLOB)) or sorted(p.glob("*.parquet"))
    if not files:
        raise ShardError(f"{p} holds no Parquet shards (part-*.parquet)")
    return files


def check_shards(path: str | Path, required: pa.Schema = schema.IMAGE_SCHEMA,
                 columns: list[str] | None = None) -> list[Path]:
    """The shard files of `path`, after checking every file's footer (no data is read).

    Each file must be readable Parquet and hold the `required` columns (only those named in
    `columns`, when given) with their types. Raises ShardError naming the file and column.
    """
    files = shard_files(path)
    if columns is not None:
        required = pa.schema([f for f in required if f.name in columns])
    for f in files:
        try:
            sch = pq.read_schema(f)
        except Exception as e:
            raise ShardError(f"{f} is not a readable Parquet file: {e}") from None
        bad = schema.missing_columns(sch, required)
        if bad:
            raise ShardError(f"{f}: wrong or missing column(s): {', '.join(bad)}; "
                             "re-create the shards with `dc3ray ingest`")
    return files


def read_shards(path: str | Path, required: pa.Schema | None = schema.IMAGE_SCHEMA,
                columns: list[str] | None = None) -> pa.Table:
    """Read all shards of a folder into one table; each file's columns are checked first."""
    files = shard_files(path) if required is None else check_shards(path, required)
    tables = [pq.read_table(f, columns=columns) for f in files]
    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
