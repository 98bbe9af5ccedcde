"""Colour-compensation stage (DESIGN.md step 3) on Ray Data (`dc3ray compensate`).

condensed shards (read and sorted by key on the driver: condensed sets are small) -> word
pairs of the "diverse" assignment (a set-level choice, on the driver) -> one Ray block per
chunk of cfg.batch_size keys -> actor pool of Compensators (model and gate classifier loaded
once per actor) -> rows sorted by key -> Parquet shards written atomically (+ class_map.json).
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
from ..core.editing import ACCEPTED, KEPT_SOURCE
from ..core.imageio import ImageDecodeError, decode_rgb, encode_png, image_size
from ..core.shards import read_shards as read_table_shards
from ..errors import ConfigError, DataError
from .io import write_table_atomic
from ..logs import run_logs
from .progress import bar
from .resources import map_with_actor_pool

SOURCE_KEY = "source_key"
WARM_PROMPT = "warm_prompt"
COLD_PROMPT = "cold_prompt"
SEED = "seed"
VARIANT = "variant"
STRENGTH = "strength"
TRIES = "tries"
OUTCOME = "outcome"
P_SOURCE = "p_source"
P_EDIT = "p_edit"
ORIGINAL_SUFFIX = "#orig"
# Variants: "compensated" (an accepted edit, PNG), "source" (in the edit's place, the source
# kept by strength 0 or by the fidelity gate: its own bytes, not a re-encode), "original"
# (keep_originals' extra unedited copy under key#orig, and every row of compensator "none").
COMPENSATED, SOURCE, ORIGINAL = "compensated", "source", "original"
# Words of the "diverse" assignment, handed from the driver to the actors with each row.
ASSIGNED_WARM, ASSIGNED_COLD = "assigned_warm", "assigned_cold"

# Output rows: the image columns of every stage plus where each image came from and how.
COMPENSATED_SCHEMA = pa.schema(list(schema.IMAGE_SCHEMA) + [
    pa.field(SOURCE_KEY, pa.string(), nullable=False),
    pa.field(WARM_PROMPT, pa.string(), nullable=False),
    pa.field(COLD_PROMPT, pa.string(), nullable=False),
    pa.field(SEED, pa.int64(), nullable=False),
    pa.field(VARIANT, pa.string(), nullable=False),
    # The per-image record of the edit (editing.compensate_images): strength, prompts and noise
    # of the last try, edits made, outcome (accepted / kept_source; original rows: original),
    # the gate's p(true class) of the source and of the last edit (NaN without the gate).
    pa.field(STRENGTH, pa.float64(), nullable=False),
    pa.field(TRIES, pa.int32(), nullable=False),
    pa.field(OUTCOME, pa.string(), nullable=False),
    pa.field(P_SOURCE, pa.float64(), nullable=False),
    pa.field(P_EDIT, pa.float64(), nullable=False),
])

DIFFUSION = ("instructpix2pix", "img2img")


class CompensatorActor:
    """map_batches actor: builds one Compensator, then edits batches of image rows.

    In: a numpy batch with key, label, class_name, image (encoded bytes), and optionally assigned_warm / assigned_cold (the driver's word pairs). Out: COMPENSATED_SCHEMA
    columns; key is the source key; an accepted edit is PNG with variant "compensated", a kept
    source keeps its bytes with variant "source". An image whose longer side exceeds
    cfg.max_side is scaled down to it first (its height/width say so; a kept source is then the
    scaled PNG); an undecodable image raises ImageDecodeError naming its key.
    """

    def __init__(self, cfg: dict, device: str | None = None):
        from ..core.editing import build_compensator, checkpoint_scorer

        self.cfg = from_dict(CompensateConfig, cfg)
        if device is None and self.cfg.compensator in DIFFUSION:
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.compensator = build_compensator(self.cfg, device)
        self.score = checkpoint_scorer(self.cfg.gate_model, device or "cpu") \
            if self.cfg.gate_threshold > 0 else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys = [str(k) for k in batch[schema.KEY]]
        images = []
        for key, blob in zip(keys, batch[schema.IMAGE]):
            try:
                images.append(decode_rgb(blob, max_side=self.cfg.max_side))
            except ImageDecodeError as e:
                raise ImageDecodeError(f"image {key!r}: {e}") from e
        words = list(zip(map(str, batch[ASSIGNED_WARM]), map(str, batch[ASSIGNED_COLD]))) \
            if ASSIGNED_WARM in batch else None
        labels = np.asarray(batch[schema.LABEL], dtype=np.int64)
        results = self.compensator.compensate(images, keys, labels=labels, words=words,
                                              score=self.score)
        kept = [r["outcome"] == KEPT_SOURCE for r in results]
        # A kept source keeps its bytes, unless max_side scaled it (then it is that PNG).
        blobs = [blob if k and r["image"].shape[:2] == image_size(blob) else encode_png(r["image"])
                 for r, k, blob in zip(results, kept, batch[schema.IMAGE])]
        return {
            schema.KEY: np.array(keys, dtype=object),
            SOURCE_KEY: np.array(keys, dtype=object),
            schema.LABEL: labels,
            schema.CLASS_NAME: np.array([str(c) for c in batch[schema.CLASS_NAME]], dtype=object),
            schema.IMAGE: np.array(blobs, dtype=object),
            schema.HEIGHT: np.array([r["image"].shape[0] for r in results], dtype=np.int32),
            schema.WIDTH: np.array([r["image"].shape[1] for r in results], dtype=np.int32),
            WARM_PROMPT: np.array([r["warm_prompt"] for r in results], dtype=object),
            COLD_PROMPT: np.array([r["cold_prompt"] for r in results], dtype=object),
            SEED: np.array([r["seed"] for r in results], dtype=np.int64),
            VARIANT: np.array([SOURCE if k else COMPENSATED for k in kept], dtype=object),
            STRENGTH: np.array([r["strength"] for r in results], dtype=np.float64),
            TRIES: np.array([r["tries"] for r in results], dtype=np.int32),
            OUTCOME: np.array([r["outcome"] for r in results], dtype=object),
            P_SOURCE: np.array([r["p_source"] for r in results], dtype=np.float64),
            P_EDIT: np.array([r["p_edit"] for r in results], dtype=np.float64),
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
        VARIANT: np.array([ORIGINAL] * n, dtype=object),
        STRENGTH: np.zeros(n, dtype=np.float64),
        TRIES: np.zeros(n, dtype=np.int32),
        OUTCOME: np.array([ORIGINAL] * n, dtype=object),
        P_SOURCE: np.full(n, np.nan),
        P_EDIT: np.full(n, np.nan),
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
    "resized" lists those keys), the two prompts, the run seed, variant="compensated" and the
    edit's record (strength, tries, outcome, gate scores). An image whose edit was not kept
    (strength 0, or rejected gate_tries times by the fidelity gate) keeps its source bytes with
    variant="source" and outcome "kept_source". With cfg.keep_originals the unedited source rows
    are added too: key f"{key}#orig", original bytes, empty prompts, variant="original".
    compensator "none" writes the source rows unchanged (variant "original", key unchanged;
    keep_originals then adds nothing). class_map.json is copied when present. use_gpu=None puts
    diffusion actors on GPUs when the cluster has them; classical runs on CPUs.

    cfg.assignment="diverse" picks every image's word pair here, on the driver, before the pool
    (editing.assign_diverse: a set-level choice); cfg.gate_model must be a checkpoint file when
    cfg.gate_threshold > 0 ("auto" is resolved by condense, to its teacher).

    A condensed set is small (IPC x classes rows of encoded bytes), so the driver reads it,
    sorts it by key and hands Ray one block per chunk of cfg.batch_size consecutive keys; each
    block is one actor call (batch_size=None). Chunks are therefore fixed whatever the shard
    layout or pool size, and the bytes are reproducible (diffusion batches may round differently
    from single images, see core.editing). The result is gathered, sorted and written atomically.
    Returns a summary dict; acceptance_rate is accepted edits / edited rows (None for "none").
    """
    if cfg.compensator in DIFFUSION and cfg.model_path:  # random-weight pipelines edit into noise
        from ..core.editing import refuse_random_weights
        refuse_random_weights(cfg.model_path)
    _check_gate_model(cfg)
    t0 = time.perf_counter()
    src = Path(condensed_path)
    table = _sorted_source(src)
    extra = {}
    if (src / schema.CLASS_MAP_FILE).is_file():
        extra[schema.CLASS_MAP_FILE] = json.loads((src / schema.CLASS_MAP_FILE).read_text())

    if not cfg.edits:
        parts = [original_table(table, cfg.seed, key_suffix="")]
    elif table.num_rows == 0:
        parts = []
    else:
        gpu = use_gpu if cfg.compensator in DIFFUSION else False
        work = _with_assigned_words(table, cfg) if cfg.assignment == "diverse" else table
        blocks = [work.slice(i, cfg.batch_size) for i in range(0, work.num_rows, cfg.batch_size)]
        ds = map_with_actor_pool(
            ray.data.from_arrow(blocks), CompensatorActor, cfg.num_actors, cfg.num_cpus_per_actor,
            gpu, fn_constructor_kwargs={"cfg": to_dict(cfg)}, batch_size=None, batch_format="numpy")
        parts = []
        with bar(table.num_rows, f"compensate ({cfg.compensator})", unit="img") as b:
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                parts.append(pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch)
                             else batch)
                b.update(parts[-1].num_rows)
        parts = [p.select(COMPENSATED_SCHEMA.names).cast(COMPENSATED_SCHEMA) for p in parts]
        if cfg.keep_originals:
            parts.append(original_table(table, cfg.seed))
    out = pa.concat_tables(parts).sort_by(schema.KEY) if parts else COMPENSATED_SCHEMA.empty_table()
    if out.num_rows != table.num_rows * (2 if cfg.keep_originals and cfg.edits else 1):
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
            **edit_summary(out, cfg),
            "seconds": round(seconds, 3),
            "images_per_s": round(table.num_rows / seconds, 3) if seconds else None}


def edit_summary(out: pa.Table, cfg: CompensateConfig) -> dict:
    """Counts of the edit records of a COMPENSATED_SCHEMA table: accepted, kept_source,
    acceptance_rate (accepted / edited rows; None when no row was edited, as for "none"),
    mean strength and tries of the edited rows, plus the control settings."""
    outcome = out.column(OUTCOME).to_pylist()
    edited = [i for i, o in enumerate(outcome) if o != ORIGINAL]
    accepted = sum(outcome[i] == ACCEPTED for i in edited)
    strength, tries = out.column(STRENGTH).to_pylist(), out.column(TRIES).to_pylist()
    n = len(edited)
    return {"accepted": accepted, "kept_source": n - accepted,
            "acceptance_rate": round(accepted / n, 6) if n else None,
            "mean_strength": round(sum(strength[i] for i in edited) / n, 6) if n else None,
            "mean_tries": round(sum(tries[i] for i in edited) / n, 6) if n else None,
            "strength": cfg.edit_strength() if cfg.edits else None,
            "assignment": cfg.assignment, "gate_threshold": cfg.gate_threshold}


def _check_gate_model(cfg: CompensateConfig) -> None:
    """ConfigError naming compensate.gate_model unless the gate is off or it is a file."""
    if cfg.gate_threshold <= 0 or not cfg.edits:
        return
    if cfg.gate_model == "auto":
        raise ConfigError("compensate.gate_model=auto means the run's teacher, which only "
                          "`dc3ray condense` has; pass a classifier checkpoint path")
    if not Path(cfg.gate_model).expanduser().is_file():
        raise ConfigError(f"compensate.gate_model={cfg.gate_model} is not a file; pass a dc3ray "
                          "classifier checkpoint (e.g. a teacher.pt)")


def _with_assigned_words(table: pa.Table, cfg: CompensateConfig) -> pa.Table:
    """`table` plus the diverse assignment's word pair of every row (assigned_warm/_cold)."""
    from ..core.editing import assign_diverse
    keys = table.column(schema.KEY).to_pylist()
    images = []
    for key, blob in zip(keys, table.column(schema.IMAGE).to_pylist()):
        try:
            images.append(decode_rgb(blob, max_side=cfg.max_side))
        except ImageDecodeError as e:
            raise ImageDecodeError(f"image {key!r}: {e}") from e
    words = assign_diverse(images, keys, cfg)
    return table.append_column(ASSIGNED_WARM, pa.array([words[k][0] for k in keys], pa.string())) \
        .append_column(ASSIGNED_COLD, pa.array([words[k][1] for k in keys], pa.string()))


def compensate_command(cmd: CompensateCommand, log: Callable[[str], None] = print) -> int:
    """`dc3ray compensate`."""
    from .resources import configure_data_context, init_ray
    # Beside the output shard folder, which must hold shards only.
    with run_logs(Path(f"{Path(cmd.out).resolve()}.logs") / "ray.log"):
        init_ray()
        configure_data_context()
        res = compensate_dataset(cmd.condensed, cmd.compensate, cmd.out)
    log(json.dumps(res, indent=2))
    return 0

