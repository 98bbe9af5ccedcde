"""`dc3ray fid`: FID and KID between two image sets, in this process (CUDA when present)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..config import FidCommand
from ..core.atomic import write_json
from ..errors import DataError


def compare_image_sets(set_a: str | Path, set_b: str | Path, out_json: str | Path | None = None, *,
                       model_path: str | Path | None = None, device: str | None = None,
                       batch_size: int = 64,
                       kid_seed: int = 0, cache_dir: str | Path | None = None,
                       fid_method: str = "eig",
                       log: Callable[[str], None] = print) -> dict:
    """FID and KID between two image sets (shards or ImageFolder trees), in this process (CUDA
    when present, or `device`); writes `out_json` when given. Returns core.fid.compare_sets' dict."""
    from ..core.fid import compare_sets

    for p in (set_a, set_b):
        if not Path(p).exists():
            raise DataError(f"fid: image set {p} does not exist")
    res = compare_sets(set_a, set_b, model_path=model_path, device=device, batch_size=batch_size,
                       kid_seed=kid_seed, cache_dir=cache_dir, fid_method=fid_method, log=log)
    if out_json:
        write_json(out_json, res)
    log(f"[fid] FID {res['fid']:.3f}  KID {res['kid']:.5f}  ({res['n_a']} vs {res['n_b']} images, "
        f"{res['device']}, {res['seconds']:.1f} s)")
    return res


def fid_command(cmd: FidCommand, log: Callable[[str], None] = print) -> int:
    """`dc3ray fid`."""
    compare_image_sets(cmd.set_a, cmd.set_b, cmd.out, model_path=cmd.model, device=cmd.device,
                       batch_size=cmd.batch_size, cache_dir=cmd.cache_dir,
                       fid_method=cmd.fid_method, log=log)
    return 0
