"""Stage cache: each stage's outputs live under `<out>/stages/<name>-<hash of its inputs>/`.

A stage is written to a temp folder and committed by rename, with `_stage.json` written last;
a rerun finds committed stages and skips them, and a changed setting changes the hash of the
stages it feeds, so only those rerun. A killed run leaves only `.tmp-*` folders, which are
swept at the next start.
"""
from __future__ import annotations

import errno
import json
import re
import shutil
import time
from pathlib import Path
from typing import Callable

from ..config import config_hash
from ..core.shards import atomic_dir
from ..errors import ClusterError, UserError

STAGE_FILE = "_stage.json"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

# A stage that fails because a Ray node died under it (an actor Ray Data does not restart, like
# its Parquet footer reader; an object whose every copy was on that node) is rerun from scratch
# in a fresh temp folder, at most this many times; other failures are not retried here.
NODE_LOSS_RETRIES = 2
_NODE_LOST = re.compile(r"its node has died|node was terminated|lost due to node failure|"
                        r"NodeDiedError|OwnerDiedError|owner has died")


def _chain(exc: BaseException | None):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__


def lost_node(exc: BaseException) -> str | None:
    """'node <id> (<ip>)' when `exc` (or its cause chain) says a Ray node died under the work,
    else None. Ray reports it through several exception types, some only as text (an exception
    that could not be deserialised quotes the original), so the text decides."""
    text = "\n".join(f"{type(e).__name__}: {e}" for e in _chain(exc))
    if not _NODE_LOST.search(text):
        return None
    node = re.search(r"Node Id: ([0-9a-f]{8,})", text)
    ip = re.search(r"\bip: ([0-9a-fA-F.:]+)", text)
    return " ".join(filter(None, ["node", node.group(1)[:12] if node else None,
                                  f"({ip.group(1)})" if ip else None])) if node or ip else \
        "a node"


def disk_full(exc: BaseException) -> OSError | None:
    """The ENOSPC / EDQUOT OSError behind `exc` (its cause chain, Ray's `cause`), else None."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            return e
        if "No space left on device" in str(e):  # pyarrow's and Ray's wrapped forms
            return OSError(errno.ENOSPC, "No space left on device", getattr(e, "filename", None))
    return None


def disk_full_error(err: OSError, where: str | Path, what: str,
                    partial: Path | None = None) -> UserError:
    """UserError: `what` ran out of space writing `where` (and the file, when known), with the
    space left on that file system now and, when given, what the `partial` write held (measure
    before removing it)."""
    where = Path(where)
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        usage = shutil.disk_usage(probe)
        left = f"{_size(usage.free)} free of {_size(usage.total)}"
    except OSError:
        left = "free space unknown"
    if partial is not None and partial.exists():
        held = sum(f.stat().st_size for f in partial.rglob("*") if f.is_file())
        left += f"; its partial output, {_size(held)}, is removed"
    file = f", file {err.filename}" if err.filename else ""
    return UserError(f"{what}: no space left on the device writing {where}{file} ({left}); "
                     "nothing of it was committed, finished stages are kept",
                     hint=f"free space on the disk of {probe} (or choose an out on a larger "
                          "disk) and rerun: finished stages are reused")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class StageCache:
    def __init__(self, root: str | Path, log: Callable[[str], None] = print):
        self.root = Path(root) / "stages"
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = log
        for stale in self.root.glob(".tmp-*"):  # leftovers of a killed run
            shutil.rmtree(stale, ignore_errors=True)
        self.summaries: dict[str, dict] = {}

    def path(self, name: str, *parts) -> Path:
        return self.root / f"{name}-{config_hash(*parts)}"

    def run(self, name: str, parts: tuple, fn: Callable[[Path], dict | None]) -> tuple[Path, dict]:
        """Run `fn(tmp_dir) -> info` unless the stage for `parts` is already committed.

        `info` may carry `rows`; seconds and rows/s are added and printed as one summary line.
        """
        d = self.path(name, *parts)
        marker = d / STAGE_FILE
        if marker.is_file():
            info = json.loads(marker.read_text())
            self.log(f"[{name}] cached ({d.name}): {self._line(info)}")
            self.summaries[name] = {**info, "cached": True}
            return d, info
        self.log(f"[{name}] running -> {d.name}")
        t0 = time.perf_counter()
        for attempt in range(NODE_LOSS_RETRIES + 1):
            try:
                info = self._commit(name, d, fn, t0)
                break
            except Exception as e:
                node = lost_node(e)
                if node is None:
                    raise
                if attempt == NODE_LOSS_RETRIES:
                    raise ClusterError(
                        f"stage {name} failed {attempt + 1} times because Ray nodes died under "
                        f"it (last: {node})",
                        hint="check the cluster (`ray status`), then rerun the same command: "
                             "finished stages are reused") from e
                self.log(f"[{name}] lost {node} mid-stage; rerunning the stage "
                         f"(retry {attempt + 1} of {NODE_LOSS_RETRIES})")
        self.log(f"[{name}] done: {self._line(info)}")
        self.summaries[name] = {**info, "cached": False}
        return d, info

    @staticmethod
    def _commit(name: str, d: Path, fn: Callable[[Path], dict | None], t0: float) -> dict:
        """fn(tmp) in a fresh temp folder, `_stage.json` last, then rename to `d`; a failure
        removes the temp folder (committed stages stay) and a full disk becomes a UserError."""
        with atomic_dir(d, overwrite=True) as tmp:
            try:
                info = dict(fn(tmp) or {})
                info["seconds"] = round(time.perf_counter() - t0, 2)
                if info.get("rows"):
                    info["rows_per_s"] = round(info["rows"] / max(info["seconds"], 1e-9), 1)
                (tmp / STAGE_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
            except Exception as e:
                full = disk_full(e)
                if full is None:
                    raise
                raise disk_full_error(full, d, f"stage {name}", partial=tmp) from e
        return info

    @staticmethod
    def _line(info: dict) -> str:
        rows = info.get("rows")
        s = f"{info.get('seconds', 0):.1f} s"
        if rows:
            s = f"{rows} rows, {s}, {info.get('rows_per_s', 0):.1f} rows/s"
        return s
