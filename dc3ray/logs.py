"""Console output: our stage lines on the console, Ray's own logs in the run folder.

Ray logs through Python logging in the driver (ray.data, ray.train, ray.tune) and forwards
worker output; by default only warnings of our own and our progress lines reach the console.
`--verbose` (or DC3RAY_VERBOSE=1) shows Ray's logs as well.
"""
from __future__ import annotations

import logging
import os

VERBOSE_ENV = "DC3RAY_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false")


def setup_console(verbose: bool = False) -> None:
    """Remember the verbosity for this process and the Ray workers it starts (environment)."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    if not verbose:
        logging.getLogger("ray").setLevel(logging.WARNING)
