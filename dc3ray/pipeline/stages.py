"""Stage cache: each stage's outputs live under `<out>/stages/<name>-<hash of its inputs>/`.

A stage is written to a temp folder and committed by rename, with `_stage.json` written last;
a rerun finds committed stages and skips them, and a changed setting changes the hash of the
stages it feeds, so only those rerun. A killed run leaves only `.tmp-*` folders, which are
swept at the next start.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

from ..config import config_hash
from ..core.shards import atomic_dir

STAGE_FILE = "_stage.json"


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
        with atomic_dir(d, overwrite=True) as tmp:
            info = dict(fn(tmp) or {})
            info["seconds"] = round(time.perf_counter() - t0, 2)
            if info.get("rows"):
                info["rows_per_s"] = round(info["rows"] / max(info["seconds"], 1e-9), 1)
            (tmp / STAGE_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        self.log(f"[{name}] done: {self._line(info)}")
        self.summaries[name] = {**info, "cached": False}
        return d, info

    @staticmethod
    def _line(info: dict) -> str:
        rows = info.get("rows")
        s = f"{info.get('seconds', 0):.1f} s"
        if rows:
            s = f"{rows} rows, {s}, {info.get('rows_per_s', 0):.1f} rows/s"
        return s
