"""Column names, Arrow schemas and file names shared by every stage, in one place."""
from __future__ import annotations

import pyarrow as pa

KEY = "key"
LABEL = "label"
CLASS_NAME = "class_name"
IMAGE = "image"
HEIGHT = "height"
WIDTH = "width"
EMBEDDING = "embedding"

# Image shards: the original encoded bytes, never re-encoded at ingest.
IMAGE_SCHEMA = pa.schema(
    [
        pa.field(KEY, pa.string(), nullable=False),
        pa.field(LABEL, pa.int64(), nullable=False),
        pa.field(CLASS_NAME, pa.string(), nullable=False),
        pa.field(IMAGE, pa.binary(), nullable=False),
        pa.field(HEIGHT, pa.int32(), nullable=False),
        pa.field(WIDTH, pa.int32(), nullable=False),
    ]
)

CLASS_MAP_FILE = "class_map.json"
INGEST_REPORT_FILE = "ingest_report.json"
DATASET_INFO_FILE = "dataset.json"
SHARD_GLOB = "part-*.parquet"


def shard_name(index: int) -> str:
    """File name of the index-th shard; zero-padded so lexical order == shard order."""
    return f"part-{index:05d}.parquet"


def missing_columns(schema: pa.Schema, required: pa.Schema = IMAGE_SCHEMA) -> list[str]:
    """Names of required columns absent from `schema` or present with another type."""
    out = []
    for field in required:
        idx = schema.get_field_index(field.name)
        if idx < 0:
            out.append(f"{field.name} (missing)")
        elif not schema.field(idx).type.equals(field.type):
            # Large binary/string read back from other writers is fine.
            ok = {pa.binary(): pa.large_binary(), pa.string(): pa.large_string()}
            if ok.get(field.type) != schema.field(idx).type:
                out.append(f"{field.name} ({schema.field(idx).type}, expected {field.type})")
    return out
