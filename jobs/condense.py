"""Ray Job entry point: the whole DC3 condense job (what `dc3ray condense` runs).

    ray job submit --address http://HEAD:8265 --working-dir . \\
        --runtime-env-json '{"excludes": [".venv", "runs"]}' -- \\
        python jobs/condense.py --config configs/cifar10.yaml --set out=/mnt/shared/runs/c10
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import check_paths, describe_cluster, print_outputs, run_main  # noqa: E402

EPILOG = """\
Inside a Ray Job, RAY_ADDRESS is set by the job supervisor and the driver joins that cluster;
run by hand without RAY_ADDRESS it starts a local Ray instance. `out` (and data/val when they
are not part of the repo) must be absolute paths on storage that every node sees: a relative
path lands in the job's temporary working dir on the head node.

example (tiny run):
  python jobs/condense.py --config configs/cifar10.yaml --set out=/tmp/c10 \\
      --set teacher.epochs=1 --set eval.epochs=1 --set eval.seeds=1 --set select.ipc=2
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jobs/condense.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the DC3 condense job (ingest -> teacher -> features -> selection -> "
                    "color compensation -> evaluation) on the Ray cluster this driver joins, "
                    "then print where the condensed set, manifest and MLflow run went.",
        epilog=EPILOG)
    p.add_argument("--config", default=None, help="YAML preset (configs/*.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. out=/mnt/shared/runs/x, select.ipc=50 "
                        "(repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # first: --help needs no heavy import

    from dc3ray.config import CondenseConfig, load_config
    from dc3ray.pipeline.condense import condense
    from dc3ray.pipeline.tracking import tracking_uri

    cfg = load_config(CondenseConfig, args.config, args.set)
    check_paths(out=cfg.out, data=cfg.data, val=cfg.val)
    manifest = condense(cfg)
    print(describe_cluster(), flush=True)
    out = Path(cfg.out)
    print_outputs("condense", {
        "condensed set (Parquet)": str(out / "condensed"),
        "condensed set (ImageFolder)": str(out / "images"),
        "manifest": str(out / "manifest.json"),
        "eval": str(out / "eval.json") if manifest.get("eval") else None,
        "mlflow": tracking_uri(out),
    })
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
