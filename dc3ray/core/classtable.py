"""ImageNet class tables: a TSV that fixes label order and ties each class to its ImageNet-1K
logit, so an ImageNet classifier can serve a subset (Imagenette, ImageWoof) with no training.

Format: a header naming the columns `wnid` and `imagenet_index` (`name` optional), then one row
per class; label = row number. An ingested set keeps the mapping as `imagenet_index.json`
({class name: ImageNet-1K index}) next to its class_map.json.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError, SourceError

IMAGENET_INDEX_FILE = "imagenet_index.json"
IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class ClassTable:
    """wnids in label order, their ImageNet-1K indices, and their readable names ('' if none)."""
    wnids: tuple[str, ...]
    imagenet_index: tuple[int, ...]
    names: tuple[str, ...]

    @property
    def class_map(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.wnids)}

    def index_map(self) -> dict[str, int]:
        """{wnid: ImageNet-1K index}: the content of imagenet_index.json."""
        return dict(zip(self.wnids, self.imagenet_index))


def is_class_table(path: str | Path) -> bool:
    """True for a .tsv file (the only class-map format that carries ImageNet indices)."""
    return Path(path).suffix.lower() == ".tsv"


def read_class_table(path: str | Path) -> ClassTable:
    """Parse and validate a TSV class table; SourceError names the file and the culprit row."""
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"class table {p} does not exist")
    rows = list(csv.reader(p.read_text(encoding="utf-8").splitlines(), delimiter="\t"))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise SourceError(f"class table {p} is empty; expected a header 'wnid<TAB>imagenet_index"
                          "[<TAB>name]' and one row per class")
    header = [c.strip() for c in rows[0]]
    missing = [c for c in ("wnid", "imagenet_index") if c not in header]
    if missing:
        raise SourceError(f"class table {p}: the header {header} lacks column(s) {missing}; "
                          "expected 'wnid<TAB>imagenet_index[<TAB>name]'")
    col = {c: header.index(c) for c in ("wnid", "imagenet_index", "name") if c in header}
    wnids: list[str] = []
    indices: list[int] = []
    names: list[str] = []
    seen_wnid: dict[str, int] = {}
    seen_index: dict[int, str] = {}
    for line, r in enumerate(rows[1:], start=2):
        if len(r) < len(header):
            raise SourceError(f"class table {p} line {line}: {len(r)} column(s), the header has "
                              f"{len(header)}")
        wnid, raw = r[col["wnid"]].strip(), r[col["imagenet_index"]].strip()
        if not wnid:
            raise SourceError(f"class table {p} line {line}: empty wnid")
        try:
            index = int(raw)
        except ValueError:
            raise SourceError(f"class table {p} line {line}: imagenet_index {raw!r} of {wnid} "
                              "is not an integer") from None
        if not 0 <= index < IMAGENET_CLASSES:
            raise SourceError(f"class table {p} line {line}: imagenet_index {index} of {wnid} is "
                              f"outside 0..{IMAGENET_CLASSES - 1}")
        if wnid in seen_wnid:
            raise SourceError(f"class table {p}: duplicate wnid {wnid} (lines {seen_wnid[wnid]} "
                              f"and {line})")
        if index in seen_index:
            raise SourceError(f"class table {p}: duplicate imagenet_index {index} for "
                              f"{seen_index[index]} and {wnid}")
        seen_wnid[wnid], seen_index[index] = line, wnid
        wnids.append(wnid)
        indices.append(index)
        names.append(r[col["name"]].strip() if "name" in col else "")
    if not wnids:
        raise SourceError(f"class table {p} has a header but no class rows")
    return ClassTable(tuple(wnids), tuple(indices), tuple(names))


def check_table_covers(table: ClassTable, class_names: list[str], table_path: str | Path,
                       src: str | Path) -> None:
    """SourceError unless the dataset's classes (folder names) and the table's wnids are the
    same set: a folder missing from the table, or a wnid with no folder, is named."""
    known = set(table.wnids)
    extra = [n for n in class_names if n not in known]
    if extra:
        raise SourceError(f"class {extra[0]} is missing from the class table {table_path} "
                          f"({len(extra)} class folder(s) of {src} are not in it: {extra[:5]})")
    present = set(class_names)
    absent = [w for w in table.wnids if w not in present]
    if absent:
        raise SourceError(f"unknown wnid {absent[0]}: the dataset has no such class folder in "
                          f"{src} (class table {table_path}; {len(absent)} wnid(s) without a "
                          f"folder: {absent[:5]})")


def read_imagenet_index(dataset: str | Path) -> dict[str, int] | None:
    """{class name: ImageNet-1K index} stored with an ingested set, or None when absent."""
    p = Path(dataset)
    f = (p if p.is_dir() else p.parent) / IMAGENET_INDEX_FILE
    if not f.is_file():
        return None
    return {str(k): int(v) for k, v in json.loads(f.read_text()).items()}


def imagenet_indices(class_map: dict[str, int], index_map: dict[str, int],
                     where: str | Path = "the dataset") -> list[int]:
    """The ImageNet-1K index of each label 0..C-1 (label order); DataError naming a class
    without one."""
    by_label = sorted(class_map.items(), key=lambda kv: kv[1])
    missing = [n for n, _ in by_label if n not in index_map]
    if missing:
        raise DataError(f"{where}: class(es) {missing[:5]} have no entry in {IMAGENET_INDEX_FILE}; "
                        "re-ingest with --class-map <classes.tsv>")
    return [int(index_map[n]) for n, _ in by_label]


def dataset_imagenet_indices(dataset: str | Path, class_map: dict[str, int]) -> list[int] | None:
    """Label -> ImageNet-1K index list of an ingested set (None when it has no imagenet_index.json)."""
    index_map = read_imagenet_index(dataset)
    return None if index_map is None else imagenet_indices(class_map, index_map, dataset)


__all__ = ["IMAGENET_INDEX_FILE", "ClassTable", "is_class_table", "read_class_table",
           "check_table_covers", "read_imagenet_index", "imagenet_indices",
           "dataset_imagenet_indices"]