"""Whole condense runs (in this process, on the shared local Ray) whose surroundings change or
break: a source folder that gains, loses or replaces files between runs; an output disk that
fills while Ray Data writes the features; an MLflow store that cannot be opened. Tiny real
CIFAR-10 data (3 classes x 6 images, copied so they can be edited) and a random teacher."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import mounted_tmpfs

from dc3ray.config import CondenseConfig, load_config
from dc3ray.core.shards import read_shards

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CLASSES = ("airplane", "automobile", "bird")


@pytest.fixture
def source(cifar_root, tmp_path) -> Path:
    src = tmp_path / "train"
    for c in CLASSES:
        (src / c).mkdir(parents=True)
        for f in sorted((cifar_root / "train" / c).iterdir())[:6]:
            shutil.copy2(f, src / c / f.name)
    return src


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A random 3-class ConvNet-3 (a backbone is needed, not a good one)."""
    import torch

    from dc3ray.core.models import build_model, save_checkpoint
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("teacher") / "teacher.pt",
                           build_model("convnet3", len(CLASSES), image_size=32), "convnet3",
                           len(CLASSES), 32)


def _condense(src: Path, out: Path, teacher: Path, lines: list | None = None, **extra) -> dict:
    from dc3ray.pipeline.condense import condense
    s = {"name": "env", "data": str(src), "out": str(out), "teacher_path": str(teacher),
         "evaluate": "false", "ingest.shard_rows": 8, "select.ipc": 2, "select.k": 2,
         "select.pca_dim": 4, "embed.batch_size": 8, "grad.batch_size": 8,
         "compensate.compensator": "none"}
    s.update(extra)
    cfg = load_config(CondenseConfig, None, [f"{k}={v}" for k, v in s.items()])
    return condense(cfg, log=(lines.append if lines is not None else lambda _: None))


def _cached(manifest: dict) -> dict[str, bool]:
    return {k: v["cached"] for k, v in manifest["stages"].items()}


def test_files_added_or_replaced_in_the_source_redo_ingest_features_and_selection(
        source, teacher, tmp_path, ray_session):
    out = tmp_path / "out"
    _condense(source, out, teacher)
    assert set(_cached(_condense(source, out, teacher)).values()) == {True}
    # A new image in one class: everything from ingest on is redone, and it can be selected.
    new = source / "bird" / "added.png"
    shutil.copy2(sorted((source / "airplane").iterdir())[0], new)
    added = _condense(source, out, teacher)
    assert not any(_cached(added).values())
    keys = read_shards(added["shards"]["train"]).column("key").to_pylist()
    assert len(keys) == 19 and "bird/added.png" in keys
    # Replaced in place (same name, other bytes): redone again.
    shutil.copy2(sorted((source / "automobile").iterdir())[0], new)
    assert not any(_cached(_condense(source, out, teacher)).values())
    # Removed: the first listing again, so the first run's stages are reused.
    new.unlink()
    assert set(_cached(_condense(source, out, teacher)).values()) == {True}


@pytest.fixture
def small_disk():
    """A 256 KiB tmpfs for `out` (root only; skipped where mounting is not allowed)."""
    with mounted_tmpfs("256k") as mnt:
        yield mnt


def _cli_condense(src: Path, out: Path, teacher: Path, **extra) -> subprocess.CompletedProcess:
    """`dc3ray condense` in a fresh process (its own local Ray), as a user reruns it."""
    s = {"name": "env", "data": src, "out": out, "teacher_path": teacher, "evaluate": "false",
         "num_cpus": 2, "ingest.shard_rows": 8, "select.ipc": 2, "select.k": 2,
         "select.pca_dim": 4, "embed.batch_size": 8, "grad.batch_size": 8,
         "compensate.compensator": "none", **extra}
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    return subprocess.run([sys.executable, "-m", "dc3ray.cli", "condense",
                           *[a for k, v in s.items() for a in ("--set", f"{k}={v}")]],
                          capture_output=True, text=True, env=env, timeout=400)


def test_a_disk_that_fills_during_the_ray_feature_stage_is_named_and_the_run_resumes(
        source, teacher, small_disk):
    # In fresh processes: a Ray Data stage that failed leaves its pool actors to reference
    # counting, and on the suite's shared 2-CPU instance they could starve later tests.
    out = small_disk / "out"
    failed = _cli_condense(source, out, teacher, tracking="disabled")  # ingest fits, features not
    assert failed.returncode == 2, failed.stdout[-3000:] + failed.stderr[-3000:]
    error = [ln for ln in failed.stderr.splitlines() if ln.startswith("dc3ray condense: error")]
    assert len(error) == 1 and "stage features: no space left on the device writing " \
        f"{out / 'stages' / 'features-'}" in error[0] and " free of 256.0 KiB" in error[0], \
        failed.stderr[-3000:]
    (ingested,) = [p for p in (out / "stages").iterdir()]  # committed; no temp folder left
    assert ingested.name.startswith("ingest_train-") and (ingested / "_stage.json").is_file()
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    done = _cli_condense(source, out, teacher, tracking="disabled")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert _cached(manifest) == {"ingest_train": True, "features": False, "select": False,
                                 "compensate": False}
    assert read_shards(out / "condensed", required=None).num_rows == 6


def test_a_corrupt_mlflow_store_stops_the_run_before_any_stage_or_is_skipped_when_optional(
        source, teacher, tmp_path, monkeypatch, ray_session):
    from dc3ray.pipeline.tracking import TrackingError
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    out.mkdir()
    junk = b"SQLite format 2\x00" + bytes(range(256)) * 8
    (out / "mlflow.db").write_bytes(junk)
    fast = {"select.method": "random"}  # the store is what is tested: no feature stage
    with pytest.raises(TrackingError, match=r"mlflow\.db cannot be used"):
        _condense(source, out, teacher, **fast)
    assert not list((out / "stages").glob("*")) if (out / "stages").exists() else True
    lines: list[str] = []
    manifest = _condense(source, out, teacher, lines, tracking="optional", **fast)
    warnings = [ln for ln in lines if "[mlflow]" in ln]
    assert len(warnings) == 1 and "going on without tracking" in warnings[0], lines
    assert len(manifest["images"]) == 6 and (out / "manifest.json").is_file()
    assert (out / "mlflow.db").read_bytes() == junk  # left for the user to inspect
