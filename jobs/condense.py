"""Ray Job entry point: the whole DC3 condense job (what `dc3ray condense` runs).

    ray job submit --address http://HEAD:8265 --working-dir . \\
        --runtime-env-json '{"excludes": [".venv", "runs"]}' -- \\
        python jobs/condense.py --config configs/cifar10.yaml --set out=/mnt/shared/runs/c10

Flags: those of `dc3ray condense` (`python jobs/condense.py --help`).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_job  # noqa: E402


def _outputs(cfg) -> dict:
    from dc3ray.pipeline.tracking import tracking_uri
    out = Path(cfg.out)
    return {"condensed set (Parquet)": str(out / "condensed"),
            "condensed set (ImageFolder)": str(out / "images"),
            "manifest": str(out / "manifest.json"),
            "eval": str(out / "eval.json") if cfg.evaluate else None,
            # No URI to browse when the run recorded none.
            "mlflow": tracking_uri(out) if cfg.tracking != "disabled" else None}


def main(argv: list[str] | None = None) -> int:
    return run_job("condense", argv, "jobs/condense.py",
                   paths=lambda cfg: {"out": cfg.out, "data": cfg.data, "val": cfg.val},
                   outputs=_outputs)


if __name__ == "__main__":
    sys.exit(main())
