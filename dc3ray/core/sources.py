"""Scan raw datasets (ImageFolder, CIFAR pickle batches, WebDataset tars) into image rows.

Every file is validated by a full decode; what cannot be used is returned as a skipped entry
(path + reason), never dropped silently. Encoded bytes are kept as they are (CIFAR pickles,
which hold raw pixels, are encoded once as lossless PNG).
"""
from __future__ import annotations

import json
import os
import pickle
import tarfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import SourceError  # re-exported: callers catch it from here
from . import schema
from .classtable import is_class_table, read_class_table
from .imageio import ImageDecodeError, encode_png, probe_image


@dataclass
class Scan:
    """Result of scanning a source: valid rows (dicts in IMAGE_SCHEMA order) and skipped items."""
    format: str
    class_map: dict[str, int]
    rows: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------------------- class maps

def read_class_map(path: str | Path) -> dict[str, int]:
    """Read a class map: JSON {name: index}, a text file with one class name per line, or a
    .tsv class table (core.classtable: wnid + ImageNet index per row, label = row order).

    Indices must be exactly 0..C-1 so that labels match a teacher's logit order.
    """
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"class map {p} does not exist")
    if is_class_table(p):
        return read_class_table(p).class_map
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise SourceError(f"class map {p} is not valid JSON: {e}") from None
        if isinstance(raw, list):
            cmap = {str(n): i for i, n in enumerate(raw)}
        elif isinstance(raw, dict):
            try:
                cmap = {str(k): int(v) for k, v in raw.items()}
            except (TypeError, ValueError):
                raise SourceError(f"class map {p} must map names to integer indices") from None
        else:
            raise SourceError(f"class map {p} must be a JSON object or list")
    else:
        names = [ln.strip() for ln in text.splitlines() if ln.strip()]
        cmap = {n: i for i, n in enumerate(names)}
        if len(cmap) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise SourceError(f"class map {p} lists class(es) twice: {dup}")
    if sorted(cmap.values()) != list(range(len(cmap))):
        raise SourceError(f"class map {p}: indices must be exactly 0..{len(cmap) - 1} without gaps "
                          "or repeats")
    return cmap


# ---------------------------------------------------------------------------- validation

def _probe_file(path: str) -> tuple[str, bytes | None, int, int, str]:
    """(path, bytes or None, h, w, reason). Runs in worker processes."""
    try:
        if os.path.islink(path) and not os.path.exists(path):
            return path, None, 0, 0, "broken symlink"
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return path, None, 0, 0, f"unreadable: {e.strerror or e}"
    try:
        h, w, _ = probe_image(data)
    except ImageDecodeError as e:
        return path, None, 0, 0, str(e)
    return path, data, h, w, ""


def _probe_bytes(item: tuple[str, bytes]) -> tuple[str, bytes | None, int, int, str]:
    name, data = item
    try:
        h, w, _ = probe_image(data)
    except ImageDecodeError as e:
        return name, None, 0, 0, str(e)
    return name, data, h, w, ""


def _parallel_map(fn, items: list, num_workers: int) -> Iterator:
    if num_workers <= 1 or len(items) < 256:
        yield from map(fn, items)
        return
    with ProcessPoolExecutor(max_workers=num_workers) as ex:
        yield from ex.map(fn, items, chunksize=256)


# ---------------------------------------------------------------------------- ImageFolder

def _walk_files(root: Path) -> tuple[list[Path], list[dict]]:
    """All regular files under root (following symlinks once; loops are reported, not followed)."""
    files: list[Path] = []
    skipped: list[dict] = []
    seen: set[str] = set()
    stack = [root]
    while stack:
        d = stack.pop()
        real = os.path.realpath(d)
        if real in seen:
            skipped.append({"path": str(d), "reason": "symlink loop (directory already visited)"})
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            skipped.append({"path": str(d), "reason": f"unreadable directory: {e.strerror or e}"})
            continue
        for e in entries:
            p = Path(e.path)
            try:
                if e.is_dir(follow_symlinks=True):
                    stack.append(p)
                elif e.is_file(follow_symlinks=True):
                    files.append(p)
                elif e.is_symlink():
                    skipped.append({"path": str(p), "reason": "broken symlink"})
            except OSError as err:
                skipped.append({"path": str(p), "reason": f"unreadable: {err.strerror or err}"})
    return sorted(files), skipped


def scan_plain_folder(src: Path, num_workers: int = 1) -> Scan:
    """A folder of images without class folders (clean-fid's convention, for FID and colour
    reports): one class named after the folder; keys are the relative file paths."""
    files, skipped = _walk_files(src)
    name = src.name or "images"
    scan = Scan("plainfolder", {name: 0})
    scan.skipped += skipped
    for path, data, h, w, reason in _parallel_map(_probe_file, [str(f) for f in files], num_workers):
        if data is None:
            scan.skipped.append({"path": path, "reason": reason})
        else:
            scan.rows.append(_row(Path(path).relative_to(src).as_posix(), 0, name, data, h, w))
    return scan


def scan_image_folder(src: Path, class_map: dict[str, int] | None, num_workers: int = 1) -> Scan:
    class_dirs = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    stray = sorted(p for p in src.iterdir() if not p.is_dir())
    if not class_dirs:
        raise SourceError(f"{src} holds no class folders (expected {src}/<class>/<image>)")
    names = [p.name for p in class_dirs]
    if class_map is None:
        class_map = {n: i for i, n in enumerate(names)}
    unknown = [n for n in names if n not in class_map]
    if unknown:
        raise SourceError(f"class folder(s) {unknown[:5]} in {src} are not in the class map; "
                          "add them to the map or remove the folders")
    absent = [n for n in class_map if n not in names]
    if absent:
        raise SourceError(f"class(es) {absent[:5]} of the class map have no folder in {src}")
    scan = Scan("imagefolder", dict(class_map))
    scan.skipped += [{"path": str(p), "reason": "file outside any class folder"} for p in stray]
    work: list[tuple[str, str, str]] = []  # (path, class, key)
    for d in class_dirs:
        files, skipped = _walk_files(d)
        scan.skipped += skipped
        for f in files:
            work.append((str(f), d.name, f"{d.name}/{f.relative_to(d).as_posix()}"))
    by_path = {w[0]: w for w in work}
    for path, data, h, w, reason in _parallel_map(_probe_file, [w[0] for w in work], num_workers):
        _, cname, key = by_path[path]
        if data is None:
            scan.skipped.append({"path": path, "reason": reason})
        else:
            scan.rows.append(_row(key, class_map[cname], cname, data, h, w))
    return scan


# ---------------------------------------------------------------------------- CIFAR pickles

_CIFAR_FILES = {
    "cifar10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"],
                "meta": "batches.meta", "names": "label_names", "labels": "labels"},
    "cifar100": {"train": ["train"], "test": ["test"],
                 "meta": "meta", "names": "fine_label_names", "labels": "fine_labels"},
}


def _cifar_kind(src: Path) -> str | None:
    for kind, spec in _CIFAR_FILES.items():
        if (src / spec["meta"]).is_file() and all((src / f).is_file() for f in spec["train"][:1]):
            return kind
    return None


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except Exception as e:
        raise SourceError(f"CIFAR batch {path} cannot be read: {type(e).__name__}: {e}") from None


def scan_cifar_pickle(src: Path, class_map: dict[str, int] | None, split: str = "train") -> Scan:
    kind = _cifar_kind(src)
    if kind is None:
        raise SourceError(f"{src} is not a CIFAR-10/100 python batch folder")
    spec = _CIFAR_FILES[kind]
    if split not in ("train", "test"):
        raise SourceError(f"CIFAR split must be 'train' or 'test', got {split!r}")
    names = list(_unpickle(src / spec["meta"])[spec["names"]])
    if class_map is None:
        class_map = {n: i for i, n in enumerate(sorted(names))}
    missing = [n for n in names if n not in class_map]
    if missing:
        raise SourceError(f"CIFAR classes {missing[:5]} are not in the class map")
    scan = Scan(kind, dict(class_map))
    for fname in spec[split]:
        path = src / fname
        if not path.is_file():
            raise SourceError(f"CIFAR batch {path} is missing")
        batch = _unpickle(path)
        data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = batch[spec["labels"]]
        for i, (img, lab) in enumerate(zip(data, labels)):
            cname = names[int(lab)]
            scan.rows.append(_row(f"{fname}/{i:05d}", class_map[cname], cname,
                                  encode_png(np.ascontiguousarray(img)), 32, 32))
    return scan


# ---------------------------------------------------------------------------- WebDataset

_IMG_EXT = ("jpg", "jpeg", "png", "webp", "bmp", "ppm")


def _tar_files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    return sorted(p for p in src.iterdir() if p.is_file() and p.name.endswith(".tar"))


def scan_webdataset(src: Path, class_map: dict[str, int] | None, num_workers: int = 1) -> Scan:
    """Samples are `{key}.jpg|png|...` + `{key}.cls` (integer label) in one or more tar shards."""
    tars = _tar_files(src)
    if not tars:
        raise SourceError(f"{src} holds no .tar shards")
    samples: dict[str, dict] = {}
    skipped: list[dict] = []
    for tar in tars:
        try:
            tf = tarfile.open(tar)
        except (tarfile.TarError, OSError) as e:
            raise SourceError(f"WebDataset shard {tar} cannot be opened: {e}") from None
        with tf:
            local: dict[str, dict] = {}
            try:
                for m in tf:
                    if not m.isfile():
                        continue
                    base = m.name.rsplit("/", 1)[-1]
                    if "." not in base:
                        skipped.append({"path": f"{tar}:{m.name}", "reason": "member without extension"})
                        continue
                    stem = m.name[: len(m.name) - len(base)] + base.split(".", 1)[0]
                    ext = base.split(".", 1)[1].lower()
                    payload = tf.extractfile(m).read()
                    local.setdefault(stem, {"tar": str(tar)})[ext] = payload
            except (tarfile.TarError, OSError, EOFError) as e:
                skipped.append({"path": str(tar), "reason": f"truncated tar after {len(local)} samples: {e}"})
            for stem, parts in local.items():
                if stem in samples:
                    raise SourceError(f"duplicate key {stem!r} in WebDataset shards "
                                      f"{samples[stem]['tar']} and {tar}")
                samples[stem] = parts
    items = []
    for stem in sorted(samples):
        parts = samples[stem]
        where = f"{parts['tar']}:{stem}"
        img_ext = next((e for e in _IMG_EXT if e in parts), None)
        if img_ext is None:
            skipped.append({"path": where, "reason": "sample has no image member"})
            continue
        if "cls" not in parts:
            skipped.append({"path": where, "reason": "sample has no .cls label"})
            continue
        try:
            label = int(parts["cls"].decode().strip())
        except ValueError:
            skipped.append({"path": where, "reason": f"unparseable .cls {parts['cls'][:20]!r}"})
            continue
        items.append((stem, label, parts[img_ext], where))
    labels = sorted({it[1] for it in items})
    if class_map is None:
        class_map = {str(lab): lab for lab in labels}
    inv = {v: k for k, v in class_map.items()}
    bad = [lab for lab in labels if lab not in inv]
    if bad:
        raise SourceError(f"WebDataset labels {bad[:5]} are not indices of the class map")
    if sorted(class_map.values()) != list(range(len(class_map))):
        raise SourceError("WebDataset labels must be 0..C-1 without gaps; pass a class map "
                          f"(found labels {labels[:10]}...)")
    scan = Scan("webdataset", dict(class_map), skipped=skipped)
    probed = _parallel_map(_probe_bytes, [(it[3], it[2]) for it in items], num_workers)
    for (stem, label, _, where), (_, data, h, w, reason) in zip(items, probed):
        if data is None:
            scan.skipped.append({"path": where, "reason": reason})
        else:
            scan.rows.append(_row(stem, label, inv[label], data, h, w))
    return scan


# ---------------------------------------------------------------------------- dispatch

def _row(key: str, label: int, cname: str, data: bytes, h: int, w: int) -> dict:
    return {schema.KEY: key, schema.LABEL: int(label), schema.CLASS_NAME: cname,
            schema.IMAGE: data, schema.HEIGHT: int(h), schema.WIDTH: int(w)}


def detect_format(src: Path) -> str:
    if src.is_file() and src.name.endswith(".tar"):
        return "webdataset"
    if not src.is_dir():
        raise SourceError(f"dataset source {src} does not exist (expected an ImageFolder tree, "
                          "a CIFAR python batch folder or WebDataset .tar shards)")
    if _cifar_kind(src):
        return "cifar"
    if any(p.name.endswith(".tar") for p in src.iterdir() if p.is_file()) and \
            not any(p.is_dir() for p in src.iterdir()):
        return "webdataset"
    return "imagefolder"


def scan_source(src: str | Path, class_map: dict[str, int] | None = None, split: str = "train",
                num_workers: int = 1) -> Scan:
    """Scan any supported source; rows are sorted by (label, key) and checked for problems.

    Raises SourceError for a missing source, an empty class or a duplicate key.
    """
    src = Path(src)
    fmt = detect_format(src)
    if fmt == "cifar":
        scan = scan_cifar_pickle(src, class_map, split)
    elif fmt == "webdataset":
        scan = scan_webdataset(src, class_map, num_workers)
    else:
        scan = scan_image_folder(src, class_map, num_workers)
    scan.rows.sort(key=lambda r: (r[schema.LABEL], r[schema.KEY]))
    keys = [r[schema.KEY] for r in scan.rows]
    dup = next((a for a, b in zip(keys, keys[1:]) if a == b), None)
    if dup is not None:
        raise SourceError(f"duplicate key {dup!r} in {src}")
    counts = {name: 0 for name in scan.class_map}
    for r in scan.rows:
        counts[r[schema.CLASS_NAME]] += 1
    empty = [n for n, c in counts.items() if c == 0]
    if empty:
        raise SourceError(f"class(es) {empty[:5]} in {src} have no usable image "
                          f"(see skipped files: {len(scan.skipped)}); fix or remove them")
    return scan
