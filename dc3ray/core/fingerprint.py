"""Short fingerprints that decide when cached work may be reused.

Two kinds: content digests (sha256 of the bytes; exact, read everything) for inputs a stage
cache keys on, and stamps (name, size, mtime; cheap) for large inputs whose rewrite is enough
to invalidate a result.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

DIGEST_CHARS = 16


def json_digest(value: Any) -> str:
    """Digest of a JSON-able value (keys sorted; other objects through str)."""
    payload = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:DIGEST_CHARS]


def _update(h: Any, path: Path) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def file_digest(path: str | Path) -> str:
    """Digest of one file's bytes."""
    h = hashlib.sha256()
    _update(h, Path(path))
    return h.hexdigest()[:DIGEST_CHARS]


def files_digest(folder: str | Path, pattern: str = "*.parquet") -> str:
    """Digest of the bytes of every `pattern` file in `folder`, concatenated in name order."""
    h = hashlib.sha256()
    for f in sorted(Path(folder).glob(pattern)):
        _update(h, f)
    return h.hexdigest()[:DIGEST_CHARS]


def tree_stamp(path: str | Path) -> list:
    """(name, size, mtime_ns) of a file or of every file under a folder: cheap, and any rewrite
    of the data changes it."""
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return [(str(f.relative_to(p)) if p.is_dir() else f.name, f.stat().st_size,
             f.stat().st_mtime_ns) for f in files]


def listing_digest(path: str | Path) -> str:
    """Digest of a source's file listing: relative path, size and mtime of every file under
    `path` (symlinks followed, as ingest follows them; each folder walked once), or of `path`
    itself when it is a file. Not the contents: cheap, one stat per file, yet a file added,
    removed or replaced (new size or mtime) changes it."""
    root = Path(path)
    if not root.is_dir():
        st = root.stat()
        return json_digest([[root.name, st.st_size, st.st_mtime_ns]])
    entries, seen, todo = [], set(), [root]
    while todo:
        d = todo.pop()
        st = d.stat()
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop or a folder linked twice
            continue
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(d) as it:
            for e in it:
                try:
                    if e.is_dir(follow_symlinks=True):
                        todo.append(Path(e.path))
                        continue
                    st = e.stat(follow_symlinks=True)
                    entries.append([str(Path(e.path).relative_to(root)), st.st_size,
                                    st.st_mtime_ns])
                except OSError:  # broken symlink: ingest skips and lists it; its name counts
                    entries.append([str(Path(e.path).relative_to(root)), -1, -1])
    return json_digest(sorted(entries))
