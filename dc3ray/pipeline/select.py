"""The selection stage: one Ray task per class runs core.select_class on that class's features;
then the selected rows are materialised as a condensed shard folder.

    select_per_class   Ray tasks: one core.select_class call per class -> manifest Parquet
    materialise_subset manifest + source shards -> condensed shards (original bytes)
    run_selection      features (features.py) + the two above, with timings (`dc3ray select`)
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import ray

from ..config import EmbedConfig, GradConfig, SelectCommand, SelectConfig, from_dict, to_dict
from ..core import schema
from ..core.atomic import write_json, write_parquet
from ..core.datasets import is_shard_dir, load_class_map, load_table
from ..core.selection import manifest_table, select_class
from ..core.shards import count_rows, shard_files
from ..errors import ConfigError, DataError
from .features import (
    EMBEDDING_METHODS,
    GRADIENT_METHODS,
    E,
    H,
    compute_features,
    key_label_table,
    list_column,
    read_features,
)
from .io import write_table_atomic
from ..logs import log_file, run_logs
from .progress import bar

MANIFEST_FILE = "manifest.parquet"
SELECTION_INFO_FILE = "selection.json"


# --------------------------------------------------------------------------------------------
# Per-class selection
# --------------------------------------------------------------------------------------------

def _select_one_class(features_path: str, label: int, cfg_dict: dict,
                      class_name: str | None) -> list[dict]:
    """Task body: read one class's features and run core.select_class on them."""
    table = read_features(features_path, label=label)
    keys = table.column(schema.KEY).to_pylist()
    return select_class(keys, label, list_column(table, schema.EMBEDDING), list_column(table, E),
                        list_column(table, H), from_dict(SelectConfig, cfg_dict),
                        class_name=class_name)


_select_task = ray.remote(num_cpus=1, max_retries=2, retry_exceptions=True)(_select_one_class)


def select_per_class(features_path: str | Path, select_cfg: SelectConfig, out_dir: str | Path,
                     *, max_retries: int = 2, show_progress: bool = True) -> Path:
    """Run core.select_class for every class as Ray tasks; returns out_dir/manifest.parquet.

    At most select_cfg.max_in_flight tasks run at once; a failing task is retried
    `max_retries` times, then the error names the class. The manifest (key, label, bin, rank,
    gain, method, seed), sorted by (label, rank), and selection.json (config, per-class counts,
    seconds) are written atomically. Each task reads its own class from `features_path`, so on
    a multi-node cluster that path must be shared storage.
    """
    t0 = time.perf_counter()
    features_path = str(Path(features_path).resolve())
    labels = np.asarray(read_features(features_path, columns=[schema.LABEL])
                        .column(schema.LABEL).to_numpy(zero_copy_only=False), np.int64)
    if labels.size == 0:
        raise DataError(f"features {features_path} hold no rows")
    classes, counts = np.unique(labels, return_counts=True)
    cmap_file = Path(features_path) / schema.CLASS_MAP_FILE
    names = ({int(v): k for k, v in json.loads(cmap_file.read_text()).items()}
             if cmap_file.is_file() else {})

    def who(c: int) -> str:
        return f"{names[c]!r} (label {c})" if c in names else f"label {c}"

    # Fail before launching anything when a class is too small (no retries for a config error).
    small = [(int(c), int(n)) for c, n in zip(classes, counts) if n < select_cfg.ipc]
    if small and not select_cfg.take_all:
        c, n = small[0]
        raise ConfigError(f"class {who(c)} has {n} images but select.ipc={select_cfg.ipc} "
                         f"({len(small)} class(es) too small); lower select.ipc or set "
                         "select.take_all=true")

    cfg_dict = to_dict(select_cfg)
    task = _select_task.options(max_retries=max_retries)
    pending = [int(c) for c in classes]
    in_flight: dict = {}
    rows: list[dict] = []
    progress = bar(len(pending), f"select ({select_cfg.method})", unit="class",
                   disable=not show_progress)
    try:
        while pending or in_flight:
            while pending and len(in_flight) < select_cfg.max_in_flight:
                c = pending.pop(0)
                in_flight[task.remote(features_path, c, cfg_dict, names.get(c))] = c
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                c = in_flight.pop(ref)
                try:
                    rows.extend(ray.get(ref))
                except Exception as e:
                    cause = getattr(e, "cause", None) or e
                    raise RuntimeError(
                        f"selection failed for class {who(c)} after {max_retries} retries: "
                        f"{type(cause).__name__}: {cause}") from e
                progress.update(1)
    finally:
        progress.close()
        for ref in in_flight:
            ray.cancel(ref)

    table = manifest_table(rows)
    out = Path(out_dir)
    manifest = out / MANIFEST_FILE
    write_parquet(table, manifest)
    per_class = {str(int(c)): int(n) for c, n in
                 zip(*np.unique(table.column(schema.LABEL).to_numpy(), return_counts=True))}
    info = {"features": features_path, "select": cfg_dict, "rows": table.num_rows,
            "per_class": per_class, "seconds": round(time.perf_counter() - t0, 3)}
    write_json(out / SELECTION_INFO_FILE, info)
    return manifest


# --------------------------------------------------------------------------------------------
# The condensed set
# --------------------------------------------------------------------------------------------

def materialise_subset(source_path: str | Path, manifest_path: str | Path,
                       out_dir: str | Path, shard_rows: int = 1000) -> Path:
    """Condensed set as image shards: the manifest's rows with the source's original bytes.

    Rows are in manifest order (label, rank); class_map.json is copied from the source and
    selection.json records the manifest. Raises ValueError naming missing keys.
    """
    manifest = pq.read_table(manifest_path)
    keys = manifest.column(schema.KEY).to_pylist()
    wanted = pa.array(keys, pa.string())
    columns = [f.name for f in schema.IMAGE_SCHEMA]
    if is_shard_dir(source_path):
        files = [str(f) for f in shard_files(source_path)]
        table = pads.dataset(files, format="parquet").to_table(
            columns=columns, filter=pc.field(schema.KEY).isin(wanted))
    else:
        table = load_table(source_path).select(columns)
        table = table.filter(pc.is_in(table.column(schema.KEY), value_set=wanted))
    found = {k: i for i, k in enumerate(table.column(schema.KEY).to_pylist())}
    missing = [k for k in keys if k not in found]
    if missing:
        raise DataError(f"{len(missing)} selected key(s) are not in {source_path}, e.g. "
                         f"{missing[:3]}; was the manifest made from this dataset?")
    table = table.take(pa.array([found[k] for k in keys], pa.int64())).cast(schema.IMAGE_SCHEMA)
    extra = {schema.CLASS_MAP_FILE: load_class_map(source_path),
             SELECTION_INFO_FILE: {"manifest": str(Path(manifest_path).resolve()),
                                   "source": str(Path(source_path).resolve()),
                                   "rows": table.num_rows}}
    return write_table_atomic(table, out_dir, shard_rows, extra_files=extra)


# --------------------------------------------------------------------------------------------
# RDED (select.method=rded): stitched patches instead of a subset
# --------------------------------------------------------------------------------------------

RDED_INFO_FILE = "rded.json"


def _rded_one_class(train_path: str, label: int, sel_dict: dict, grad_dict: dict) -> dict:
    """Task body: read one class, score candidate crops with the grad model, stitch."""
    import torch

    from ..core.features import build_scorer
    from ..core.imageio import decode_batch, encode_png
    from ..core.rded import draw_candidates, rded_class

    sel = from_dict(SelectConfig, sel_dict)
    table = pads.dataset([str(f) for f in shard_files(train_path)], format="parquet").to_table(
        columns=[schema.KEY, schema.CLASS_NAME, schema.IMAGE, schema.HEIGHT],
        filter=pc.field(schema.LABEL) == int(label)).sort_by(schema.KEY)
    # Decode only the competing images (an ImageNet class holds ~1,300 large photos).
    table = table.take(draw_candidates(table.column(schema.KEY).to_pylist(), sel.rded_candidates,
                                       sel.seed))
    keys = table.column(schema.KEY).to_pylist()
    side = max(table.column(schema.HEIGHT).to_pylist())  # crops come from the stored size
    images = decode_batch(table.column(schema.IMAGE).to_pylist(), side, keys)
    scorer = build_scorer(from_dict(GradConfig, grad_dict),
                          "cuda" if torch.cuda.is_available() else "cpu")

    def score(crops: np.ndarray) -> np.ndarray:
        return np.concatenate([scorer(crops[i:i + 256], np.full(len(crops[i:i + 256]), label))
                               for i in range(0, len(crops), 256)])
    out, sources = rded_class(images, keys, score, sel.ipc, sel.rded_factor, sel.rded_crops,
                              sel.rded_min_scale, sel.seed, candidates=sel.rded_candidates)
    name = table.column(schema.CLASS_NAME)[0].as_py()
    return {"keys": [f"rded/{name}/{i:04d}" for i in range(len(out))], "label": int(label),
            "class_name": name, "images": [encode_png(im) for im in out], "side": int(out.shape[1]),
            "sources": sources}


def rded_subset(train_path: str | Path, grad_cfg: GradConfig, select_cfg: SelectConfig,
                out_dir: str | Path, shard_rows: int = 1000, show_progress: bool = True) -> Path:
    """RDED condensed set: select_cfg.ipc stitched images per class (core.rded), one Ray task per
    class (at most select_cfg.max_in_flight at once), scored by grad_cfg's classifier with its
    own head. Writes shards (IMAGE_SCHEMA, PNG) + class_map.json + rded.json (each image's patch
    sources) to out_dir atomically."""
    train_path = str(Path(train_path).resolve())
    class_map = load_class_map(train_path)
    task = ray.remote(num_cpus=1, max_retries=2)(_rded_one_class)
    pending, in_flight, parts = sorted(class_map.values()), {}, []
    with bar(len(pending), "select (rded)", unit="class", disable=not show_progress) as progress:
        while pending or in_flight:
            while pending and len(in_flight) < select_cfg.max_in_flight:
                c = pending.pop(0)
                in_flight[task.remote(train_path, c, to_dict(select_cfg), to_dict(grad_cfg))] = c
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                in_flight.pop(ref)
                parts.append(ray.get(ref))
                progress.update(1)
    parts.sort(key=lambda p: p["label"])
    rows = [{schema.KEY: k, schema.LABEL: p["label"], schema.CLASS_NAME: p["class_name"],
             schema.IMAGE: im, schema.HEIGHT: p["side"], schema.WIDTH: p["side"]}
            for p in parts for k, im in zip(p["keys"], p["images"])]
    table = pa.Table.from_pylist(rows, schema=schema.IMAGE_SCHEMA)
    info = {"select": to_dict(select_cfg), "grad": to_dict(grad_cfg), "source": train_path,
            "patches": {k: src for p in parts for k, src in zip(p["keys"], p["sources"])}}
    return write_table_atomic(table, out_dir, shard_rows,
                              extra_files={schema.CLASS_MAP_FILE: class_map, RDED_INFO_FILE: info})


def run_selection(data_path: str | Path, embed_cfg: EmbedConfig, grad_cfg: GradConfig,
                  select_cfg: SelectConfig, out_dir: str | Path, *,
                  shard_rows: int = 1000, show_progress: bool = True) -> dict:
    """features -> manifest -> condensed shards under out_dir/{features,selection,condensed}.

    Only the features the method needs are computed (random: none, just key and label).
    Returns {"paths": {...}, "timings": {stage: seconds}, "rows": n}.
    """
    out = Path(out_dir)
    timings = {}
    t0 = time.perf_counter()
    if select_cfg.method == "rded":
        if not is_shard_dir(data_path):
            raise ConfigError(f"select.method=rded reads ingested shards; {data_path} is not a "
                              "shard folder: run `dc3ray ingest` first")
        condensed = rded_subset(data_path, grad_cfg, select_cfg, out / "condensed", shard_rows,
                                show_progress)
        return {"paths": {"condensed": str(condensed)}, "rows": count_rows(condensed),
                "timings": {"total_s": round(time.perf_counter() - t0, 3)}}
    if select_cfg.method in EMBEDDING_METHODS or select_cfg.method in GRADIENT_METHODS:
        features = compute_features(
            data_path, embed_cfg, grad_cfg, out / "features",
            need_embedding=select_cfg.method in EMBEDDING_METHODS,
            need_gradients=select_cfg.method in GRADIENT_METHODS, faithful=select_cfg.faithful)
    else:
        features = key_label_table(data_path, out / "features")
    timings["features_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    manifest = select_per_class(features, select_cfg, out / "selection",
                                show_progress=show_progress)
    timings["select_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    condensed = materialise_subset(data_path, manifest, out / "condensed", shard_rows)
    timings["materialise_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    rows = pq.read_metadata(manifest).num_rows
    return {"paths": {"features": str(features), "manifest": str(manifest),
                      "condensed": str(condensed)},
            "timings": {k: round(v, 3) for k, v in timings.items()}, "rows": rows}


def select_command(cmd: SelectCommand, log: Callable[[str], None] = print) -> int:
    """`dc3ray select`: features, per-class selection and the condensed shards under cmd.out."""
    from .resources import configure_data_context, init_ray
    with run_logs(log_file(cmd.out)):
        init_ray()
        configure_data_context()
        res = run_selection(cmd.data, cmd.embed, cmd.grad, cmd.select, cmd.out)
    log(json.dumps(res, indent=2, default=str))
    return 0


__all__ = ["select_per_class", "materialise_subset", "run_selection", "select_command",
           "MANIFEST_FILE"]
