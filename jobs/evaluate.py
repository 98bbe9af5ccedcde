"""Ray Job entry point: score a condensed set by KD training of students (`dc3ray evaluate`).

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/evaluate.py /mnt/shared/runs/c10/condensed --val /mnt/shared/c10/val \\
        --teacher /mnt/shared/models/teacher.pt --out /mnt/shared/runs/c10/eval \\
        --seeds 3 --use-gpu

Flags: those of `dc3ray evaluate` (`python jobs/evaluate.py --help`); --config PRESET takes
the preset's eval: section as defaults.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_job  # noqa: E402


def _outputs(cfg) -> dict:
    from dc3ray.pipeline.tracking import tracking_uri
    return {"eval": str(Path(cfg.out) / "eval.json"), "mlflow": tracking_uri(cfg.out)}


def main(argv: list[str] | None = None) -> int:
    return run_job("evaluate", argv, "jobs/evaluate.py",
                   paths=lambda cfg: {"out": cfg.out, "condensed": cfg.condensed, "val": cfg.val,
                                      "teacher": cfg.teacher},
                   outputs=_outputs)


if __name__ == "__main__":
    sys.exit(main())
