"""`dc3ray` command line: build_parser() + main(argv); each subcommand calls one function."""
from __future__ import annotations

import argparse
import json
import sys

from .config import ConfigError, IngestConfig

EPILOG = """\
typical flow (CIFAR-10 JPEG folders):
  dc3ray ingest ../shared/data/cifar10/train runs/cifar10/train
  dc3ray ingest ../shared/data/cifar10/val   runs/cifar10/val --class-map runs/cifar10/train/class_map.json
  dc3ray info runs/cifar10/train
"""


def _cmd_ingest(args) -> int:
    from .pipeline.ingest import ingest
    cfg = IngestConfig(shard_rows=args.shard_rows, class_map=args.class_map,
                       num_workers=args.workers)
    ingest(args.src, args.out, cfg, split=args.split)
    return 0


def _cmd_info(args) -> int:
    from .pipeline.ingest import dataset_info, format_info
    info = dataset_info(args.path)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dc3ray", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Dataset Condensation with Color Compensation (DC3) on Ray: keep a few "
                    "images per class, color-compensate them, and score them by distillation.",
        epilog=EPILOG)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser(
        "ingest", help="turn a dataset into Parquet shards that Ray Data reads",
        description="Turn an ImageFolder tree (<class>/<image>), CIFAR-10/100 python batches or "
                    "WebDataset .tar shards ({key}.jpg|png + {key}.cls) into Parquet shards with "
                    "columns key, label, class_name, image (original bytes), height, width. "
                    "Undecodable files are skipped and listed in OUT/ingest_report.json. "
                    "The output appears only when complete (written to a temp folder, then renamed).")
    s.add_argument("src", help="dataset folder, CIFAR batch folder, or .tar shard(s)")
    s.add_argument("out", help="output folder (new or empty)")
    s.add_argument("--shard-rows", type=int, default=IngestConfig.shard_rows,
                   help="rows per Parquet file (default %(default)s)")
    s.add_argument("--class-map", default=None,
                   help="JSON {name: index} or text file (one class per line) fixing label order, "
                        "e.g. to match a teacher's logits; default: sorted folder names")
    s.add_argument("--split", default="train", choices=["train", "test"],
                   help="which CIFAR pickle split to read (ignored for other formats)")
    s.add_argument("--workers", type=int, default=IngestConfig.num_workers,
                   help="processes decoding images for validation (default %(default)s)")
    s.set_defaults(func=_cmd_ingest)

    s = sub.add_parser("info", help="counts per class, image sizes, bytes and skipped files",
                       description="Summarise an ingested (or condensed) Parquet shard folder.")
    s.add_argument("path", help="shard folder written by `dc3ray ingest`")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=_cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    from .core.shards import ShardError
    from .core.sources import SourceError
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, SourceError, ShardError, FileExistsError) as e:
        print(f"dc3ray {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
