"""`dc3ray colors`: colour metrics and per-channel KDE of image sets, side by side."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..config import ColorsCommand
from ..errors import DataError


def color_sets(sets: list[str], out_png: str, size: int | None = None,
               log: Callable[[str], None] = print) -> list[dict]:
    """Colour metrics of image sets (shard folders, ImageFolder trees or plain image folders):
    prints a table, writes the per-channel KDE figure to out_png and returns `color_report` rows
    (name = folder name). `size` resizes every image to size x size (needed for mixed sizes)."""
    from ..core import color
    from ..core.datasets import decode_images, load_table

    named: dict[str, np.ndarray] = {}
    for s in sets:
        p = Path(s)
        name = p.name or str(p)
        if name in named:
            name = str(p)
        images, _, _ = decode_images(load_table(p), size)
        if len(images) == 0:
            raise DataError(f"image set {p} holds no images")
        named[name] = images
    rows = color.color_report(named)
    color.plot_color_kde(named, out_png)
    log(color.format_color_table(rows))
    log(f"[colors] KDE figure -> {out_png}")
    return rows


def colors_command(cmd: ColorsCommand, log: Callable[[str], None] = print) -> int:
    """`dc3ray colors`."""
    color_sets(list(cmd.sets), cmd.out, size=cmd.size, log=log)
    return 0
