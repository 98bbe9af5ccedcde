"""The compensation stage on a local Ray actor pool, on 64 real CIFAR-10 images."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dc3ray.config import CompensateConfig
from dc3ray.core import schema
from dc3ray.core.imageio import decode_rgb
from dc3ray.core.shards import read_shards, write_shards_atomic


@pytest.fixture(scope="module")
def shards64(cifar_small_shards, tmp_path_factory):
    """The first 64 rows of the shared 200-image shards, as 3 shards of <= 30 rows + class map."""
    table = read_shards(cifar_small_shards).slice(0, 64)
    out = tmp_path_factory.mktemp("comp") / "selected"
    class_map = json.loads((cifar_small_shards / schema.CLASS_MAP_FILE).read_text())
    write_shards_atomic(table, out, shard_rows=30, extra_files={schema.CLASS_MAP_FILE: class_map})
    return out


@pytest.fixture(scope="module")
def tiny_p2p(tmp_path_factory):
    from tiny_diffusion import build_tiny_instruct_pix2pix
    # Narrow (16, 32) blocks: half the CPU time of the default (32, 64), same code path.
    return build_tiny_instruct_pix2pix(tmp_path_factory.mktemp("tiny") / "p2p", seed=0, channels=(16, 32))


def test_actor_turns_a_numpy_batch_into_compensated_rows_without_ray(shards64):
    from dc3ray.config import to_dict
    from dc3ray.pipeline.compensate import COMPENSATED_SCHEMA, CompensatorActor

    table = read_shards(shards64).slice(0, 5)
    batch = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
    out = CompensatorActor(to_dict(CompensateConfig(compensator="classical")))(batch)
    assert set(out) == set(COMPENSATED_SCHEMA.names)
    assert list(out[schema.KEY]) == list(out["source_key"]) == table.column(schema.KEY).to_pylist()
    assert all(v == "compensated" for v in out["variant"])
    img = decode_rgb(out[schema.IMAGE][0])
    assert img.shape == (32, 32, 3) and not np.array_equal(img, decode_rgb(batch[schema.IMAGE][0]))


@pytest.mark.ray
def test_instructpix2pix_actor_pool_compensates_64_real_images(ray_session, shards64, tiny_p2p, tmp_path):
    from dc3ray.core.editing import DiffusionCompensator
    from dc3ray.pipeline.compensate import compensate_dataset

    cfg = CompensateConfig(compensator="instructpix2pix", model_path=str(tiny_p2p), steps=2, size=32,
                           batch_size=8, keep_originals=True, num_actors=1, num_cpus_per_actor=1.0)
    info = compensate_dataset(str(shards64), cfg, str(tmp_path / "out"), use_gpu=False, shard_rows=50)
    assert info["rows"] == 128 and info["source_rows"] == 64

    out = read_shards(tmp_path / "out", required=schema.IMAGE_SCHEMA)
    src = read_shards(shards64)
    keys = out.column(schema.KEY).to_pylist()
    assert keys == sorted(keys) and len(set(keys)) == 128
    assert [f.name for f in sorted((tmp_path / "out").glob("part-*.parquet"))] == \
        ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert json.loads((tmp_path / "out" / schema.CLASS_MAP_FILE).read_text()) == \
        json.loads((shards64 / schema.CLASS_MAP_FILE).read_text())

    rows = out.to_pylist()
    by_src = {r[schema.KEY]: r for r in src.to_pylist()}
    comp = [r for r in rows if r["variant"] == "compensated"]
    orig = [r for r in rows if r["variant"] == "original"]
    assert len(comp) == len(orig) == 64
    for r in orig:                       # originals: untouched bytes under key#orig
        s = by_src[r["source_key"]]
        assert r[schema.KEY] == s[schema.KEY] + "#orig" and r[schema.IMAGE] == s[schema.IMAGE]
    for r in comp:
        s = by_src[r[schema.KEY]]
        assert r["source_key"] == s[schema.KEY] and r[schema.LABEL] == s[schema.LABEL]
        assert r[schema.CLASS_NAME] == s[schema.CLASS_NAME] and r["seed"] == cfg.seed
        assert r[schema.IMAGE][:8] == b"\x89PNG\r\n\x1a\n" and (r[schema.HEIGHT], r[schema.WIDTH]) == (32, 32)
        assert r["warm_prompt"].startswith("Adjust the color hue to be ")

    # The actor pool gives the bytes the core compensator gives in-process for the same chunks.
    first = sorted(by_src)[:8]
    direct = DiffusionCompensator(cfg, device="cpu").compensate(
        [decode_rgb(by_src[k][schema.IMAGE]) for k in first], first)
    stage = {r[schema.KEY]: decode_rgb(r[schema.IMAGE]) for r in comp}
    for k, d in zip(first, direct):
        assert np.array_equal(stage[k], d["image"]), k


@pytest.mark.ray
def test_classical_and_none_stages_and_the_colors_report(ray_session, shards64, tmp_path):
    from dc3ray.pipeline.colors import color_sets
    from dc3ray.pipeline.compensate import compensate_dataset

    info = compensate_dataset(str(shards64), CompensateConfig(compensator="classical"), str(tmp_path / "cl"))
    assert info["rows"] == 64
    cl = read_shards(tmp_path / "cl")
    assert set(cl.column("variant").to_pylist()) == {"compensated"}

    compensate_dataset(str(shards64), CompensateConfig(compensator="none", keep_originals=True),
                       str(tmp_path / "none"))
    none = read_shards(tmp_path / "none")
    src = read_shards(shards64)
    assert none.column(schema.KEY).to_pylist() == sorted(src.column(schema.KEY).to_pylist())
    src_bytes = dict(zip(src.column(schema.KEY).to_pylist(), src.column(schema.IMAGE).to_pylist()))
    assert all(src_bytes[k] == b for k, b in zip(none.column(schema.KEY).to_pylist(),
                                                   none.column(schema.IMAGE).to_pylist()))

    lines = []
    rows = color_sets([str(shards64), str(tmp_path / "cl")], str(tmp_path / "colors.png"),
                          log=lines.append)
    assert [r["name"] for r in rows] == ["selected", "cl"] and all(r["images"] == 64 for r in rows)
    assert rows[0]["colorfulness"] != rows[1]["colorfulness"]
    assert (tmp_path / "colors.png").stat().st_size > 10_000 and "colorful" in lines[0]
