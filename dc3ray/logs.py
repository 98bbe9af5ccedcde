"""Console output: our stage lines and progress bars on the console, Ray's own logs in the run
folder.

Ray writes to this process's stderr from Python (its loggers, Ray Data's progress log, warnings)
and from C++ (core worker lines). `run_logs(log_file(out))` points file descriptor 2 at
`<out>/logs/ray.log` while a run works, so all of that lands there whatever its source; our own
lines go to stdout and progress bars to `console()`, the original stderr. `--verbose` (or
DC3RAY_VERBOSE=1) leaves everything on the console, Ray worker output included.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, TextIO

VERBOSE_ENV = "DC3RAY_VERBOSE"
RAY_LOG = "ray.log"

_console: TextIO | None = None


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false")


def setup_console(verbose: bool = False) -> None:
    """Remember --verbose for this process and the Ray workers it starts (environment)."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"


def console() -> TextIO:
    """Where progress bars go: the terminal's stderr, also while run_logs redirects fd 2."""
    return _console or sys.stderr


def log_file(out: str | Path) -> Path:
    """Where a run folder keeps Ray's output: <out>/logs/ray.log."""
    return Path(out) / "logs" / RAY_LOG


@contextmanager
def run_logs(path: str | Path) -> Iterator[Path | None]:
    """Inside the block, this process's stderr (fd 2) goes to the file `path` (appended).

    No-op when verbose, or when an enclosing run already redirects (a sweep's condense runs).
    Yields the log file, or None when nothing was redirected.
    """
    global _console
    if verbose() or _console is not None:
        yield None
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(2)
    log = open(path, "ab", buffering=0)
    os.dup2(log.fileno(), 2)
    _console = os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        yield path
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        log.close()
        _console.close()
        _console = None
