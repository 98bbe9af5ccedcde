"""Short fingerprints that decide when cached work may be reused.

Two kinds: content digests (sha256 of the bytes; exact, read everything) for inputs a stage
cache keys on, and stamps (name, size, mtime; cheap) for large inputs whose rewrite is enough
to invalidate a result.
"""
from __future__ import annotations

import hashlib
import json
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
