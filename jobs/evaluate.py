"""Ray Job entry point: score a condensed set by KD training of students (`dc3ray evaluate`).

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/evaluate.py /mnt/shared/runs/c10/condensed --val /mnt/shared/c10/val \\
        --teacher /mnt/shared/models/teacher.pt --out /mnt/shared/runs/c10/eval \\
        --set eval.seeds=3 --set eval.use_gpu=true
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import check_paths, describe_cluster, print_outputs, run_main  # noqa: E402

EPILOG = """\
Any evaluation setting (dc3ray/config.py EvalConfig) can be set with --set eval.KEY=VALUE, e.g.
eval.student=resnet18, eval.epochs=1000, eval.seeds=3, eval.workers=4, eval.use_gpu=true,
eval.image_size=224. With --config PRESET the preset's `eval:` section gives the defaults.
Paths must be absolute on storage every node sees (Ray Train workers read them).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jobs/evaluate.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train students from scratch on CONDENSED with online KD from a frozen "
                    "teacher (RDED protocol), one Ray Train run per seed, on the cluster this "
                    "driver joins; print top-1 on --val and where eval.json and the MLflow run "
                    "went.",
        epilog=EPILOG)
    p.add_argument("condensed", help="condensed set: shard folder or ImageFolder")
    p.add_argument("--val", required=True, help="held-out split with the same class map")
    p.add_argument("--teacher", default=None, help="teacher checkpoint (dc3ray teacher.pt)")
    p.add_argument("--out", required=True, help="folder for eval.json and mlflow.db")
    p.add_argument("--ipc", type=int, default=None, help="images per class (batch rule)")
    p.add_argument("--config", default=None, help="preset whose eval: section gives defaults")
    p.add_argument("--set", action="append", default=[], metavar="eval.KEY=VALUE",
                   help="override an evaluation setting (repeatable)")
    return p


def eval_config(preset: str | None, overrides: list[str]):
    """EvalConfig from a preset's `eval:` section plus `eval.KEY=VALUE` overrides."""
    import yaml

    from dc3ray.config import ConfigError, EvalConfig, from_dict, parse_overrides
    data: dict = {}
    if preset:
        if not Path(preset).is_file():
            raise ConfigError(f"config file {preset} does not exist")
        data = dict((yaml.safe_load(Path(preset).read_text()) or {}).get("eval") or {})
    parsed = parse_overrides(overrides)
    stray = sorted(k for k in parsed if k != "eval")
    if stray:
        raise ConfigError(f"jobs/evaluate.py only takes eval.KEY=VALUE overrides, got {stray}")
    data.update(parsed.get("eval", {}))
    return from_dict(EvalConfig, data, "eval")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # first: --help needs no heavy import

    from dc3ray.config import ConfigError
    from dc3ray.pipeline.tracking import tracking_uri
    from dc3ray.pipeline.train import evaluate_condensed

    cfg = eval_config(args.config, args.set)
    if not cfg.hard_labels and not args.teacher:
        raise ConfigError("evaluate needs --teacher CKPT (or --set eval.hard_labels=true)")
    check_paths(out=args.out, condensed=args.condensed, val=args.val, teacher=args.teacher)
    res = evaluate_condensed(cfg, args.condensed, args.val, args.teacher, args.out, ipc=args.ipc)
    print(f"final top-1 {res['final_mean']:.2f} +- {res['final_std']:.2f}  best top-1 "
          f"{res['best_mean']:.2f} +- {res['best_std']:.2f}  ({cfg.seeds} seeds)", flush=True)
    print(describe_cluster(), flush=True)
    print_outputs("evaluate", {"eval": str(Path(args.out) / "eval.json"),
                               "mlflow": tracking_uri(args.out)})
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
