"""The generative side on local Ray: LoRA fine-tuning of a tiny pipeline as a 1-worker Ray Train job
that is stopped and resumed, then sampling to shards and FID/KID against real CIFAR-10 val images."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from dc3ray.core import schema
from dc3ray.core.shards import read_shards, write_shards_atomic

pytestmark = pytest.mark.ray


def one_per_class(src, out):
    """The first image of each class of a shard set, as shards + class map (10 images)."""
    table = read_shards(src).sort_by([(schema.LABEL, "ascending"), (schema.KEY, "ascending")])
    labels = table.column(schema.LABEL).to_numpy()
    first = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]
    class_map = json.loads((src / schema.CLASS_MAP_FILE).read_text())
    return write_shards_atomic(table.take(first), out, extra_files={schema.CLASS_MAP_FILE: class_map})


def test_finetune_stops_resumes_then_generates_shards_with_fid(
        ray_session, cifar_small_shards, cifar_val_shards, tmp_path):
    from dc3ray.config import FinetuneConfig, GenerateConfig
    from tiny_diffusion import build_tiny_text2img
    from dc3ray.pipeline.fid import compare_image_sets
    from dc3ray.pipeline.finetune import finetune_diffusion
    from dc3ray.pipeline.generate import GENERATED_SCHEMA, generate_images

    base = build_tiny_text2img(tmp_path / "sd", seed=0, channels=(16, 32))
    condensed = one_per_class(cifar_small_shards, tmp_path / "condensed")
    real = one_per_class(cifar_val_shards, tmp_path / "real")
    out = tmp_path / "ft"
    cfg = FinetuneConfig(str(condensed), str(base), str(out), steps=4, lr=1e-3, rank=4,
                         batch_size=4, resolution=32, workers=1, use_gpu=False,
                         checkpoint_every=2, seed=0)
    kw = dict(cpus_per_worker=1, log=lambda *_: None)

    first = finetune_diffusion(dataclasses.replace(cfg, stop_after=2), **kw)   # "interrupted"
    assert (first["steps_done"], first["resumed_from_step"], first["complete"]) == (2, 0, False)
    with pytest.raises(ValueError, match="lr"):                               # checked before Ray starts
        finetune_diffusion(dataclasses.replace(cfg, lr=1e-2), **kw)
    second = finetune_diffusion(cfg, **kw)
    assert (second["steps_done"], second["resumed_from_step"], second["steps_this_call"]) == (4, 2, 2)
    assert [h[0] for h in second["history"]] == [1, 2, 3, 4] and second["complete"]
    assert (out / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert json.loads((out / "finetune.json").read_text())["class_map"]["truck"] == 9
    assert finetune_diffusion(cfg, **kw)["steps_this_call"] == 0    # already done

    gen = tmp_path / "gen"
    entry = generate_images(GenerateConfig(str(base), str(gen), lora=str(out / "lora"), n_per_class=1,
                                           size=16, steps=2, seed=0, real=str(real), use_gpu=False),
                            fid_cache_dir=tmp_path / "feats", log=lambda *_: None)
    table = read_shards(gen / "generated")
    assert table.schema.equals(GENERATED_SCHEMA, check_metadata=False)
    assert table.num_rows == entry["num_images"] == 10
    assert table.column(schema.KEY).to_pylist()[0] == "airplane/00000"
    assert set(table.column(schema.HEIGHT).to_pylist()) == {16}
    manifest = json.loads((gen / "manifest.json").read_text())["generate"]
    assert manifest["lora"] == str((out / "lora").resolve())
    assert manifest["fid"]["n_a"] == manifest["fid"]["n_b"] == 10
    assert np.isfinite(manifest["fid"]["fid"]) and manifest["fid"]["fid"] > 0
    assert (gen / "samples.png").is_file() and (gen / "mlflow.db").is_file()
    # The stand-alone command finds both sets' features in the cache the Ray task filled.
    res = compare_image_sets(gen / "generated", real, tmp_path / "fid.json",
                             cache_dir=tmp_path / "feats", device="cpu", log=lambda *_: None)
    assert res["fid"] == pytest.approx(manifest["fid"]["fid"], rel=1e-9)
    assert json.loads((tmp_path / "fid.json").read_text())["kid"] == res["kid"]
