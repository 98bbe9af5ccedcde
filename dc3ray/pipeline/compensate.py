"""Colour-compensation stage (DESIGN.md step 3) on Ray Data (`dc3ray compensate`).

condensed shards (read and sorted by key on the driver: condensed sets are small) -> one Ray
block per chunk of cfg.batch_size keys -> actor pool of Compensators (model loaded once per
actor) -> rows sorted by key -> Parquet shards written atomically (+ class_map.json).
The maths is in dc3ray.core.editing and dc3ray.core.color; this file only moves batches.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import ray

from ..config import CompensateCommand, CompensateConfig, from_dict, to_dict
from ..core import schema
from ..core.imageio import ImageDecodeError, decode_rgb, encode_png
from ..core.shards import read_shards as read_table_shards
from ..errors import DataError
from .io import write_table_atomic
from .resources import actor_pool_kwargs

SOURCE_KEY = "source_key"
WARM_PROMPT = "warm_prompt"
COLD_PROMPT = "cold_prompt"
SEED = "seed"
VARIANT = "variant"
ORIGINAL_SUFFIX = "#orig"

# Output rows: the image columns of every stage plus where each image came from and how.
COMPENSATED_SCHEMA = pa.schema(list(schema.IMAGE_SCHEMA) + [
    pa.field(SOURCE_KEY, pa.string(), nullable=False),
    pa.field(WARM_PROMPT, pa.string(), nullable=False),
    pa.field(COLD_PROMPT, pa.string(), nullable=False),
    pa.field(SEED, pa.int64(), nullable=False),
    pa.field(VARIANT, pa.string(), nullable=False),
])

DIFFUSION = ("instructpix2pix", "img2img")


class CompensatorActor:
    """map_batches actor: builds one Compensator, then edits batches of image rows.

    In: a numpy batch with key, label, class_name, image (encoded bytes). Out: COMPENSATED_SCHEMA
    columns; image is PNG, key is the source key, variant "compensated". An image whose longer
    side exceeds cfg.max_side is scaled down to it first (its height/width say so); an
    undecodable image raises ImageDecodeError naming its key.
    """

    def __init__(self, cfg: dict, device: str | None = None):
        from ..core.editing import build_compensator

        self.cfg = from_dict(CompensateConfig, cfg)
        if device is None and self.cfg.compensator in DIFFUSION:
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.compensator = build_compensator(self.cfg, device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys = [str(k) for k in batch[schema.KEY]]
        images = []
        for key, blob in zip(keys, batch[schema.IMAGE]):
            try:
                images.append(decode_rgb(blob, max_side=self.cfg.max_side))
            except ImageDecodeError as e:
                raise ImageDecodeError(f"image {key!r}: {e}") from e
        results = self.compensator.compensate(images, keys)
        return {
            schema.KEY: np.array(keys, dtype=object),
            SOURCE_KEY: np.array(keys, dtype=object),
            schema.LABEL: np.asarray(batch[schema.LABEL], dtype=np.int64),
            schema.CLASS_NAME: np.array([str(c) for c in batch[schema.CLASS_NAME]], dtype=object),
            schema.IMAGE: np.array([encode_png(r["image"]) for r in results], dtype=object),
            schema.HEIGHT: np.array([r["image"].shape[0] for r in results], dtype=np.int32),
            schema.WIDTH: np.array([r["image"].shape[1] for r in results], dtype=np.int32),
            WARM_PROMPT: np.array([r["warm_prompt"] for r in results], dtype=object),
            COLD_PROMPT: np.array([r["cold_prompt"] for r in results], dtype=object),
            SEED: np.array([r["seed"] for r in results], dtype=np.int64),
            VARIANT: np.array(["compensated"] * len(keys), dtype=object),
        }


def original_rows(batch: dict[str, np.ndarray], seed: int,
                  key_suffix: str = ORIGINAL_SUFFIX) -> dict[str, np.ndarray]:
    """Source rows unchanged (original bytes), as COMPENSATED_SCHEMA columns with variant "original"."""
    keys = [str(k) for k in batch[schema.KEY]]
    n = len(keys)
    return {
        schema.KEY: np.array([k + key_suffix for k in keys], dtype=object),
        SOURCE_KEY: np.array(keys, dtype=object),
        schema.LABEL: np.asarray(batch[schema.LABEL], dtype=np.int64),
        schema.CLASS_NAME: np.array([str(c) for c in batch[schema.CLASS_NAME]], dtype=object),
        schema.IMAGE: np.array(list(batch[schema.IMAGE]), dtype=object),
        schema.HEIGHT: np.asarray(batch[schema.HEIGHT], dtype=np.int32),
        schema.WIDTH: np.asarray(batch[schema.WIDTH], dtype=np.int32),
        WARM_PROMPT: np.array([""] * n, dtype=object),
        COLD_PROMPT: np.array([""] * n, dtype=object),
        SEED: np.full(n, seed, dtype=np.int64),
        VARIANT: np.array(["original"] * n, dtype=object),
    }


def original_table(table: pa.Table, seed: int, key_suffix: str = ORIGINAL_SUFFIX) -> pa.Table:
    """Source rows unchanged (original bytes) as a COMPENSATED_SCHEMA table with variant "original"."""
    cols = {c: table.column(c).to_numpy(zero_copy_only=False) for c in schema.IMAGE_SCHEMA.names}
    return pa.Table.from_pydict(original_rows(cols, seed, key_suffix), schema=COMPENSATED_SCHEMA)


def _sorted_source(condensed_path: str | Path) -> pa.Table:
    table = read_table_shards(condensed_path).sort_by(schema.KEY)
    keys = table.column(schema.KEY).to_pylist()
    dup = sorted({a for a, b in zip(keys, keys[1:]) if a == b})
    if dup:
        raise DataError(f"{condensed_path} has duplicate keys ({', '.join(dup[:5])}); "
                         "every image needs a unique key (re-run ingest/selection)")
    return table


def compensate_dataset(condensed_path: str | Path, cfg: CompensateConfig, out_dir: str | Path,
                       use_gpu: bool | None = None, shard_rows: int = 1000) -> dict:
    """Compensate every image of a shard folder; write the result as shards in out_dir.

    Output rows (COMPENSATED_SCHEMA), sorted by key: one per source image with its source key,
    PNG image at the source size (scaled down to fit cfg.max_side when larger; the summary's
    "resized" lists those keys), the two prompts, the run seed and variant="compensated".
    With cfg.keep_originals the unedited source rows are added too: key f"{key}#orig", original
    bytes, empty prompts, variant="original". compensator "none" writes the source rows unchanged
    (variant "original", key unchanged; keep_originals then adds nothing). class_map.json is
    copied when present. use_gpu=None puts diffusion actors on GPUs when the cluster has them;
    classical runs on CPUs.

    A condensed set is small (IPC x classes rows of encoded bytes), so the driver reads it,
    sorts it by key and hands Ray one block per chunk of cfg.batch_size consecutive keys; each
    block is one actor call (batch_size=None). Chunks are therefore fixed whatever the shard
    layout or pool size, and the bytes are reproducible (diffusion batches may round differently
    from single images, see core.editing). The result is gathered, sorted and written atomically.
    Returns a summary dict.
    """
    if cfg.compensator in DIFFUSION and cfg.model_path:  # random-weight pipelines edit into noise
        from ..core.editing import refuse_random_weights
        refuse_random_weights(cfg.model_path)
    t0 = time.perf_counter()
    src = Path(condensed_path)
    table = _sorted_source(src)
    extra = {}
    if (src / schema.CLASS_MAP_FILE).is_file():
        extra[schema.CLASS_MAP_FILE] = json.loads((src / schema.CLASS_MAP_FILE).read_text())

    if cfg.compensator == "none":
        parts = [original_table(table, cfg.seed, key_suffix="")]
    elif table.num_rows == 0:
        parts = []
    else:
        gpu = use_gpu if cfg.compensator in DIFFUSION else False
        blocks = [table.slice(i, cfg.batch_size) for i in range(0, table.num_rows, cfg.batch_size)]
        ds = ray.data.from_arrow(blocks).map_batches(
            CompensatorActor, fn_constructor_kwargs={"cfg": to_dict(cfg)}, batch_size=None,
            batch_format="numpy", **actor_pool_kwargs(cfg.num_actors, cfg.num_cpus_per_actor, gpu))
        parts = [pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b
                 for b in ds.iter_batches(batch_format="pyarrow", batch_size=None)]
        parts = [p.select(COMPENSATED_SCHEMA.names).cast(COMPENSATED_SCHEMA) for p in parts]
        if cfg.keep_originals:
            parts.append(original_table(table, cfg.seed))
    out = pa.concat_tables(parts).sort_by(schema.KEY) if parts else COMPENSATED_SCHEMA.empty_table()
    if out.num_rows != table.num_rows * (2 if cfg.keep_originals and cfg.compensator != "none" else 1):
        raise RuntimeError(f"compensation returned {out.num_rows} rows for {table.num_rows} source rows")
    write_table_atomic(out, out_dir, shard_rows, extra_files=extra)
    seconds = time.perf_counter() - t0
    # Images scaled down to cfg.max_side: listed, never changed silently.
    src_size = dict(zip(table.column(schema.KEY).to_pylist(),
                        zip(table.column(schema.HEIGHT).to_pylist(),
                            table.column(schema.WIDTH).to_pylist())))
    resized = [k for k, h, w in zip(out.column(SOURCE_KEY).to_pylist(),
                                    out.column(schema.HEIGHT).to_pylist(),
                                    out.column(schema.WIDTH).to_pylist())
               if src_size.get(k, (h, w)) != (h, w)]
    return {"out_dir": str(out_dir), "rows": out.num_rows, "source_rows": table.num_rows,
            "resized": resized,
            "compensator": cfg.compensator, "keep_originals": cfg.keep_originals,
            "seconds": round(seconds, 3),
            "images_per_s": round(table.num_rows / seconds, 3) if seconds else None}


def compensate_command(cmd: CompensateCommand, log: Callable[[str], None] = print) -> int:
    """`dc3ray compensate`."""
    from .resources import configure_data_context, init_ray
    init_ray()
    configure_data_context()
    log(json.dumps(compensate_dataset(cmd.condensed, cmd.compensate, cmd.out), indent=2))
    return 0

