"""Progress bars of long stages, drawn by the driver on the console (dc3ray.logs.console()).

Training loops run in Ray Train workers whose output stays in Ray's logs unless --verbose, so a
loop's rank 0 appends one JSON line per evaluated epoch to a progress file (on the run's
storage, which every node already shares) and the driver follows it. Ray Data stages report by
the Parquet rows they have written so far.
"""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..logs import console


def bar(total: int | None, desc: str, unit: str = "it", disable: bool = False):
    """A tqdm bar on the console (redraws at most every 2 s when it is not a terminal)."""
    from tqdm.auto import tqdm
    out = console()
    tty = hasattr(out, "isatty") and out.isatty()
    return tqdm(total=total, desc=desc, unit=unit, file=out, leave=True, dynamic_ncols=tty,
                mininterval=0.2 if tty else 2.0, ascii=not tty, disable=disable)


def report_epoch(path: str | None, **row) -> None:
    """Worker side: append one progress line (rank 0 only; `path` None: no one follows)."""
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


@contextmanager
def _polling(poll: Callable[[], None], every: float = 1.0) -> Iterator[None]:
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every):
            poll()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        poll()


@contextmanager
def follow_epochs(path: Path, total: int, desc: str) -> Iterator[str]:
    """Driver side of report_epoch: a bar of `total` epochs with the latest top-1 and loss.

    Yields the path to hand to the loop (its parent is created, an old file removed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    b = bar(total, desc, unit="epoch")
    seen = 0

    def poll() -> None:
        nonlocal seen
        try:
            lines = path.read_text().splitlines()
        except OSError:
            return
        for line in lines[seen:]:
            try:
                row = json.loads(line)
            except ValueError:
                break  # half-written line: read it next time
            seen += 1
            b.update(max(0, int(row.get("epoch", 0)) - b.n))
            b.set_postfix({k: v for k, v in row.items() if k != "epoch"}, refresh=False)
    try:
        with _polling(poll):
            yield str(path)
    finally:
        b.close()


@contextmanager
def watch_parquet_rows(folder: Path, total: int, desc: str) -> Iterator[None]:
    """A bar of the rows in the Parquet files that appear under `folder` (a Ray Data write)."""
    import pyarrow.parquet as pq
    b = bar(total, desc, unit="img")
    counted: dict[str, int] = {}

    def poll() -> None:
        for f in Path(folder).rglob("*.parquet"):
            if f.name not in counted:
                try:
                    counted[f.name] = pq.ParquetFile(f).metadata.num_rows
                except Exception:  # still being written: count it next time
                    continue
        b.update(max(0, sum(counted.values()) - b.n))
    try:
        with _polling(poll):
            yield
    finally:
        b.close()
