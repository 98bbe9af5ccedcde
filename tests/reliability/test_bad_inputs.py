"""Bad inputs across the pipeline: odd image sizes, bombs, empty or one-image classes, broken
shards, undecodable bytes inside shards, NaN/inf features. Each is handled (converted, or
skipped and listed) or refused with an error naming the file, column, class or image.
Cases already covered elsewhere are listed in docs/RELIABILITY.md. No Ray here.
"""
from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dc3ray.config import CompensateConfig, CondenseConfig, EmbedConfig, GradConfig, SelectConfig, \
    load_config, to_dict
from dc3ray.core import schema
from dc3ray.core.datasets import decode_images
from dc3ray.core.imageio import ImageDecodeError, decode_batch
from dc3ray.core.selection import select_class
from dc3ray.core.shards import ShardError, read_shards
from dc3ray.core.sources import SourceError
from dc3ray.pipeline.ingest import ingest

QUIET = {"log": lambda *_: None}


def _save(path: Path, im: Image.Image, fmt: str, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format=fmt, **kw)
    return path


def _header_only_png(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels (the pixel data is never reached)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
            + chunk(b"IEND", b""))


# ------------------------------------------------------------------ image sizes

@pytest.fixture(scope="module")
def odd_sizes(tmp_path_factory) -> Path:
    """Shards of a 1x1 PNG, a 1x1 JPEG and a 10,000 x 10,000 gray JPEG (1.2 MB on disk)."""
    root = tmp_path_factory.mktemp("odd") / "src"
    _save(root / "a" / "one.png", Image.new("RGB", (1, 1), (10, 200, 30)), "PNG")
    _save(root / "b" / "one.jpg", Image.new("RGB", (1, 1), (200, 10, 10)), "JPEG", quality=95)
    _save(root / "b" / "huge.jpg", Image.new("L", (10_000, 10_000), 128), "JPEG", quality=50)
    out = root.parent / "shards"
    report = ingest(root, out, **QUIET)
    assert report["num_skipped"] == 0
    return out


def test_1x1_and_10000x10000_images_ingest_and_decode_to_the_model_size(odd_sizes):
    report = json.loads((odd_sizes / schema.INGEST_REPORT_FILE).read_text())
    assert report["sizes"] == {"1x1": 2, "10000x10000": 1}
    images, labels, keys = decode_images(read_shards(odd_sizes), size=32)
    assert images.shape == (3, 32, 32, 3) and labels.tolist() == [0, 1, 1]
    by_key = dict(zip(keys, images))
    assert (by_key["a/one.png"] == [10, 200, 30]).all()  # one pixel, upsampled
    assert abs(float(by_key["b/huge.jpg"].mean()) - 128) < 2  # 100 MP gray, downsampled


def test_compensation_scales_a_huge_image_down_to_max_side_and_keeps_a_1x1(odd_sizes):
    from dc3ray.pipeline.compensate import CompensatorActor
    t = read_shards(odd_sizes)
    batch = {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}
    out = CompensatorActor(to_dict(CompensateConfig(max_side=64)))(batch)
    sizes = dict(zip(out[schema.KEY], zip(out[schema.HEIGHT].tolist(), out[schema.WIDTH].tolist())))
    # The classical edit of a 100 MP image needs ~20 GB at full size; at max_side it needs MBs.
    assert sizes == {"a/one.png": (1, 1), "b/one.jpg": (1, 1), "b/huge.jpg": (64, 64)}
    huge = list(out[schema.KEY]).index("b/huge.jpg")
    assert Image.open(io.BytesIO(out[schema.IMAGE][huge])).size == (64, 64)


def test_a_decompression_bomb_is_skipped_and_listed(tmp_path):
    root = tmp_path / "src"
    _save(root / "a" / "ok.png", Image.new("RGB", (4, 4)), "PNG")
    (root / "a" / "bomb.png").write_bytes(_header_only_png(30_000, 30_000))
    report = ingest(root, tmp_path / "out", **QUIET)
    assert report["num_rows"] == 1
    assert [(Path(s["path"]).name, s["reason"][:15]) for s in report["skipped"]] == \
        [("bomb.png", "image too large")]


# ------------------------------------------------------------------ class sizes

def test_an_empty_class_folder_is_an_error_naming_the_class(tmp_path):
    root = tmp_path / "src"
    _save(root / "cat" / "0.png", Image.new("RGB", (4, 4)), "PNG")
    (root / "dog").mkdir()
    with pytest.raises(SourceError, match=r"\['dog'\].*no usable image"):
        ingest(root, tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", ["dc3", "graphcut", "facility", "random", "herding",
                                    "kcenter", "centroid"])
def test_a_one_image_class_gives_its_image_at_ipc_1_and_a_named_error_above(method):
    rng = np.random.default_rng(0)
    one = (["fish/0.jpg"], rng.normal(size=(1, 6)), rng.normal(size=(1, 3)), rng.normal(size=(1, 5)))
    rows = select_class(*one[:1], 2, *one[1:], SelectConfig(method=method, ipc=1, k=10),
                        class_name="fish")
    assert [(r["key"], r["rank"]) for r in rows] == [("fish/0.jpg", 0)]
    with pytest.raises(ValueError, match=r"class 'fish' \(label 2\) has 1 images but select.ipc=2"):
        select_class(*one[:1], 2, *one[1:], SelectConfig(method=method, ipc=2), class_name="fish")


# ------------------------------------------------------------------ broken shards

@pytest.fixture
def good_shards(tmp_path) -> Path:
    root = tmp_path / "src"
    for c in ("cat", "dog"):
        for i in range(2):
            _save(root / c / f"{i}.png", Image.new("RGB", (8, 8), (40 * i, 90, 200)), "PNG")
    out = tmp_path / "good"
    ingest(root, out, **QUIET)
    return out


def _break(good: Path, dst: Path, how: str) -> Path:
    """Copy of a shard folder (class_map.json kept) with part-00000.parquet broken `how`."""
    dst.mkdir()
    (dst / schema.CLASS_MAP_FILE).write_text((good / schema.CLASS_MAP_FILE).read_text())
    t = read_shards(good)
    if how == "missing image column":
        pq.write_table(t.drop_columns([schema.IMAGE]), dst / "part-00000.parquet")
    elif how == "label stored as text":
        labels = pa.array([str(v) for v in t.column(schema.LABEL).to_pylist()])
        pq.write_table(t.set_column(1, schema.LABEL, labels), dst / "part-00000.parquet")
    else:  # a shard cut short by a crashed writer
        (dst / "part-00000.parquet").write_bytes((good / "part-00000.parquet").read_bytes()[:300])
    return dst


BROKEN = {"missing image column": r"part-00000.parquet: wrong or missing column\(s\): image \(missing\)",
          "label stored as text": r"part-00000.parquet: .*label \(string, expected int64\)",
          "truncated file": r"part-00000.parquet is not a readable Parquet file"}


@pytest.mark.parametrize("how", list(BROKEN))
def test_a_broken_shard_fails_the_ray_feature_stage_before_any_ray_work(good_shards, tmp_path, how):
    from dc3ray.pipeline.features import compute_features
    bad = _break(good_shards, tmp_path / "bad", how)
    # Raises on the driver, from the file footers: Ray is not even started here.
    with pytest.raises(ShardError, match=BROKEN[how]):
        compute_features(bad, EmbedConfig(), GradConfig(), tmp_path / "features")
    assert not (tmp_path / "features").exists()


@pytest.mark.parametrize("how", list(BROKEN))
def test_a_broken_shard_stops_condense_before_anything_is_written(good_shards, tmp_path, how):
    from dc3ray.pipeline.condense import condense
    bad = _break(good_shards, tmp_path / "bad", how)
    out = tmp_path / "run"
    cfg = load_config(CondenseConfig, None, [f"data={bad}", f"val={good_shards}", f"out={out}"])
    with pytest.raises(ShardError, match=BROKEN[how]):
        condense(cfg, **QUIET)
    assert not out.exists()


def test_undecodable_bytes_inside_a_shard_are_named_by_key():
    from dc3ray.pipeline.compensate import CompensatorActor
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    blobs = [png.getvalue(), b"\x89PNG but not really"]
    keys = ["cat/ok.png", "cat/garbage.png"]
    # Feature actors decode through decode_batch, the compensation actor image by image.
    with pytest.raises(ImageDecodeError, match=r"image 'cat/garbage.png': undecodable image"):
        decode_batch(blobs, 32, keys=keys)
    batch = {schema.KEY: np.array(keys, dtype=object), schema.IMAGE: np.array(blobs, dtype=object),
             schema.LABEL: np.zeros(2, np.int64), schema.CLASS_NAME: np.array(["cat"] * 2, object)}
    with pytest.raises(ImageDecodeError, match=r"image 'cat/garbage.png': undecodable image"):
        CompensatorActor(to_dict(CompensateConfig()))(batch)


# ------------------------------------------------------------------ NaN / inf features

@pytest.mark.parametrize("method, column, what", [
    ("dc3", 1, "embeddings"), ("dc3", 3, "gradient factor h"),
    ("graphcut", 2, "gradient factor e"), ("herding", 1, "embeddings")])
@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_nan_or_inf_features_are_refused_naming_class_column_and_image(method, column, what,
                                                                       bad_value):
    rng = np.random.default_rng(1)
    n = 12
    perm = rng.permutation(n)  # rows not in key order: the error must still name the right key
    keys = [f"dog/{i:02d}.jpg" for i in perm]
    arrays = [rng.normal(size=(n, 6)), rng.normal(size=(n, 3)), rng.normal(size=(n, 5))]
    arrays[column - 1][4, 2] = bad_value
    cfg = SelectConfig(method=method, ipc=2, k=2, pca_dim=4)
    with pytest.raises(ValueError, match=rf"class 'dog' \(label 5\): {what} of 1 image\(s\) hold "
                                         rf"NaN/inf, e.g. \['{keys[4]}'\]"):
        select_class(keys, 5, *arrays, cfg, class_name="dog")
