"""DC3 selection of the whole CIFAR-10 train split at IPC 10 and 50, per stage wall time.

    python benchmarks/selection_cifar10.py --train runs/cifar10/train \
        --teacher runs/bench/teacher_c3/teacher.pt --out runs/bench/select_c10
    # or time only the selection on features a condense/demo run already computed:
    python benchmarks/selection_cifar10.py --train runs/cifar10/train \
        --features runs/demo/stages/features-<hash>/features --out runs/bench/select_c10

Features: one pass of the teacher's backbone (embeddings = penultimate features, gradient
factors e, h) through a Ray Data actor pool; then one Ray task per class for each IPC.
Prints and writes JSON (out/bench_selection.json).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from dc3ray.config import EmbedConfig, GradConfig, SelectConfig
from dc3ray.pipeline.resources import configure_data_context, init_ray
from dc3ray.pipeline.features import compute_features
from dc3ray.pipeline.select import materialise_subset, select_per_class


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True)
    p.add_argument("--teacher", help="teacher checkpoint (backbone for embeddings and gradients)")
    p.add_argument("--features", help="reuse a features folder instead of computing it")
    p.add_argument("--out", required=True)
    p.add_argument("--ipcs", default="10,50")
    p.add_argument("--actors", type=int, default=1)
    args = p.parse_args(argv)
    init_ray()
    configure_data_context(show_progress=False)
    out = Path(args.out)
    emb = EmbedConfig(backbone="teacher", model_path=args.teacher or "unused", image_size=32, batch_size=512,
                      num_actors=args.actors)
    grad = GradConfig(backbone="teacher", model_path=args.teacher or "unused", image_size=32, batch_size=512,
                      num_actors=args.actors)
    res = {"machine": {"cpus": os.cpu_count()}, "train": args.train, "stages": {}}
    if args.features:
        feats = args.features
        res["features"] = str(args.features)
    else:
        if not args.teacher:
            p.error("give --teacher (to compute features) or --features (to reuse them)")
        t0 = time.perf_counter()
        feats = compute_features(args.train, emb, grad, out / "features")
        res["stages"]["features_s"] = round(time.perf_counter() - t0, 1)
    for ipc in [int(x) for x in args.ipcs.split(",")]:
        t0 = time.perf_counter()
        manifest = select_per_class(feats, SelectConfig(method="dc3", ipc=ipc, k=10, max_in_flight=2),
                                    out / f"select_ipc{ipc}", show_progress=False)
        t1 = time.perf_counter()
        materialise_subset(args.train, manifest, out / f"subset_ipc{ipc}")
        t2 = time.perf_counter()
        res["stages"][f"select_ipc{ipc}_s"] = round(t1 - t0, 1)
        res["stages"][f"materialise_ipc{ipc}_s"] = round(t2 - t1, 1)
    (out / "bench_selection.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
