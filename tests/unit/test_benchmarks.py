"""Benchmarks: the non-Ray scripts run end to end at tiny sizes; the Ray ones' pure helpers."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_compensate  # noqa: E402
import bench_embed  # noqa: E402
import bench_graphcut  # noqa: E402
import bench_scaling  # noqa: E402
import teacher_on_sets  # noqa: E402


def read_record(path: Path, name: str) -> dict:
    record = json.loads((path / f"{name}.json").read_text())
    assert {"name", "command", "machine", "date", "load_before", "load_after", "result"} <= set(record)
    assert record["name"] == name and record["machine"]["cores"] >= 1
    summary = record["result"]["summary"]
    assert summary and all(isinstance(v, (int, float, str, bool, type(None)))
                           for row in summary for v in row.values())
    return record


# ------------------------------------------------------------------ graphcut

def test_graphcut_bench_writes_a_record_with_identical_picks_per_size(tmp_path):
    bench_graphcut.main(["--n", "40", "60", "--budget", "5", "--dim", "64", "--repeats", "1",
                         "--out-dir", str(tmp_path)])
    rows = read_record(tmp_path, "bench_graphcut")["result"]["summary"]
    assert [r["n"] for r in rows] == [40, 60]
    for r in rows:
        assert r["same_picks"] is True
        assert r["greedy_reference_s"] > 0 and r["greedy_vectorised_s"] > 0
        assert r["sim_factored_s"] > 0 and r["sim_materialised_s"] > 0
        # At D=64 the explicit (n, C + C*D) gradients outweigh the factored path's n x n buffers.
        assert r["sim_materialised_peak_mb"] > r["sim_factored_peak_mb"] > 0


def test_traced_peak_counts_numpy_buffers():
    assert bench_graphcut.traced_peak_mb(lambda: np.ones(2**20)) >= 8.0    # 8 MiB of float64


# ------------------------------------------------------------------ compensate

def test_compensate_bench_classical_batched_and_single_give_the_same_bytes(tmp_path, cifar_root):
    bench_compensate.main(["--skip-diffusion", "--classical-images", "6",
                           "--data", str(cifar_root / "train"), "--out-dir", str(tmp_path)])
    result = read_record(tmp_path, "bench_compensate")["result"]
    assert result["classical"]["identical"] is True
    assert result["classical"]["images_from"] == str(cifar_root / "train")
    rows = result["summary"]
    assert [r["compensator"] for r in rows] == ["classical", "classical"]
    assert all(r["images"] == 6 and r["images_per_s"] > 0 for r in rows)
    assert rows[0]["max_abs_diff_vs_single"] == 0


# ------------------------------------------------------------------ scaling (pure helpers)

def test_synthetic_class_is_deterministic_and_shaped_like_softmax_gradients():
    keys, e, h = bench_scaling.synthetic_class(0, 3, items=50, num_classes=1000, dim=16)
    keys2, e2, h2 = bench_scaling.synthetic_class(0, 3, items=50, num_classes=1000, dim=16)
    assert keys == keys2 and np.array_equal(e, e2) and np.array_equal(h, h2)
    assert e.shape == (50, 1000) and h.shape == (50, 16) and e.dtype == h.dtype == np.float32
    np.testing.assert_allclose(e.sum(axis=1), 0.0, atol=1e-5)
    # 1000-way softmax of an untrained-looking head: the label's entry p_y - 1 is near -1.
    assert np.median(e[:, 3]) < -0.95 and np.all(e[:, 3] < -0.5)
    assert np.all(np.delete(e, 3, axis=1) > 0)
    assert (h >= 0).all() and 0.2 < (h == 0).mean() < 0.8
    _, e_other, _ = bench_scaling.synthetic_class(0, 4, items=50, num_classes=1000, dim=16)
    assert not np.array_equal(e, e_other)


def test_select_synthetic_class_picks_ipc_distinct_keys_of_its_class_repeatably():
    a = bench_scaling.select_synthetic_class(0, 2, items=60, num_classes=10, dim=8, ipc=4, k=2)
    b = bench_scaling.select_synthetic_class(0, 2, items=60, num_classes=10, dim=8, ipc=4, k=2)
    assert a["keys"] == b["keys"] and len(set(a["keys"])) == 4
    assert all(k.startswith("c0002/") for k in a["keys"])
    assert a["select_s"] > 0 and a["peak_rss_mb"] > 0


def test_scaling_summary_reports_throughput_and_peaks():
    tasks = [{"select_s": 0.5, "gen_s": 0.1, "peak_rss_mb": 300.0, "rss_start_mb": 250.0, "pid": p}
             for p in (1, 2)]
    row = bench_scaling.summarise(2, classes=2, items=100, wall_s=1.0, tasks=tasks,
                                  driver_peak_mb=150.0, startup_s=3.0)
    assert row["items_per_s"] == 200.0 and row["classes_per_s"] == 2.0
    assert row["task_peak_rss_mb_max"] == 300.0 and row["worker_processes"] == 2


# ------------------------------------------------------------------ embed (pure helpers)

@pytest.fixture(scope="module")
def tiny_shards(tmp_path_factory):
    """12 noise PNGs, 3 classes, as one shard folder."""
    import pyarrow as pa

    from dc3ray.core import schema
    from dc3ray.core.imageio import encode_png
    from dc3ray.core.shards import write_shards_atomic

    rng = np.random.default_rng(0)
    names = ["a", "b", "c"]
    rows = [{schema.KEY: f"{names[i % 3]}/{i:03d}.png", schema.LABEL: i % 3,
             schema.CLASS_NAME: names[i % 3],
             schema.IMAGE: encode_png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)),
             schema.HEIGHT: 32, schema.WIDTH: 32} for i in range(12)]
    table = pa.Table.from_pylist(rows, schema=schema.IMAGE_SCHEMA)
    out = tmp_path_factory.mktemp("bench_embed") / "src"
    return write_shards_atomic(table, out, 5,
                               extra_files={schema.CLASS_MAP_FILE: {n: i for i, n in enumerate(names)}})


def test_subset_shards_takes_rows_evenly_and_keeps_the_class_map(tiny_shards, tmp_path):
    from dc3ray.core.datasets import load_class_map
    from dc3ray.core.shards import read_shards

    out = bench_embed.subset_shards(tiny_shards, 4, tmp_path / "sub", shard_rows=3)
    keys = read_shards(out).column("key").to_pylist()
    assert keys == ["a/000.png", "b/004.png", "b/007.png", "c/011.png"]  # rows 0, 4, 7, 11
    assert load_class_map(out) == load_class_map(tiny_shards)
    with pytest.raises(ValueError, match="--images 13"):
        bench_embed.subset_shards(tiny_shards, 13, tmp_path / "too_many")


def test_plain_loop_runs_the_featurizer_and_embedder_models_on_every_image(tiny_shards, tmp_path):
    ckpt = bench_embed.random_convnet3(tmp_path / "c3.pt", num_classes=3)
    embed_cfg, grad_cfg = bench_embed.stage_configs(ckpt, "convnet3", batch_size=5, num_actors=1,
                                                    num_cpus_per_actor=1.0)
    row, h = bench_embed.plain_loop(tiny_shards, "featurizer", embed_cfg, grad_cfg, 3, 5)
    _, h_emb = bench_embed.plain_loop(tiny_shards, "embedder", embed_cfg, grad_cfg, 3, 5)
    assert row["images"] == 12 and row["images_per_s"] > 0 and row["steady_images_per_s"] > 0
    assert len(h) == 12 and next(iter(h.values())).shape == (128 * 4 * 4,)
    # The embedding of a shared backbone IS the gradient model's h.
    for k in h:
        np.testing.assert_allclose(h[k], h_emb[k], rtol=1e-5, atol=1e-6)


def test_ratios_are_relative_to_the_plain_row_and_ray_cpus_leave_room_for_reads():
    rows = bench_embed.add_ratios([
        bench_embed.timing_row("plain", 100, 2.0, 0.5, 0.6, 2.0, 10),
        bench_embed.timing_row("ray", 100, 4.0, 3.0, 3.0, 4.0, 10)])
    assert rows[0]["ratio"] == 1.0 and rows[1]["ratio"] == 0.5
    assert rows[1]["steady_images_per_s"] == 90.0
    assert bench_embed.ray_cpus_for([1, 2], 1.0) >= 3
    # A Ray row of 2 blocks has no steady rate; one of 4 does.
    assert bench_embed.timing_row("ray", 100, 4.0, 3.0, 3.0, 4.0, 50, blocks=2)["steady_images_per_s"] is None
    assert bench_embed.timing_row("ray", 100, 4.0, 3.0, 3.0, 4.0, 25, blocks=4)["steady_images_per_s"] == 75.0
    assert bench_embed.ray_cpus_for([1], 0.5) >= 2


# ------------------------------------------------------------------ teacher_on_sets

def test_teacher_on_sets_scores_each_set_against_its_own_labels(tmp_path, capsys):
    import torch
    from dc3ray.core.imageio import encode_png
    from dc3ray.core.models import build_model, save_checkpoint

    rng = np.random.default_rng(0)
    folder = tmp_path / "set"
    for cls, n in (("a", 3), ("b", 1)):  # ImageFolder: a -> 0, b -> 1
        (folder / cls).mkdir(parents=True)
        for i in range(n):
            (folder / cls / f"{i}.png").write_bytes(
                encode_png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    # A teacher that always says class 0, with certainty: top-1 = the share of class a.
    model = build_model("convnet3", 2, 32, width=8)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([50.0, 0.0]))
    ckpt = save_checkpoint(tmp_path / "t.pt", model, "convnet3", 2, 32, model_kwargs={"width": 8})
    (row,) = teacher_on_sets.main([str(folder), "--teacher", str(ckpt)])
    assert row["images"] == 4 and row["teacher_top1"] == 75.0
    assert row["mean_p_true"] == pytest.approx(0.75, abs=1e-4)
    assert "teacher top-1 75.0%" in capsys.readouterr().out

    one_class = build_model("convnet3", 1, 32, width=8)
    ckpt1 = save_checkpoint(tmp_path / "t1.pt", one_class, "convnet3", 1, 32, model_kwargs={"width": 8})
    with pytest.raises(SystemExit, match="set: label 1 but the model has 1 classes"):
        teacher_on_sets.main([str(folder), "--teacher", str(ckpt1)])
