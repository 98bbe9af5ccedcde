"""Ray Job entry point: DC3 on ImageNet-1K at 224 px, IPC 10 or 50, GPU actor pools.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python jobs/imagenet1k.py --train s3://bucket/imagenet/train-shards \\
        --val s3://bucket/imagenet/val-shards --cache /mnt/shared/cache \\
        --ipc 10 --out /mnt/shared/runs/in1k-ipc10
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_job  # noqa: E402

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


@dataclass(frozen=True)
class ImageNetJob:
    """Condense ImageNet-1K with DC3 at IPC 10 or 50 on the Ray cluster this driver joins, then
    print where the condensed set, manifest and MLflow run went."""
    train: str
    """Train split: shared path or s3:// / gs:// URI."""
    val: str
    """Val split (same class map as train)."""
    out: str
    """Run folder on shared storage (absolute)."""
    ipc: int = 10
    """Images per class, 10 or 50 in the paper."""
    cache: str | None = None
    """Shared folder for copies of object-store inputs (default OUT/../cache)."""
    stage_local: bool = False
    """Also copy local/NFS inputs into cache (e.g. slow NFS -> local disk)."""
    gpu_actors: int | None = None
    """Actors per pool (default: GPUs in the cluster)."""
    allow_cpu: bool = False
    """Run without GPUs (dry run on tiny data; real ImageNet needs GPUs)."""
    config: str = str(PRESET)
    """Preset."""
    set: tuple[str, ...] = ()
    """Override any condense setting, e.g. eval.epochs=300 (repeatable)."""


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
        from dc3ray.errors import DataError
        raise DataError(f"input {uri} is not a folder ({info.type.name}); pass the folder "
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
    from dc3ray.pipeline.features import EMBEDDING_METHODS, GRADIENT_METHODS, shares_backbone
    return (cfg.select.method in EMBEDDING_METHODS and cfg.select.method in GRADIENT_METHODS
            and not shares_backbone(cfg.embed, cfg.grad))


def run(job: ImageNetJob) -> int:
    """Stage the inputs, size the pools for the cluster's GPUs, condense."""
    import ray

    from dc3ray.config import CondenseConfig, load_config
    from dc3ray.pipeline.condense import condense
    from dc3ray.pipeline.resources import init_ray

    cache = Path(job.cache) if job.cache else Path(job.out).resolve().parent / "cache"
    train = stage_input(job.train, cache, job.stage_local)
    val = stage_input(job.val, cache, job.stage_local)
    init_ray()  # joins the cluster inside a Ray Job (RAY_ADDRESS)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    base = [f"data={train}", f"val={val}", f"out={job.out}", f"select.ipc={job.ipc}"]
    plain = load_config(CondenseConfig, job.config, base + list(job.set))
    # Explicit --set values still win over the pool sizes chosen here.
    pools = gpu_overrides(gpus, job.gpu_actors, job.allow_cpu, two_feature_pools(plain))
    cfg = load_config(CondenseConfig, job.config, base + pools + list(job.set))
    print(f"[imagenet1k] IPC {cfg.select.ipc}, {gpus} GPU(s), {cfg.embed.num_actors} actor(s) "
          f"per pool, {cfg.eval.workers} student worker(s)", flush=True)
    condense(cfg)
    return 0


def _outputs(job: ImageNetJob) -> dict:
    from dc3ray.pipeline.tracking import tracking_uri
    out = Path(job.out)
    return {"condensed set (Parquet)": str(out / "condensed"),
            "condensed set (ImageFolder)": str(out / "images"),
            "manifest": str(out / "manifest.json"), "mlflow": tracking_uri(out),
            "train input": job.train, "val input": job.val}


def main(argv: list[str] | None = None) -> int:
    from dc3ray.cli import Command
    return run_job(Command(ImageNetJob, run), argv, "jobs/imagenet1k.py",
                   paths=lambda job: {"out": job.out, "cache": job.cache}, outputs=_outputs,
                   epilog=EPILOG)


if __name__ == "__main__":
    sys.exit(main())
