"""The features stage: Ray Data streams shards through an Embedder pool (bins) and a
GradientFeaturizer pool (last-layer gradient factors) into a features Parquet folder.

Thin adapters only: the maths lives in dc3ray.core.features. The actors hold no Ray calls, so
tests call them on a dict batch.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ..config import EmbedConfig, GradConfig, from_dict, to_dict
from ..core import schema
from ..core.classtable import dataset_imagenet_indices
from ..core.datasets import is_shard_dir, load_class_map, load_table
from ..core.imageio import decode_batch, decode_rgb
from ..core.shards import atomic_dir, count_rows
from ..core.shards import read_shards as read_image_shards  # in the driver (.io's: Ray Data)
from ..errors import DataError, MissingPathError
from .io import read_shards
from .progress import watch_parquet_rows
from .resources import cluster_cpus, fit_actor_cpus, map_with_actor_pool

E = "e"
H = "h"
FEATURES_INFO_FILE = "features.json"

EMBEDDING_METHODS = ("dc3", "herding", "kcenter", "centroid")
GRADIENT_METHODS = ("dc3", "graphcut", "facility")


def _device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def _decode(images, size: int | None, keys=None) -> np.ndarray:
    """Encoded bytes column -> uint8 (N, size, size, 3); size=None keeps the stored size.
    A bad image raises ImageDecodeError naming its key."""
    blobs = [bytes(b) for b in images]
    if size is not None:
        return decode_batch(blobs, size, keys=None if keys is None else list(keys))
    arrs = [decode_rgb(b) for b in blobs]
    shapes = {a.shape for a in arrs}
    if len(shapes) > 1:
        raise DataError(f"images of one batch have different sizes {sorted(shapes)[:3]}; the "
                         "faithful VAE embeds stored sizes, so ingest images at one size")
    return np.stack(arrs) if arrs else np.zeros((0, 1, 1, 3), np.uint8)


# --------------------------------------------------------------------------------------------
# Actors (no Ray calls inside: testable by calling them on a dict batch)
# --------------------------------------------------------------------------------------------

class Embedder:
    """map_batches actor: {key, label, image, ...} -> {key, label, embedding (N, D), *keep}."""

    def __init__(self, cfg_dict: dict, faithful: bool = False, keep: tuple[str, ...] = ()):
        from ..core.features import build_embedder
        self.model = build_embedder(from_dict(EmbedConfig, cfg_dict), _device(), faithful=faithful)
        self.keep = tuple(keep)

    def __call__(self, batch: dict) -> dict:
        emb = self.model(_decode(batch[schema.IMAGE], self.model.input_size, batch[schema.KEY]))
        out = {schema.KEY: batch[schema.KEY], schema.LABEL: batch[schema.LABEL],
               schema.EMBEDDING: emb}
        out.update({c: batch[c] for c in self.keep})
        return out


class GradientFeaturizer:
    """map_batches actor: {key, label, image, ...} -> {key, label, e (N, C), h (N, D), *keep}.

    embedding_from_h=True also returns h as the embedding column (used when the embedding
    backbone is the same model: one forward pass instead of two).
    """

    def __init__(self, cfg_dict: dict, num_classes: int, faithful: bool = False,
                 keep: tuple[str, ...] = (), embedding_from_h: bool = False,
                 imagenet_indices: list[int] | None = None):
        from ..core.features import build_grad_model
        self.model = build_grad_model(from_dict(GradConfig, cfg_dict), num_classes, _device(),
                                      faithful=faithful, imagenet_indices=imagenet_indices)
        self.keep = tuple(keep)
        self.embedding_from_h = embedding_from_h

    def __call__(self, batch: dict) -> dict:
        images = _decode(batch[schema.IMAGE], self.model.input_size, batch[schema.KEY])
        e, h = self.model(images, np.asarray(batch[schema.LABEL], np.int64))
        out = {schema.KEY: batch[schema.KEY], schema.LABEL: batch[schema.LABEL], E: e, H: h}
        if self.embedding_from_h:
            out[schema.EMBEDDING] = h
        out.update({c: batch[c] for c in self.keep})
        return out


def shares_backbone(embed_cfg: EmbedConfig, grad_cfg: GradConfig) -> bool:
    """True when the embedding is the gradient model's h (same network, weights and size)."""
    return (embed_cfg.backbone == grad_cfg.backbone and embed_cfg.model_path == grad_cfg.model_path
            and embed_cfg.image_size == grad_cfg.image_size)


def _to_arrow_lists(batch: dict) -> pa.Table:
    """numpy batch -> Arrow table with 2-D float columns as list<float32> (plain Parquet lists)."""
    cols = {}
    for name, arr in batch.items():
        arr = np.asarray(arr)
        if arr.ndim == 2 and arr.dtype.kind == "f":
            flat = pa.array(np.ascontiguousarray(arr, np.float32).reshape(-1))
            offsets = pa.array(np.arange(0, arr.size + 1, arr.shape[1], dtype=np.int32))
            cols[name] = pa.ListArray.from_arrays(offsets, flat)
        elif name == schema.KEY:
            cols[name] = pa.array([str(k) for k in arr], pa.string())
        elif name == schema.LABEL:
            cols[name] = pa.array(arr.astype(np.int64))
        else:
            cols[name] = pa.array(list(arr))
    return pa.table(cols)


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------

def _feature_files(path: str | Path) -> list[str]:
    p = Path(path)
    files = sorted(p.glob("*.parquet")) if p.is_dir() else [p]
    if not files or not files[0].exists():
        raise MissingPathError(f"features {p} hold no Parquet files; run compute_features first")
    return [str(f) for f in files]


def read_features(path: str | Path, label: int | None = None,
                  columns: list[str] | None = None) -> pa.Table:
    """Features Parquet (all rows or one label's) as an Arrow table in (label, key) order; row
    groups of other labels are skipped by their statistics (compute_features writes each file
    from a stretch of label-ordered rows, so a class sits in few row groups)."""
    dataset = pads.dataset(_feature_files(path), format="parquet")
    flt = pc.field(schema.LABEL) == int(label) if label is not None else None
    table = dataset.to_table(columns=columns, filter=flt)
    if schema.KEY not in table.column_names:
        return table
    # Files come in write order, not row order, when compute_features skipped its sort.
    return table.sort_by([(schema.LABEL, "ascending"), (schema.KEY, "ascending")])


def list_column(table: pa.Table, name: str) -> np.ndarray | None:
    """A list<float32> column -> float32 (N, D); None when the column is absent."""
    if name not in table.column_names:
        return None
    col = table.column(name).combine_chunks()
    n = len(col)
    if n == 0:
        return np.zeros((0, 0), np.float32)
    values = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if values.size % n:
        raise ValueError(f"feature column {name!r} has rows of different lengths")
    return values.reshape(n, values.size // n)


def in_label_key_order(dataset_path: str | Path) -> bool:
    """True when the shards, read in file order, are sorted by (label, key), as ingest writes
    them (checked on the key and label columns only)."""
    t = read_image_shards(dataset_path, required=None, columns=[schema.KEY, schema.LABEL])
    if t.num_rows < 2:
        return True
    labels, keys = t.column(schema.LABEL).combine_chunks(), t.column(schema.KEY).combine_chunks()
    l0, l1, k0, k1 = labels[:-1], labels[1:], keys[:-1], keys[1:]
    ordered = pc.or_(pc.less(l0, l1), pc.and_(pc.equal(l0, l1), pc.less_equal(k0, k1)))
    return bool(pc.all(ordered).as_py())


def compute_features(dataset_path: str | Path, embed_cfg: EmbedConfig, grad_cfg: GradConfig,
                     out_dir: str | Path, *, need_embedding: bool = True,
                     need_gradients: bool = True, faithful: bool = False) -> Path:
    """Write key, label[, embedding][, e, h] (list<float32>) for every image of `dataset_path`.

    Ray Data streams the shards through an Embedder pool (embed_cfg) then a GradientFeaturizer
    pool (grad_cfg). When both name the same backbone, weights and image size, the embedding
    is the gradient model's h (fp32) and the Embedder pool is skipped: one forward pass.
    A per-class read must touch few files: shards already in (label, key) order (ingest's) are
    written block by block as they stream, each file a stretch of label-ordered rows; others are
    sorted by (label, key) into one file per class first (a shuffle: 7-10 s even for 60 images on
    2 cores). read_features returns rows in (label, key) order either way. The folder is
    committed atomically and holds class_map.json and features.json.
    """
    class_map = load_class_map(dataset_path)
    num_classes = max(class_map.values()) + 1
    # grad.head=imagenet's targets: each label's ImageNet index (ingested with a class table).
    imagenet_indices = dataset_imagenet_indices(dataset_path, class_map) \
        if need_gradients and grad_cfg.head == "imagenet" else None
    if imagenet_indices is None and need_gradients and grad_cfg.head == "imagenet" \
            and num_classes != 1000 and grad_cfg.backbone not in ("teacher", "convnet3"):
        # Fail here, not in every actor's constructor (an imagenet_subset teacher has its own).
        raise DataError(f"grad.head=imagenet needs each class's ImageNet-1K index, but "
                        f"{dataset_path} has no imagenet_index.json: ingest it with "
                        "--class-map <classes.tsv>, or choose grad.head=random or zero")
    shared = need_embedding and need_gradients and shares_backbone(embed_cfg, grad_cfg)
    # Several blocks per actor, so every actor of a pool of k > 1 has work; and never one block
    # for a small folder: rows are then written (and counted by the progress bar) as each shard
    # finishes, not all at the end (45,000 CIFAR images at 224 px are most of an hour on 2 CPUs).
    actors = max(embed_cfg.num_actors if need_embedding and not shared else 0,
                 grad_cfg.num_actors if need_gradients else 0)
    ds = read_shards(dataset_path, columns=[schema.KEY, schema.LABEL, schema.IMAGE],
                     min_blocks=max(4 * actors, 2))
    # Both pools run at once: together they must leave the read/write tasks a CPU.
    embed_cpus, grad_cpus = fit_actor_cpus(
        [(embed_cfg.num_actors if need_embedding and not shared else 0,
          embed_cfg.num_cpus_per_actor),
         (grad_cfg.num_actors if need_gradients else 0, grad_cfg.num_cpus_per_actor)],
        cluster_cpus())
    if need_embedding and not shared:
        ds = map_with_actor_pool(
            ds, Embedder, embed_cfg.num_actors, embed_cpus,
            batch_format="numpy", batch_size=embed_cfg.batch_size,
            fn_constructor_kwargs=dict(cfg_dict=to_dict(embed_cfg), faithful=faithful,
                                       keep=(schema.IMAGE,) if need_gradients else ()))
    if need_gradients:
        ds = map_with_actor_pool(
            ds, GradientFeaturizer, grad_cfg.num_actors, grad_cpus,
            batch_format="numpy", batch_size=grad_cfg.batch_size,
            fn_constructor_kwargs=dict(cfg_dict=to_dict(grad_cfg), num_classes=num_classes,
                                       faithful=faithful, embedding_from_h=shared,
                                       imagenet_indices=imagenet_indices,
                                       keep=(schema.EMBEDDING,) if need_embedding and not shared
                                       else ()))
    if not (need_embedding or need_gradients):
        ds = ds.select_columns([schema.KEY, schema.LABEL])
    ds = ds.map_batches(_to_arrow_lists, batch_format="numpy")
    needs_sort = not in_label_key_order(dataset_path)
    if needs_sort:
        # One sort partition per class (not Ray's default 200): each class lands in its own file.
        ds = ds.sort([schema.LABEL, schema.KEY], boundaries=list(range(1, num_classes)) or None)
    info = {"dataset": str(Path(dataset_path).resolve()), "num_classes": num_classes,
            "embed": to_dict(embed_cfg) if need_embedding else None,
            "grad": to_dict(grad_cfg) if need_gradients else None, "faithful": faithful,
            "embedding_is_h": shared, "sorted": needs_sort}
    rows = count_rows(dataset_path) if is_shard_dir(dataset_path) else None
    with atomic_dir(out_dir, overwrite=True) as tmp, watch_parquet_rows(tmp, rows, "features"):
        ds.write_parquet(str(tmp))
        (tmp / schema.CLASS_MAP_FILE).write_text(json.dumps(class_map, indent=2, sort_keys=True))
        (tmp / FEATURES_INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True))
    return Path(out_dir)


def key_label_table(dataset_path: str | Path, out_dir: str | Path) -> Path:
    """The 'features' of model-free methods (random): key and label only, no Ray Data pass."""
    table = load_table(dataset_path).select([schema.KEY, schema.LABEL])
    table = table.sort_by([(schema.LABEL, "ascending"), (schema.KEY, "ascending")])
    with atomic_dir(out_dir, overwrite=True) as tmp:
        pq.write_table(table, tmp / schema.shard_name(0))
        (tmp / schema.CLASS_MAP_FILE).write_text(
            json.dumps(load_class_map(dataset_path), indent=2, sort_keys=True))
    return Path(out_dir)
