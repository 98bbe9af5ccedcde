"""The Ray Data feature stage dc3ray runs vs a plain single-process torch DataLoader loop.

Both decode the same encoded images from the same Parquet shards (N rows taken evenly over
`--data`, written once to a temporary shard folder) and run the same model call at the same
batch size and torch thread count:
  plain      torch DataLoader (num_workers=0, one process): decode_rgb in __getitem__, then the
             model callable of dc3ray.core.features in the loop;
  Ray Data   read_shards -> map_batches(actor, ActorPoolStrategy(size=k)) -> iter_batches, the
             actor classes and pool settings of dc3ray.pipeline.select / .resources;
  compute_features (with --compute-features) the whole stage with each pool size, incl. its
             Parquet write (and its sort by label for shards not already in label order: the
             row label says which; rows measured before 6a7cc70 always sorted).
The actor is GradientFeaturizer (`--actor featurizer`, what compute_features runs when the
embedding and gradient backbones are the same model, as in configs/cifar10.yaml) or Embedder
(`--actor embedder`). The model is the checkpoint given by --teacher (teacher / ConvNet-3) or
a randomly initialised ConvNet-3 (same cost). Every Ray row is checked against the plain
loop's outputs (max abs difference of h per key).

Blocks: Ray 2.60's Parquet reader bins small files by size (128 MiB), so a CIFAR-sized shard
folder arrives as ONE block (override_num_blocks is ignored) and a pool sees one block: only
one actor works. So every pool size runs twice: on plain read_shards, and on the input split
into --blocks blocks (default one per batch), which is what compute_features now does for a
pool of k > 1 (read_shards(min_blocks=4k)); the compute_features rows run the whole stage
with each pool size.

Times: `wall_s` is the whole run (plain: Parquet read + model build + loop; Ray: from building
the Dataset to the last row, so actor start and model load are in it, ray.init is not and is
reported once as `ray_init_s`); `steady_images_per_s` leaves out the start-up: rows after the
first output block over the time from the first block to the last (none with a single block).
On a 2-core machine 2 actors share the 2 cores with the read tasks and the driver, so
2 actors x 1 thread cannot reach twice the 1-thread plain loop. The local Ray instance declares
max(actors) x CPUs-per-actor + 1 logical CPUs: a run with 2 x 1-CPU actors on a 2-CPU instance
stalled once here with its read tasks unscheduled, while the machine was saturated by other
work at higher priority; that was not reproduced on an idle machine.
Writes results/bench_embed.json (see benchlib.save).

    OMP_NUM_THREADS=1 python benchmarks/bench_embed.py --teacher runs/bench/teacher_c3/teacher.pt
    OMP_NUM_THREADS=1 python benchmarks/bench_embed.py --images 256 --batch-size 64 \\
        --out-dir /tmp/bench                                                  # a dry run
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load, peak_rss_mb, save  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "runs" / "cifar10" / "train"


# --------------------------------------------------------------------------------------------
# Pure helpers (no Ray)
# --------------------------------------------------------------------------------------------

def subset_shards(src: str | Path, n: int, out: str | Path, shard_rows: int = 1000) -> Path:
    """Write n rows taken evenly over the shard folder `src` (all classes) as shards at `out`.

    The rows keep their stored bytes; class_map.json is copied so labels mean the same.
    """
    from dc3ray.core import schema
    from dc3ray.core.datasets import load_class_map
    from dc3ray.core.shards import read_shards, write_shards_atomic

    table = read_shards(src)
    if n > table.num_rows:
        raise ValueError(f"--images {n} is more than the {table.num_rows} rows of {src}; "
                         "lower --images")
    idx = np.linspace(0, table.num_rows - 1, n).round().astype(np.int64)
    return write_shards_atomic(table.take(idx), out, shard_rows,
                               extra_files={schema.CLASS_MAP_FILE: load_class_map(src)})


def random_convnet3(path: str | Path, num_classes: int, seed: int = 0) -> Path:
    """A randomly initialised ConvNet-3 (32 px, CIFAR normalisation) saved as our checkpoint."""
    import torch

    from dc3ray.core import models

    torch.manual_seed(seed)
    model = models.build_model("convnet3", num_classes, image_size=32)
    return models.save_checkpoint(path, model, "convnet3", num_classes, 32,
                                  extra={"norm": "cifar"})


def stage_configs(model_path: str, backbone: str, batch_size: int, num_actors: int,
                  num_cpus_per_actor: float):
    """(EmbedConfig, GradConfig) naming the same model, as configs/cifar10.yaml does."""
    from dc3ray.config import EmbedConfig, GradConfig

    kw = dict(backbone=backbone, model_path=str(model_path), image_size=32, batch_size=batch_size,
              num_actors=num_actors, num_cpus_per_actor=num_cpus_per_actor)
    return EmbedConfig(**kw), GradConfig(**kw)


def build_model_call(actor: str, embed_cfg, grad_cfg, num_classes: int):
    """The core callable the actor wraps, as f(uint8 images, labels) -> h (N, D) float32,
    plus its input side."""
    from dc3ray.core.features import build_embedder, build_grad_model

    if actor == "embedder":
        m = build_embedder(embed_cfg, "cpu")
        return (lambda images, labels: m(images)), m.input_size
    m = build_grad_model(grad_cfg, num_classes, "cpu")
    return (lambda images, labels: m(images, labels)[1]), m.input_size


def plain_loop(data: str | Path, actor: str, embed_cfg, grad_cfg, num_classes: int,
               batch_size: int) -> tuple[dict, dict[str, np.ndarray]]:
    """Single-process DataLoader loop over the shards at `data`; returns (timings, key -> h)."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    from dc3ray.core import schema
    from dc3ray.core.imageio import decode_rgb
    from dc3ray.core.shards import read_shards

    class ShardImages(Dataset):
        def __init__(self, table, size):
            self.blobs = table.column(schema.IMAGE).to_pylist()
            self.labels = table.column(schema.LABEL).to_numpy()
            self.size = size

        def __len__(self):
            return len(self.blobs)

        def __getitem__(self, i):
            return torch.from_numpy(decode_rgb(self.blobs[i], self.size)), int(self.labels[i])

    t0 = time.perf_counter()
    table = read_shards(data, columns=[schema.KEY, schema.LABEL, schema.IMAGE])
    call, size = build_model_call(actor, embed_cfg, grad_cfg, num_classes)
    loader = DataLoader(ShardImages(table, size), batch_size=batch_size, shuffle=False,
                        num_workers=0)
    keys = table.column(schema.KEY).to_pylist()
    t1 = time.perf_counter()
    outs, t_first, first_rows = [], None, 0
    for images, labels in loader:
        outs.append(call(images.numpy(), labels.numpy()))
        if t_first is None:
            t_first, first_rows = time.perf_counter(), len(labels)
    t2 = time.perf_counter()
    h = np.concatenate(outs)
    n = len(keys)
    return (timing_row("plain DataLoader loop", n, t2 - t0, t1 - t0, t_first - t0, t2 - t0,
                       first_rows),
            dict(zip(keys, h)))


def timing_row(name: str, n: int, wall_s: float, startup_s: float, first_s: float,
               last_s: float, first_rows: int, blocks: int | None = None) -> dict:
    """One summary row: images/s incl. and excl. start-up (after the first batch).

    All times in seconds from the row's own start; first_s / last_s: when the first / last
    batch arrived; first_rows: rows in the first batch; blocks: batches that arrived (a Ray
    row). With fewer than MIN_STEADY_BLOCKS there is no steady rate: what is left after the
    first block is one or two arrivals, and a rate from those is noise.
    """
    steady = (n - first_rows) / (last_s - first_s) if n > first_rows and last_s > first_s else None
    if blocks is not None and blocks < MIN_STEADY_BLOCKS:
        steady = None
    return {"stage": name, "images": n, "wall_s": round(wall_s, 3),
            "startup_s": round(startup_s, 3), "first_batch_s": round(first_s, 3),
            "images_per_s": round(n / wall_s, 1),
            "steady_images_per_s": round(steady, 1) if steady else None}


def add_ratios(rows: list[dict]) -> list[dict]:
    """ratio (images/s over the plain loop's) and steady_ratio (the same after start-up) on
    every row; rows[0] is the plain loop."""
    base = rows[0]
    for r in rows:
        r["ratio"] = round(r["images_per_s"] / base["images_per_s"], 3)
        r["steady_ratio"] = (round(r["steady_images_per_s"] / base["steady_images_per_s"], 3)
                                      if r["steady_images_per_s"] and base["steady_images_per_s"]
                                      else None)
    return rows


# --------------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------------

# Fewer output blocks than this and a Ray row gets no steady_images_per_s (see timing_row).
MIN_STEADY_BLOCKS = 4


def ray_cpus_for(actors: list[int], num_cpus_per_actor: float) -> int:
    """Logical CPUs for the local Ray instance: the pool must leave one CPU for the read tasks.

    A 2 x 1-CPU pool on a 2-CPU instance once stalled with its read tasks unscheduled (on a
    saturated machine), so declare max(actors) x num_cpus_per_actor + 1 when that exceeds the
    cores.
    """
    import math

    need = math.ceil(max(actors) * num_cpus_per_actor) + 1
    return max(os.cpu_count() or 2, need)


def start_ray(num_cpus: int, threads: int) -> float:
    """A local Ray instance of its own (or RAY_ADDRESS's cluster); returns seconds taken."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    t0 = time.perf_counter()
    env = {"env_vars": {"OMP_NUM_THREADS": str(threads)}}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], runtime_env=env)
    else:
        # address="local": never join a cluster someone else started on this machine.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env=env)
    return time.perf_counter() - t0


def ray_stage(data: str | Path, actor: str, embed_cfg, grad_cfg, num_classes: int,
              reference: dict[str, np.ndarray], blocks: int = 0) -> dict:
    """read_shards [-> repartition(blocks)] -> map_batches(actor pool) -> iter_batches.

    Returns a timing row with max |h - plain loop's h| over all keys and the number of output
    blocks (the pool can use at most that many actors at once).
    """
    from dc3ray.config import to_dict
    from dc3ray.core import schema
    from dc3ray.pipeline.io import read_shards
    from dc3ray.pipeline.resources import map_with_actor_pool
    from dc3ray.pipeline.features import H, Embedder, GradientFeaturizer

    cfg = embed_cfg if actor == "embedder" else grad_cfg
    t0 = time.perf_counter()
    ds = read_shards(data, columns=[schema.KEY, schema.LABEL, schema.IMAGE])
    if blocks:
        ds = ds.repartition(blocks)
    if actor == "embedder":
        cls, kwargs, col = Embedder, dict(cfg_dict=to_dict(embed_cfg)), schema.EMBEDDING
    else:
        cls, col = GradientFeaturizer, H
        kwargs = dict(cfg_dict=to_dict(grad_cfg), num_classes=num_classes, embedding_from_h=True)
    ds = map_with_actor_pool(ds, cls, cfg.num_actors, cfg.num_cpus_per_actor,
                             batch_format="numpy", batch_size=cfg.batch_size,
                             fn_constructor_kwargs=kwargs)
    n, t_first, first_rows, max_diff, out_blocks = 0, None, 0, 0.0, 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        out_blocks += 1
        if t_first is None:
            t_first, first_rows = time.perf_counter(), len(batch[schema.KEY])
        ref = np.stack([reference[str(k)] for k in batch[schema.KEY]])
        max_diff = max(max_diff, float(np.max(np.abs(batch[col] - ref))))
        n += len(batch[schema.KEY])
    t1 = time.perf_counter()
    if n != len(reference):
        raise RuntimeError(f"Ray Data returned {n} rows for {len(reference)} images")
    how = f"repartition({blocks})" if blocks else "read_shards as is"
    row = timing_row(f"Ray Data, {cfg.num_actors} actor(s), {how}", n, t1 - t0, t_first - t0,
                     t_first - t0, t1 - t0, first_rows, blocks=out_blocks)
    row["blocks"] = out_blocks
    row["max_abs_diff_vs_plain"] = max_diff
    return row


def compute_features_row(data: str | Path, embed_cfg, grad_cfg, out: Path, actors: int) -> dict:
    """The whole dc3ray stage (compute_features: actor pool, Parquet write, and the sort by
    label for shards out of label order)."""
    import pyarrow.parquet as pq

    from dc3ray.pipeline.features import compute_features

    t0 = time.perf_counter()
    compute_features(data, embed_cfg, grad_cfg, out)
    wall = time.perf_counter() - t0
    info = json.loads((out / "features.json").read_text())
    n = sum(pq.read_metadata(f).num_rows for f in out.glob("*.parquet"))
    steps = "sort + write" if info.get("sorted", True) else "write; shards in label order, no sort"
    return {"stage": f"compute_features, {actors} actor(s) (incl. {steps})", "images": n,
            "wall_s": round(wall, 3), "startup_s": None, "first_batch_s": None,
            "images_per_s": round(n / wall, 1), "steady_images_per_s": None,
            "embedding_is_h": info["embedding_is_h"]}


# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="shard folder (dc3ray ingest output)")
    p.add_argument("--images", type=int, default=10000, help="images taken evenly over --data")
    p.add_argument("--teacher", default=None,
                   help="teacher / ConvNet-3 checkpoint; default: a random ConvNet-3")
    p.add_argument("--actor", choices=("featurizer", "embedder"), default="featurizer")
    p.add_argument("--batch-size", type=int, default=256, help="as configs/cifar10.yaml")
    p.add_argument("--actors", type=int, nargs="+", default=[1, 2], help="pool sizes to run")
    p.add_argument("--threads", type=int, default=1, help="torch threads, plain loop and per actor")
    p.add_argument("--num-cpus-per-actor", type=float, default=1.0)
    p.add_argument("--ray-cpus", type=int, default=None,
                   help="logical CPUs of the local Ray instance (default: the larger of the "
                        "cores and max(actors) x num-cpus-per-actor + 1, so the read tasks always "
                        "find a CPU beside the pool)")
    p.add_argument("--shard-rows", type=int, default=1000,
                   help="rows per shard of the subset (as dc3ray ingest); one Ray block each")
    p.add_argument("--blocks", type=int, default=None,
                   help="also run every pool size on the input repartitioned into this many "
                        "blocks (default: one block per batch; 0: skip those rows)")
    p.add_argument("--compute-features", action="store_true",
                   help="also time the whole compute_features stage with each pool size")
    p.add_argument("--out-dir", default=None, help="where the JSON record goes (default results/)")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    import ray
    import torch

    from dc3ray.core.datasets import load_class_map
    from dc3ray.pipeline.resources import configure_data_context

    load_before = load()
    if not Path(args.data).is_dir():
        raise SystemExit(f"--data {args.data} is not a shard folder; ingest CIFAR-10 with "
                         "`dc3ray ingest` (or run `make demo`) or pass --data")
    torch.set_num_threads(args.threads)
    num_classes = max(load_class_map(args.data).values()) + 1
    result: dict = {"args": {k: v for k, v in vars(args).items() if k != "out_dir"},
                    "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        subset = subset_shards(args.data, args.images, tmp / "subset", args.shard_rows)
        result["subset_s"] = round(time.perf_counter() - t0, 3)
        if args.teacher:
            model_path, backbone = args.teacher, "teacher"
        else:
            model_path, backbone = random_convnet3(tmp / "convnet3.pt", num_classes), "convnet3"
        result["model"] = {"backbone": backbone, "path": str(model_path)}
        embed_cfg, grad_cfg = stage_configs(model_path, backbone, args.batch_size, 1,
                                            args.num_cpus_per_actor)
        plain, reference = plain_loop(subset, args.actor, embed_cfg, grad_cfg, num_classes,
                                      args.batch_size)
        print(json.dumps(plain), flush=True)
        rows = [plain]
        ray_cpus = args.ray_cpus or ray_cpus_for(args.actors, args.num_cpus_per_actor)
        result["ray_init_s"] = round(start_ray(ray_cpus, args.threads), 3)
        try:
            configure_data_context(show_progress=False)
            blocks = (args.blocks if args.blocks is not None
                      else -(-args.images // args.batch_size))
            for split in ([0, blocks] if blocks else [0]):
                for k in args.actors:
                    ecfg, gcfg = stage_configs(model_path, backbone, args.batch_size, k,
                                               args.num_cpus_per_actor)
                    rows.append(ray_stage(subset, args.actor, ecfg, gcfg, num_classes,
                                          reference, split))
                    print(json.dumps(rows[-1]), flush=True)
            for k in args.actors if args.compute_features else []:
                ecfg, gcfg = stage_configs(model_path, backbone, args.batch_size, k,
                                           args.num_cpus_per_actor)
                rows.append(compute_features_row(subset, ecfg, gcfg, tmp / f"features{k}", k))
                print(json.dumps(rows[-1]), flush=True)
            result["ray_cluster_cpus"] = ray.cluster_resources().get("CPU")
        finally:
            ray.shutdown()
    result["summary"] = add_ratios(rows)
    result["driver_peak_rss_mb"] = peak_rss_mb()
    save("bench_embed", result, argv, load_before=load_before, out_dir=args.out_dir)
    return result


if __name__ == "__main__":
    main()
