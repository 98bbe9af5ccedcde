"""Ray Job entry point: a Ray Tune sweep over condensation and evaluation settings (`dc3ray sweep`).

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/sweep.py --config configs/sweep_ipc.yaml --set out=/mnt/shared/sweeps/ipc
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import check_paths, describe_cluster, print_outputs, run_main  # noqa: E402

EPILOG = """\
The sweep YAML names a base preset, a grid of dotted settings -> values, the metric and
max_concurrent_trials. Each distinct condensed set is built once; every grid point is one Tune
trial that scores its set. Rerunning on the same `out` resumes (finished trials are kept).
`out` must be an absolute path on storage every node sees.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jobs/sweep.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a dc3ray sweep (condense each distinct set once, one Ray Tune trial "
                    "per grid point) on the cluster this driver joins; print the ranked table "
                    "and where the results and MLflow runs went.",
        epilog=EPILOG)
    p.add_argument("--config", required=True, help="sweep YAML (configs/sweep_*.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="out=..., max_concurrent_trials=4, grid.select.ipc=[10,50], or a base "
                        "setting such as eval.epochs=300 (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # first: --help needs no heavy import

    # Imported here: the sweep module is the heaviest and the other jobs must not need it.
    from dc3ray.pipeline.sweep import load_sweep, run_sweep

    sweep = load_sweep(args.config, args.set)
    check_paths(out=sweep.out, data=sweep.base.data, val=sweep.base.val)
    res = run_sweep(sweep, sweep.out, log=print)
    print(describe_cluster(), flush=True)
    for row in res.get("rows", [])[:10]:
        print("  " + "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    print_outputs("sweep", {"sweep folder": res.get("out"), "results (CSV)": res.get("csv"),
                            "plot": res.get("png"), "mlflow": res.get("tracking_uri")})
    return 0 if not res.get("failed") else 1


if __name__ == "__main__":
    sys.exit(run_main(main))
