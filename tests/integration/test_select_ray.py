"""Selection stages: actors called directly (no Ray), then the Ray pipeline on 200 real images."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
import pytest

from dc3ray.config import EmbedConfig, GradConfig, SelectConfig, to_dict
from dc3ray.core import schema
from dc3ray.core.shards import read_shards as read_image_shards

# Small and fast on 2 CPUs: EfficientNet-Lite0 (offline weights) at small sizes. The two sizes
# differ so the pipeline runs both pools (Embedder, then GradientFeaturizer) like a VAE + ResNet
# run, each asking the default 1 CPU in ray.init(num_cpus=2): compute_features must fit them
# (fit_actor_cpus), or they hold both CPUs, the read tasks never run and the stage hangs.
EMBED = EmbedConfig(backbone="efficientnet_lite0", image_size=64, batch_size=100)
GRAD = GradConfig(backbone="efficientnet_lite0", image_size=32, batch_size=100)
DC3 = SelectConfig(method="dc3", ipc=3, k=2, pca_dim=8, max_in_flight=2)


def real_batch(cifar_root, n=6) -> dict:
    files = sorted((cifar_root / "train" / "cat").iterdir())[:n]
    return {schema.KEY: np.array([f"cat/{f.name}" for f in files], dtype=object),
            schema.LABEL: np.full(n, 3, np.int64),
            schema.IMAGE: np.array([f.read_bytes() for f in files], dtype=object)}


# ------------------------------------------------------------------ actors without Ray

def test_embedder_actor_works_on_a_plain_dict_batch(cifar_root):
    from dc3ray.pipeline.features import Embedder
    b = real_batch(cifar_root)
    out = Embedder(to_dict(EMBED), keep=(schema.IMAGE,))(b)
    assert out[schema.EMBEDDING].shape == (6, 1280)
    assert list(out[schema.KEY]) == list(b[schema.KEY])
    assert out[schema.IMAGE] is b[schema.IMAGE]


def test_gradient_featurizer_actor_works_on_a_plain_dict_batch(cifar_root):
    from dc3ray.pipeline.features import GradientFeaturizer
    out = GradientFeaturizer(to_dict(GRAD), num_classes=10)(real_batch(cifar_root))
    assert out["e"].shape == (6, 10) and out["h"].shape == (6, 1280)
    assert set(out) == {schema.KEY, schema.LABEL, "e", "h"}
    np.testing.assert_allclose(out["e"][:, 3], 0.1 - 1.0, atol=1e-6)  # zero head: 1/C - 1


def test_gradient_featurizer_can_return_h_as_the_embedding(cifar_root):
    from dc3ray.pipeline.features import GradientFeaturizer, shares_backbone
    out = GradientFeaturizer(to_dict(GRAD), num_classes=10, embedding_from_h=True)(
        real_batch(cifar_root, 2))
    np.testing.assert_array_equal(out[schema.EMBEDDING], out["h"])
    assert shares_backbone(EmbedConfig(image_size=32), GradConfig(image_size=32))
    assert not shares_backbone(EMBED, GRAD)


# ------------------------------------------------------------------ the Ray pipeline

@pytest.fixture(scope="module")
def run(ray_session, cifar_small_shards, tmp_path_factory):
    """One end-to-end run_selection (dc3) on 200 real images; the tests read its outputs."""
    from dc3ray.pipeline.select import run_selection
    out = tmp_path_factory.mktemp("run")
    res = run_selection(cifar_small_shards, EMBED, GRAD, DC3, out, shard_rows=8,
                        show_progress=False)
    return {k: Path(v) for k, v in res["paths"].items()} | {"result": res}


@pytest.fixture(scope="module")
def features(run):
    return run["features"]


@pytest.mark.ray
def test_features_hold_every_image_with_list_columns(features, cifar_small_shards):
    from dc3ray.pipeline.features import list_column, read_features
    t = read_features(features)
    assert t.num_rows == 200
    for name, dim in ((schema.EMBEDDING, 1280), ("e", 10), ("h", 1280)):
        assert pa.types.is_list(t.schema.field(name).type)
        assert t.schema.field(name).type.value_type == pa.float32()
        assert list_column(t, name).shape == (200, dim)
    # Two pools: the 64 px embedding is not the 32 px gradient model's h.
    assert not np.allclose(list_column(t, schema.EMBEDDING), list_column(t, "h"))
    src = read_image_shards(cifar_small_shards, columns=[schema.KEY, schema.LABEL])
    assert sorted(zip(t.column("key").to_pylist(), t.column("label").to_pylist())) == \
        sorted(zip(src.column("key").to_pylist(), src.column("label").to_pylist()))
    assert (features / schema.CLASS_MAP_FILE).is_file()
    # One-actor pools still stream: the 4 input shards are 4 blocks (bundled up to the batch
    # size of 100), each written when done, so the progress bar moves before the end. As one
    # block (before) everything was written last, in one file.
    assert len(list(features.glob("*.parquet"))) > 1
    cat = read_features(features, label=3)
    assert cat.num_rows == 20 and set(cat.column("label").to_pylist()) == {3}


@pytest.mark.ray
def test_dc3_selection_gives_ipc_per_class_and_repeats_exactly(run, tmp_path):
    from dc3ray.pipeline.select import select_per_class
    a = pq.read_table(run["manifest"])
    b = pq.read_table(select_per_class(run["features"], DC3, tmp_path, show_progress=False))
    assert a.equals(b)
    assert a.column_names == ["key", "label", "bin", "rank", "gain", "method", "seed"]
    labels = a.column("label").to_pylist()
    assert [labels.count(c) for c in range(10)] == [3] * 10
    assert labels == sorted(labels) and a.column("rank").to_pylist() == [0, 1, 2] * 10
    assert len(set(a.column("key").to_pylist())) == 30
    info = json.loads((run["manifest"].parent / "selection.json").read_text())
    assert info["rows"] == 30 and info["per_class"]["0"] == 3
    assert set(run["result"]["timings"]) == {"features_s", "select_s", "materialise_s", "total_s"}


@pytest.mark.ray
def test_materialised_subset_copies_the_original_bytes(run, cifar_small_shards):
    sub = read_image_shards(run["condensed"])
    man = pq.read_table(run["manifest"])
    assert sub.column("key").to_pylist() == man.column("key").to_pylist()
    src = read_image_shards(cifar_small_shards)
    src_bytes = dict(zip(src.column("key").to_pylist(), src.column("image").to_pylist()))
    assert all(src_bytes[k] == v for k, v in zip(sub.column("key").to_pylist(),
                                                 sub.column("image").to_pylist()))
    assert json.loads((run["condensed"] / schema.CLASS_MAP_FILE).read_text())["airplane"] == 0
    assert len(list(run["condensed"].glob("part-*.parquet"))) == 4  # 30 rows, 8 per shard


@pytest.mark.ray
def test_ipc_above_class_size_fails_naming_the_class(features, tmp_path):
    from dc3ray.pipeline.select import select_per_class
    with pytest.raises(ValueError, match=r"'airplane' \(label 0\) has 20 images but select.ipc=25"):
        select_per_class(features, SelectConfig(ipc=25), tmp_path, show_progress=False)


@pytest.mark.ray
def test_a_failing_class_task_is_reported_by_class_name(features, tmp_path):
    from dc3ray.pipeline.features import read_features
    from dc3ray.pipeline.select import select_per_class
    # Poison one class: NaN embeddings make KMeans raise inside that class's task.
    t = read_features(features)
    emb = t.column(schema.EMBEDDING).to_pylist()
    labels = t.column(schema.LABEL).to_pylist()
    emb = [[float("nan")] * len(v) if lab == 5 else v for v, lab in zip(emb, labels)]
    bad = tmp_path / "bad"
    bad.mkdir()
    t = t.set_column(t.schema.get_field_index(schema.EMBEDDING), schema.EMBEDDING,
                     pa.array(emb, pa.list_(pa.float32())))
    pq.write_table(t, bad / "part-0.parquet")
    (bad / schema.CLASS_MAP_FILE).write_text((features / schema.CLASS_MAP_FILE).read_text())
    with pytest.raises(RuntimeError, match=r"class 'dog' \(label 5\) after 1 retries"):
        select_per_class(bad, SelectConfig(ipc=2, k=2, pca_dim=4), tmp_path / "sel",
                         max_retries=1, show_progress=False)


@pytest.mark.ray
def test_centroid_on_the_features_picks_the_images_nearest_each_class_mean(features, tmp_path):
    from dc3ray.pipeline.features import list_column, read_features
    from dc3ray.pipeline.select import select_per_class
    manifest = pq.read_table(select_per_class(features, SelectConfig(method="centroid", ipc=2),
                                              tmp_path, show_progress=False))
    for label in (0, 7):
        cls = read_features(features, label=label)
        emb = list_column(cls, schema.EMBEDDING).astype(np.float64)
        keys = np.asarray(cls.column("key").to_pylist())
        order = np.argsort(np.linalg.norm(emb - emb.mean(0), axis=1), kind="stable")[:2]
        got = manifest.filter(pa.compute.equal(manifest.column("label"), label))
        assert got.column("key").to_pylist() == keys[order].tolist()


@pytest.mark.ray
def test_random_method_needs_no_model_and_matches_random_subset(cifar_small_shards, ray_session,
                                                                tmp_path):
    from dc3ray.core.selection import random_subset
    from dc3ray.pipeline.features import key_label_table
    from dc3ray.pipeline.select import select_per_class
    feats = key_label_table(cifar_small_shards, tmp_path / "f")
    manifest = select_per_class(feats, SelectConfig(method="random", ipc=4, seed=9), tmp_path / "m",
                                show_progress=False)
    ref = random_subset(read_image_shards(cifar_small_shards), 4, seed=9)
    assert pq.read_table(manifest).column("key").to_pylist() == ref.column("key").to_pylist()


def test_only_shards_out_of_label_key_order_need_the_features_sort(cifar_small_shards, tmp_path):
    from dc3ray.pipeline.features import in_label_key_order
    assert in_label_key_order(cifar_small_shards)  # ingest writes (label, key) order
    t = read_image_shards(cifar_small_shards)
    for name, rows in (("keys", [1, 0, 2]), ("labels", [0, len(t) - 1, 1])):
        d = tmp_path / name
        d.mkdir()
        pq.write_table(t.take(rows), d / "part-00000.parquet")
        assert not in_label_key_order(d), name


@pytest.mark.ray
def test_a_small_folder_is_split_so_a_two_actor_pool_shares_the_work(features, cifar_small_shards,
                                                                    tmp_path):
    """Ray 2.60 reads a small shard folder as one block, which would leave the second actor
    idle; read_shards(min_blocks=) splits it (order kept) and the features do not change.
    The folder here holds the same shards in reverse order, so compute_features also takes its
    sort path (one file per class; the module's run took the streaming path)."""
    import dataclasses
    import shutil
    from dc3ray.pipeline.io import read_shards
    from dc3ray.pipeline.features import compute_features, list_column, read_features
    keys = read_image_shards(cifar_small_shards, columns=[schema.KEY]).column(schema.KEY).to_pylist()
    split = read_shards(cifar_small_shards, columns=[schema.KEY], min_blocks=8).materialize()
    assert split.num_blocks() >= 8
    assert [r[schema.KEY] for r in split.iter_rows()] == keys

    shards = sorted(cifar_small_shards.glob("part-*.parquet"))
    reversed_ = tmp_path / "reversed"
    reversed_.mkdir()
    for i, f in enumerate(reversed(shards)):
        shutil.copy(f, reversed_ / f"part-{i:05d}.parquet")
    shutil.copy(cifar_small_shards / schema.CLASS_MAP_FILE, reversed_)
    two = dataclasses.replace(GRAD, num_actors=2)
    out = compute_features(reversed_, EMBED, two, tmp_path / "f2", need_embedding=False)
    assert len(list(out.glob("*.parquet"))) == 10  # sorted into one file per class
    assert json.loads((out / "features.json").read_text())["sorted"]
    assert not json.loads((features / "features.json").read_text())["sorted"]
    got, ref = read_features(out), read_features(features)
    assert got.column("key").to_pylist() == ref.column("key").to_pylist()
    for name in ("e", "h"):
        np.testing.assert_allclose(list_column(got, name), list_column(ref, name), atol=1e-5)
    # Per class too: the filtered read of one label, in key order, on both layouts.
    for label in (0, 9):
        assert read_features(out, label=label).column("key").to_pylist() == \
            read_features(features, label=label).column("key").to_pylist()
