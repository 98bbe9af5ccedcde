"""Ray Job entry point: a dc3ray sweep (condense each distinct set once, one Ray Tune trial per
grid point) on the cluster this driver joins.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/sweep.py --config configs/sweep_cifar10.yaml --set out=/mnt/shared/runs/sweep

Flags: those of `dc3ray sweep` (`python jobs/sweep.py --help`).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_job  # noqa: E402


def _sweep(cfg):
    from dc3ray.pipeline.sweep import load_sweep
    return load_sweep(cfg.config, list(cfg.set))


def _outputs(cfg) -> dict:
    from dc3ray.pipeline.tracking import tracking_uri
    out = Path(cfg.out or _sweep(cfg).out)
    return {"sweep folder": str(out), "results (CSV)": str(out / "results.csv"),
            "plot": str(out / "results.png"), "mlflow": tracking_uri(out)}


def _paths(cfg) -> dict:
    sweep = _sweep(cfg)
    return {"out": cfg.out or sweep.out, "data": sweep.base.data, "val": sweep.base.val}


def main(argv: list[str] | None = None) -> int:
    return run_job("sweep", argv, "jobs/sweep.py", paths=_paths, outputs=_outputs)


if __name__ == "__main__":
    sys.exit(main())
