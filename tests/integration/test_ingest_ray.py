"""Real CIFAR-10 images through ingest and back out of Ray Data, byte for byte."""
from __future__ import annotations

import pytest

from dc3ray.core import schema
from dc3ray.pipeline.io import read_shards


@pytest.mark.ray
def test_200_real_images_round_trip_byte_identical_through_ray_data(cifar_small, cifar_small_shards,
                                                                     ray_session):
    ds = read_shards(cifar_small_shards)
    rows = {r[schema.KEY]: r for r in ds.iter_rows()}
    assert len(rows) == 200
    originals = sorted(p for p in cifar_small.glob("*/*.jpg"))
    assert len(originals) == 200
    for p in originals:
        row = rows[f"{p.parent.name}/{p.name}"]
        assert row[schema.IMAGE] == p.read_bytes()
        assert (row[schema.HEIGHT], row[schema.WIDTH]) == (32, 32)
    assert sorted({r[schema.LABEL] for r in rows.values()}) == list(range(10))


@pytest.mark.ray
def test_val_split_reuses_the_train_class_map(cifar_small_shards, cifar_val_shards, ray_session):
    import json
    a = json.loads((cifar_small_shards / "class_map.json").read_text())
    b = json.loads((cifar_val_shards / "class_map.json").read_text())
    assert a == b and len(a) == 10
