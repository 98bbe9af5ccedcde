"""Shared fixtures: one local Ray session per test run, real CIFAR-10 samples, tiny fixtures."""
from __future__ import annotations

import os
import subprocess
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests check results, not speed: on a loaded 2-core machine an example can take longer
# than hypothesis' default 200 ms deadline, which would fail a correct test.
settings.register_profile("dc3ray", deadline=None)
settings.load_profile("dc3ray")

REPO = Path(__file__).resolve().parents[1]
CIFAR = Path(os.environ.get("DC3RAY_DATA", REPO.parent / "shared" / "data" / "cifar10"))
IMAGENETTE = Path(os.environ.get("DC3RAY_IMAGENETTE",
                                 REPO.parent / "shared" / "data" / "imagenette"))

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Keep torch from oversubscribing the 2 CI cores when Ray workers also run.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Ray Train's controller polls its workers every 2 s, so a run ends up to 2 s after its loop: on
# the suite's ~20 tiny runs that is waiting, not work. Set before any Ray starts, so local workers
# and the subprocess runs of the reliability tests inherit it. (The preemption watcher is off on
# every local instance: dc3ray.pipeline.resources.local_train_defaults.)
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


def pytest_collection_modifyitems(config, items):
    """Mark tests that read the real data folders `data` (make test-fast leaves them out)."""
    for item in items:
        if {"cifar_root", "imagenette_root"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.data)


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    if not (CIFAR / "train").is_dir():
        msg = f"real CIFAR-10 folders not found at {CIFAR} (set DC3RAY_DATA)"
        # CI has the data: a missing folder there is a broken setup, not a reason to skip.
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return CIFAR


@pytest.fixture(scope="session")
def imagenette_root() -> Path:
    """Real Imagenette (224 px ImageNet photos): {train,val}/<wnid>/*.JPEG + classes.tsv."""
    if not (IMAGENETTE / "train").is_dir() or not (IMAGENETTE / "classes.tsv").is_file():
        msg = f"real Imagenette folders not found at {IMAGENETTE} (set DC3RAY_IMAGENETTE)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return IMAGENETTE


@contextmanager
def mounted_tmpfs(size: str):
    """A tmpfs of `size` (e.g. "256k") mounted under /tmp, unmounted after (root only: skips
    the calling test where mounting is not allowed)."""
    mnt = Path("/tmp") / f"dc3ray-full-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        mnt.rmdir()


def make_cifar_subset(root: Path, out: Path, split: str = "train", per_class: int = 20,
                      classes: int | None = None) -> Path:
    """Symlink the first `per_class` images of each class into an ImageFolder tree at `out`."""
    src = root / split
    names = sorted(d.name for d in src.iterdir() if d.is_dir())[: classes or None]
    for n in names:
        (out / n).mkdir(parents=True, exist_ok=True)
        for f in sorted((src / n).iterdir())[:per_class]:
            (out / n / f.name).symlink_to(f)
    return out


def save_random_teacher(path: Path) -> Path:
    """A randomly initialised ConvNet-3 checkpoint (10 classes, 32 px, torch seed 0) at `path`:
    for jobs that need a teacher backbone, not a good one (train_teacher and condense's teacher
    stage have their own tests, and a Ray Train run costs a tiny test most of its time)."""
    import torch
    from dc3ray.core.models import build_model, save_checkpoint
    torch.manual_seed(0)
    return save_checkpoint(path, build_model("convnet3", 10, image_size=32), "convnet3", 10, 32)


@pytest.fixture(scope="session")
def cifar_small(cifar_root, tmp_path_factory) -> Path:
    """ImageFolder of 20 real train images per class (200 images)."""
    return make_cifar_subset(cifar_root, tmp_path_factory.mktemp("cifar_small"), "train", 20)


@pytest.fixture(scope="session")
def cifar_small_shards(cifar_small, tmp_path_factory) -> Path:
    """The 200-image subset ingested as Parquet shards (shared by stage tests)."""
    from dc3ray.config import IngestConfig
    from dc3ray.pipeline.ingest import ingest
    out = tmp_path_factory.mktemp("shards") / "train"
    ingest(cifar_small, out, IngestConfig(shard_rows=64, num_workers=1), log=lambda *_: None)
    return out


@pytest.fixture(scope="session")
def cifar_val_shards(cifar_root, cifar_small_shards, tmp_path_factory) -> Path:
    """10 real val images per class as shards, labels aligned to the train class map."""
    from dc3ray.config import IngestConfig
    from dc3ray.pipeline.ingest import ingest
    folder = make_cifar_subset(cifar_root, tmp_path_factory.mktemp("cifar_val"), "val", 10)
    out = tmp_path_factory.mktemp("shards_val") / "val"
    ingest(folder, out, IngestConfig(shard_rows=64, num_workers=1,
                                     class_map=str(cifar_small_shards / "class_map.json")),
           log=lambda *_: None)
    return out


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test run (2 CPUs, like CI)."""
    import ray
    from dc3ray.pipeline.resources import configure_data_context, init_ray
    init_ray(num_cpus=2)
    configure_data_context(show_progress=False)
    yield ray
    ray.shutdown()
