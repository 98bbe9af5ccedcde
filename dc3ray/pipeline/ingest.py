"""`dc3ray ingest`: a raw dataset -> Parquet shards + class map + report, committed atomically.

Ingest needs no Ray: validation runs in a small process pool, and the output is what Ray Data
reads afterwards. Re-running on the same source into the same OUT is a no-op.
"""
from __future__ import annotations

import collections
import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import pyarrow as pa

from ..config import InfoCommand, IngestCommand, IngestConfig
from ..core import schema
from ..core.classtable import (
    IMAGENET_INDEX_FILE,
    check_table_covers,
    is_class_table,
    read_class_table,
)
from ..core.shards import shard_files, write_shards_atomic
from ..core.sources import SourceError, detect_format, read_class_map, scan_source


def _fingerprint(rows: list[dict], class_map: dict[str, int], shard_rows: int,
                 imagenet_index: dict[str, int] | None = None) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(class_map, sort_keys=True).encode())
    if imagenet_index is not None:  # only then: sets ingested without a table keep their id
        h.update(json.dumps(imagenet_index, sort_keys=True).encode())
    h.update(str(shard_rows).encode())
    for r in rows:
        h.update(r[schema.KEY].encode("utf-8"))
        h.update(hashlib.blake2b(r[schema.IMAGE], digest_size=8).digest())
    return h.hexdigest()[:20]


def ingest(src: str | Path, out: str | Path, cfg: IngestConfig = IngestConfig(),
           split: str = "train", log=print) -> dict:
    """Ingest `src` into `out`; returns the report dict (also written to out/ingest_report.json).

    Raises SourceError for a missing source, an empty class, a duplicate key, or an OUT that
    already holds a different dataset. A .tsv class map (core.classtable) must list exactly the
    source's class folders; its ImageNet indices are written to out/imagenet_index.json.
    """
    t0 = time.perf_counter()
    src, out = Path(src), Path(out)
    class_map = read_class_map(cfg.class_map) if cfg.class_map else None
    imagenet_index = None
    if cfg.class_map and is_class_table(cfg.class_map):
        table = read_class_table(cfg.class_map)
        imagenet_index = table.index_map()
        if detect_format(src) == "imagefolder":
            folders = sorted(p.name for p in src.iterdir()
                             if p.is_dir() and not p.name.startswith("."))
            check_table_covers(table, folders, cfg.class_map, src)
    if out.exists() and not out.is_dir():
        raise SourceError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / schema.DATASET_INFO_FILE).is_file():
        raise SourceError(f"output {out} is not empty and holds no dc3ray dataset; "
                          "choose an empty or new folder")
    log(f"[ingest] scanning {src} ...")
    scan = scan_source(src, class_map, split=split, num_workers=cfg.num_workers)
    fp = _fingerprint(scan.rows, scan.class_map, cfg.shard_rows, imagenet_index)
    info_file = out / schema.DATASET_INFO_FILE
    if info_file.is_file():
        old = json.loads(info_file.read_text())
        if old.get("fingerprint") == fp:
            log(f"[ingest] {out} already holds this dataset ({old['num_rows']} images); nothing to do")
            return json.loads((out / schema.INGEST_REPORT_FILE).read_text())
        raise SourceError(f"output {out} already holds a different dataset (from "
                          f"{old.get('source')}); choose another folder or delete it")
    table = pa.Table.from_pylist(scan.rows, schema=schema.IMAGE_SCHEMA)
    counts = collections.Counter(r[schema.CLASS_NAME] for r in scan.rows)
    sizes = collections.Counter(f"{r[schema.HEIGHT]}x{r[schema.WIDTH]}" for r in scan.rows)
    wall = time.perf_counter() - t0
    report = {
        "source": str(src.resolve()), "format": scan.format, "num_rows": table.num_rows,
        "num_classes": len(scan.class_map),
        "counts": {n: counts[n] for n in sorted(scan.class_map, key=scan.class_map.get)},
        "sizes": dict(sizes.most_common()),
        "image_bytes": int(sum(len(r[schema.IMAGE]) for r in scan.rows)),
        "skipped": scan.skipped, "num_skipped": len(scan.skipped),
        "shard_rows": cfg.shard_rows,
    }
    info = {"fingerprint": fp, "source": report["source"], "format": scan.format,
            "num_rows": table.num_rows, "num_classes": len(scan.class_map), "split": split}
    extra = {schema.CLASS_MAP_FILE: scan.class_map, schema.INGEST_REPORT_FILE: report,
             schema.DATASET_INFO_FILE: info}
    if imagenet_index is not None:
        extra[IMAGENET_INDEX_FILE] = imagenet_index
    write_shards_atomic(table, out, cfg.shard_rows, extra_files=extra, overwrite=True)
    wall = time.perf_counter() - t0
    report["wall_s"] = round(wall, 2)
    report["images_per_s"] = round(table.num_rows / wall, 1) if wall > 0 else None
    (out / schema.INGEST_REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    log(f"[ingest] {table.num_rows} images, {len(scan.class_map)} classes, "
        f"{len(scan.skipped)} skipped -> {out} ({wall:.1f} s, {report['images_per_s']} img/s)")
    for s in scan.skipped[:10]:
        log(f"[ingest]   skipped {s['path']}: {s['reason']}")
    if len(scan.skipped) > 10:
        log(f"[ingest]   ... {len(scan.skipped) - 10} more in {out / schema.INGEST_REPORT_FILE}")
    return report


def dataset_info(path: str | Path) -> dict:
    """Counts per class, image sizes, bytes, shard count and skipped files of an ingested set."""
    import pyarrow.parquet as pq
    p = Path(path)
    files = shard_files(p)
    counts: collections.Counter = collections.Counter()
    sizes: collections.Counter = collections.Counter()
    total_bytes = 0
    rows = 0
    for f in files:
        t = pq.read_table(f, columns=[schema.CLASS_NAME, schema.HEIGHT, schema.WIDTH])
        rows += t.num_rows
        counts.update(t.column(schema.CLASS_NAME).to_pylist())
        sizes.update(f"{h}x{w}" for h, w in zip(t.column(schema.HEIGHT).to_pylist(),
                                               t.column(schema.WIDTH).to_pylist()))
        total_bytes += f.stat().st_size
    report_file = p / schema.INGEST_REPORT_FILE
    skipped = json.loads(report_file.read_text())["skipped"] if report_file.is_file() else []
    cmap_file = p / schema.CLASS_MAP_FILE
    cmap = json.loads(cmap_file.read_text()) if cmap_file.is_file() else {}
    order = sorted(counts, key=lambda n: (cmap.get(n, 1 << 30), n))
    return {"path": str(p), "num_rows": rows, "num_shards": len(files),
            "counts": {n: counts[n] for n in order}, "sizes": dict(sizes.most_common()),
            "shard_bytes": total_bytes, "skipped": skipped}


def format_info(info: dict) -> str:
    lines = [f"{info['path']}: {info['num_rows']} images in {len(info['counts'])} classes, "
             f"{info['num_shards']} shards, {info['shard_bytes'] / 1e6:.1f} MB"]
    width = max((len(n) for n in info["counts"]), default=5)
    for n, c in info["counts"].items():
        lines.append(f"  {n:<{width}}  {c}")
    top = list(info["sizes"].items())[:5]
    lines.append("image sizes (HxW: count): " + ", ".join(f"{s}: {c}" for s, c in top)
                 + (" ..." if len(info["sizes"]) > 5 else ""))
    lines.append(f"skipped files: {len(info['skipped'])}")
    for s in info["skipped"][:20]:
        lines.append(f"  {s['path']}: {s['reason']}")
    return "\n".join(lines)


def ingest_command(cmd: IngestCommand, log: Callable[[str], None] = print) -> int:
    """`dc3ray ingest`."""
    ingest(cmd.src, cmd.out, cmd.ingest, split=cmd.split, log=log)
    return 0


def info_command(cmd: InfoCommand, log: Callable[[str], None] = print) -> int:
    """`dc3ray info`."""
    info = dataset_info(cmd.path)
    log(json.dumps(info, indent=2) if cmd.json else format_info(info))
    return 0
