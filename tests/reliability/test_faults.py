"""Faults inside a stage: an actor killed mid-stage, an actor that dies on every batch, a class
task that fails once. Each uses the shared local Ray (2 CPUs) and tiny real CIFAR-10 sets.

Fault-injecting actors and tasks are defined inside the tests, so Ray ships them by value to
its workers; each fault fires through a marker file, so it happens exactly once.
"""
from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dc3ray.config import CompensateConfig, SelectConfig
from dc3ray.core import schema
from dc3ray.core.shards import read_shards, write_shards_atomic

pytestmark = pytest.mark.ray


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def eight(cifar_small_shards, tmp_path_factory) -> Path:
    """A condensed-style shard folder: 2 real images of each of 4 classes, plus a 3000x2000 one."""
    t = read_shards(cifar_small_shards)
    labels = np.asarray(t.column(schema.LABEL).to_pylist())
    idx = np.concatenate([np.flatnonzero(labels == c)[:2] for c in range(4)])
    t = t.take(idx)
    big = io.BytesIO()
    Image.new("RGB", (3000, 2000), (200, 120, 40)).save(big, format="JPEG", quality=30)
    row = {schema.KEY: "cat/big.jpg", schema.LABEL: 3, schema.CLASS_NAME: "cat",
           schema.IMAGE: big.getvalue(), schema.HEIGHT: 2000, schema.WIDTH: 3000}
    t = pa.concat_tables([t, pa.Table.from_pylist([row], schema=schema.IMAGE_SCHEMA)])
    out = tmp_path_factory.mktemp("eight") / "set"
    return write_shards_atomic(t, out, shard_rows=4)


CFG = CompensateConfig(batch_size=3, max_side=300)


@pytest.fixture(scope="module")
def reference(ray_session, eight, tmp_path_factory) -> tuple[Path, dict]:
    from dc3ray.pipeline.compensate import compensate_dataset
    out = tmp_path_factory.mktemp("ref") / "comp"
    return out, compensate_dataset(eight, CFG, out)


def test_a_huge_image_is_compensated_at_max_side_and_listed(reference):
    out, summary = reference
    assert summary["rows"] == 9 and summary["resized"] == ["cat/big.jpg"]
    t = read_shards(out, required=None)
    sizes = dict(zip(t.column(schema.KEY).to_pylist(),
                     zip(t.column(schema.HEIGHT).to_pylist(), t.column(schema.WIDTH).to_pylist())))
    assert sizes.pop("cat/big.jpg") == (200, 300) and set(sizes.values()) == {(32, 32)}


def test_an_actor_killed_mid_stage_is_restarted_and_the_stage_gives_the_same_bytes(
        reference, eight, tmp_path, monkeypatch):
    import ray
    from dc3ray.pipeline import compensate as comp

    killed, pids = tmp_path / "killed", tmp_path / "pids"
    pids.mkdir()

    class KilledOnce(comp.CompensatorActor):
        def __call__(self, batch):
            (pids / str(os.getpid())).touch()
            if not killed.exists():  # first batch of the first actor: kill it from inside
                killed.touch()
                ray.kill(ray.get_runtime_context().current_actor, no_restart=False)
                time.sleep(60)  # the kill lands during this sleep
            return super().__call__(batch)

    monkeypatch.setattr(comp, "CompensatorActor", KilledOnce)
    comp.compensate_dataset(eight, CFG, tmp_path / "out")
    assert killed.exists() and len(list(pids.iterdir())) == 2  # the killed actor and its restart
    assert _files(tmp_path / "out") == _files(reference[0])


def test_an_actor_that_dies_on_every_batch_fails_the_stage_instead_of_looping(
        ray_session, eight, tmp_path, monkeypatch):
    import ray
    from dc3ray.pipeline import compensate as comp
    from dc3ray.pipeline import resources

    class AlwaysDies(comp.CompensatorActor):
        def __call__(self, batch):
            os._exit(1)  # what the kernel's OOM killer does to a worker

    monkeypatch.setattr(comp, "CompensatorActor", AlwaysDies)
    monkeypatch.setattr(resources, "ACTOR_MAX_RESTARTS", 1)
    t0 = time.perf_counter()
    with pytest.raises(ray.exceptions.RayActorError):
        comp.compensate_dataset(eight, CFG, tmp_path / "out")
    assert time.perf_counter() - t0 < 120
    assert not (tmp_path / "out").exists()


def test_a_class_task_that_fails_once_is_retried_and_gives_the_same_manifest(
        ray_session, cifar_small_shards, tmp_path, monkeypatch):
    import ray
    from dc3ray.pipeline import select as sel

    features = sel.key_label_table(cifar_small_shards, tmp_path / "features")
    cfg = SelectConfig(method="random", ipc=3, seed=4, max_in_flight=2)
    ref = pq.read_table(sel.select_per_class(features, cfg, tmp_path / "ref", show_progress=False))
    failed = tmp_path / "failed-once"

    def flaky(features_path, label, cfg_dict, class_name):
        if label == 5 and not failed.exists():
            failed.touch()
            raise OSError("transient read error (injected)")
        from dc3ray.pipeline.select import _select_one_class
        return _select_one_class(features_path, label, cfg_dict, class_name)

    # Same Ray options as the real task (retries, retry_exceptions), only the body is flaky.
    monkeypatch.setattr(sel, "_select_task", ray.remote(**sel._select_task._default_options)(flaky))
    got = pq.read_table(sel.select_per_class(features, cfg, tmp_path / "got", show_progress=False))
    assert failed.exists()
    assert got.equals(ref)
