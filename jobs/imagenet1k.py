"""Ray Job entry point: DC3 on ImageNet-1K at 224 px, IPC 10 or 50, GPU actor pools.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/imagenet1k.py --train s3://bucket/imagenet/train-shards \\
        --val s3://bucket/imagenet/val-shards --cache /mnt/shared/cache \\
        --ipc 10 --out /mnt/shared/runs/in1k-ipc10
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import check_paths, describe_cluster, print_outputs, run_main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "configs" / "imagenet1k.yaml"
STAGED_MARKER = ".dc3ray-staged"

EPILOG = """\
inputs (--train / --val):
  a path on shared storage (NFS, EFS, a Kubernetes volume) is read in place. An object-store
  URI (s3://, gs://, hdfs://, abfs://; pyarrow.fs) is NOT streamed: it is first copied once into
  --cache (which must be shared storage every node sees), then read from there; a rerun finds
  the copy complete and skips it. Credentials come from the usual environment (AWS_*, GOOGLE_*).
  The inputs are ingested Parquet shard folders (`dc3ray ingest`) or ImageFolder trees.

what runs: configs/imagenet1k.yaml (SD-1.5 VAE bins at 512 px, ResNet-18 gradients at 224 px,
InstructPix2Pix compensation, ResNet-18 students at 224 px with KD), with select.ipc=--ipc.
Actor pools get one GPU per actor: the embedding (VAE) and gradient (ResNet-18) pools stream
together and split the GPUs (VAE: all but one, gradients: one), the diffusion pool later gets
all of them (or --gpu-actors per pool); students train with eval.workers = min(4, GPUs).
Model paths in the preset point at /mnt/shared/models; change them with --set
embed.model_path=... etc.
Without GPUs in the cluster the job stops, unless --allow-cpu (a dry run on tiny data).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jobs/imagenet1k.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Condense ImageNet-1K with DC3 at IPC 10 or 50 on the Ray cluster this "
                    "driver joins, then print where the condensed set, manifest and MLflow run "
                    "went.",
        epilog=EPILOG)
    p.add_argument("--train", required=True, help="train split: shared path or s3:// / gs:// URI")
    p.add_argument("--val", required=True, help="val split (same class map as train)")
    p.add_argument("--out", required=True, help="run folder on shared storage (absolute)")
    p.add_argument("--ipc", type=int, default=10, help="images per class, 10 or 50 in the paper "
                                                       "(default %(default)s)")
    p.add_argument("--cache", default=None,
                   help="shared folder for copies of object-store inputs (default OUT/../cache)")
    p.add_argument("--stage-local", action="store_true",
                   help="also copy local/NFS inputs into --cache (e.g. slow NFS -> local disk)")
    p.add_argument("--gpu-actors", type=int, default=None,
                   help="actors per pool (default: GPUs in the cluster)")
    p.add_argument("--allow-cpu", action="store_true",
                   help="run without GPUs (dry run on tiny data; real ImageNet needs GPUs)")
    p.add_argument("--config", default=str(PRESET), help="preset (default configs/imagenet1k.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. eval.epochs=300 (repeatable)")
    return p


def stage_input(uri: str, cache: Path, copy_local: bool = False, log=print) -> str:
    """A local path holding `uri`'s files.

    Plain paths (and file:// URIs) are returned as they are unless `copy_local`. Other URIs
    are copied with pyarrow.fs into cache/<name>-<hash of the URI>/, once: the copy goes to a
    `.partial` folder that is renamed when complete, so a killed copy restarts cleanly and a
    finished one is reused.
    """
    from pyarrow import fs

    parsed = urlparse(uri)
    local = parsed.scheme in ("", "file")
    if local and not copy_local:
        return parsed.path if parsed.scheme == "file" else uri
    if local:  # copy_local: a file:// URI of the absolute path, which pyarrow understands
        uri_path = parsed.path if parsed.scheme == "file" else uri
        src = Path(uri_path).resolve().as_uri()
    else:
        src = uri
    name = Path(parsed.path.rstrip("/")).name or "data"
    dest = Path(cache).resolve() / f"{name}-{hashlib.sha256(uri.encode()).hexdigest()[:10]}"
    if (dest / STAGED_MARKER).is_file():
        log(f"[stage] {uri}: using the complete copy in {dest}")
        return str(dest)
    filesystem, path = fs.FileSystem.from_uri(src)
    info = filesystem.get_file_info(path)
    if info.type != fs.FileType.Directory:
        raise FileNotFoundError(f"input {uri} is not a folder ({info.type.name}); pass the folder "
                                "of shards or class folders")
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    t0 = time.perf_counter()
    log(f"[stage] copying {uri} -> {dest} (once; object storage is not streamed)")
    fs.copy_files(path, str(partial), source_filesystem=filesystem,
                  destination_filesystem=fs.LocalFileSystem())
    files = [f for f in partial.rglob("*") if f.is_file()]
    size = sum(f.stat().st_size for f in files)
    (partial / STAGED_MARKER).write_text(uri + "\n")
    os.replace(partial, dest)  # complete: a rerun reuses it
    log(f"[stage] {len(files)} files, {size / 1e9:.2f} GB in {time.perf_counter() - t0:.1f} s")
    return str(dest)


def gpu_overrides(gpus: int, actors: int | None, allow_cpu: bool,
                  two_feature_pools: bool = True) -> list[str]:
    """Pool sizes and GPU flags for a cluster with `gpus` GPUs (one GPU per actor / worker).

    With two feature pools (embedding and gradient backbones differ, as in the preset) both
    stream at the same time, so they share the GPUs: the VAE (by far the slower) gets all but
    one, the ResNet-18 gradients one. Compensation runs later and gets every GPU.
    """
    from dc3ray.config import ConfigError
    if gpus < 1 and not allow_cpu:
        raise ConfigError("the cluster has no GPU: ImageNet-1K at 224 px needs GPU workers "
                          "(check the worker group / `ray status`), or pass --allow-cpu for a "
                          "dry run on tiny data")
    n = actors or max(1, gpus)
    embed = grad = n
    if two_feature_pools and not actors and gpus >= 1:
        if gpus == 1:
            raise ConfigError("1 GPU cannot hold the embedding (VAE) and gradient (ResNet-18) "
                              "actor pools, which run at the same time with one GPU per actor: "
                              "use at least 2 GPUs, or --gpu-actors/--set embed.num_actors=... "
                              "on a larger cluster")
        embed, grad = gpus - 1, 1
    use_gpu = "true" if gpus >= 1 else "false"
    return [f"embed.num_actors={embed}", f"grad.num_actors={grad}", f"compensate.num_actors={n}",
            f"eval.workers={max(1, min(4, gpus))}", f"eval.use_gpu={use_gpu}",
            f"teacher.use_gpu={use_gpu}"]


def two_feature_pools(cfg) -> bool:
    """True when the features stage streams through an embedding and a gradient pool at once."""
    from dc3ray.pipeline.select import EMBEDDING_METHODS, GRADIENT_METHODS, shares_backbone
    return (cfg.select.method in EMBEDDING_METHODS and cfg.select.method in GRADIENT_METHODS
            and not shares_backbone(cfg.embed, cfg.grad))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # first: --help needs no heavy import

    import ray

    from dc3ray.config import CondenseConfig, load_config
    from dc3ray.pipeline.condense import condense
    from dc3ray.pipeline.resources import init_ray
    from dc3ray.pipeline.tracking import tracking_uri

    check_paths(out=args.out, cache=args.cache)
    cache = Path(args.cache) if args.cache else Path(args.out).resolve().parent / "cache"
    train = stage_input(args.train, cache, args.stage_local)
    val = stage_input(args.val, cache, args.stage_local)
    init_ray()  # joins the cluster inside a Ray Job (RAY_ADDRESS)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    base = [f"data={train}", f"val={val}", f"out={args.out}", f"select.ipc={args.ipc}"]
    plain = load_config(CondenseConfig, args.config, base + args.set)
    # Explicit --set values still win over the pool sizes chosen here.
    pools = gpu_overrides(gpus, args.gpu_actors, args.allow_cpu, two_feature_pools(plain))
    cfg = load_config(CondenseConfig, args.config, base + pools + args.set)
    print(f"[imagenet1k] IPC {cfg.select.ipc}, {gpus} GPU(s), {cfg.embed.num_actors} actor(s) "
          f"per pool, {cfg.eval.workers} student worker(s)", flush=True)
    condense(cfg)
    print(describe_cluster(), flush=True)
    out = Path(cfg.out)
    print_outputs("imagenet1k", {
        "condensed set (Parquet)": str(out / "condensed"),
        "condensed set (ImageFolder)": str(out / "images"),
        "manifest": str(out / "manifest.json"),
        "mlflow": tracking_uri(out),
        "train input": train, "val input": val,
    })
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
