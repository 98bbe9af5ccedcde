"""Full-size InstructPix2Pix cost benchmark: the builder's sizes (tiny variant, same code path),
the random-weights guard of the compensation stage, and the benchmark's record (no Ray, no data)."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_diffusion_cost  # noqa: E402
import diffusion_fullsize as fs  # noqa: E402

from dc3ray.core.editing import RANDOM_WEIGHTS_MARKER, refuse_random_weights  # noqa: E402


@pytest.fixture(scope="module")
def tiny_random(tmp_path_factory) -> Path:
    """The tiny random InstructPix2Pix pipeline saved by the builder (marker included)."""
    return fs.save_random_pipeline(tmp_path_factory.mktemp("p2p") / "tiny", tiny=True, log=lambda *_: None)


# ------------------------------------------------------------------ builder

def test_formula_reproduces_published_full_size_counts():
    counts = fs.expected_param_counts(fs.FULL)
    assert all(c["ok"] for c in fs.check_against_published(counts).values())
    # With SD's own 4 input channels the formula gives SD-1.5's exact published UNet size.
    sd15 = fs.expected_param_counts(dataclasses.replace(fs.FULL, unet_in_channels=4))
    assert sd15["unet"] == 859_520_964 and counts["unet"] - sd15["unet"] == 4 * 320 * 3 * 3
    assert counts["total"] == counts["unet"] + counts["text_encoder"] + counts["vae"]


def test_tiny_pipeline_modules_match_the_config_numbers(tiny_random):
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline

    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(tiny_random, safety_checker=None,
                                                                  requires_safety_checker=False)
    a = fs.TINY
    assert fs.module_param_counts(pipe) == fs.expected_param_counts(a)
    assert pipe.unet.config.in_channels == 8 and tuple(pipe.unet.config.block_out_channels) == a.unet_channels
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size == a.text_hidden
    assert pipe.text_encoder.config.num_hidden_layers == a.text_layers
    assert pipe.text_encoder.config.vocab_size == len(pipe.tokenizer) == 49408
    assert pipe.vae.config.latent_channels == 4 and tuple(pipe.vae.config.block_out_channels) == a.vae_channels
    assert isinstance(pipe.scheduler, EulerAncestralDiscreteScheduler)
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"
    assert fs.read_marker(tiny_random)["expected_params"] == fs.expected_param_counts(a)


def test_save_reuses_its_own_folder_and_never_overwrites_a_foreign_one(tiny_random, tmp_path):
    said = []
    assert fs.save_random_pipeline(tiny_random, tiny=True, log=said.append) == tiny_random
    assert said and said[0].startswith("reusing")
    foreign = tmp_path / "real_weights"
    foreign.mkdir()
    (foreign / "model_index.json").write_text("{}")
    with pytest.raises(FileExistsError, match="real_weights"):
        fs.save_random_pipeline(foreign, tiny=True)
    assert (foreign / "model_index.json").read_text() == "{}"


# ------------------------------------------------------------------ guard

def test_refuse_random_weights_names_the_marked_folder_only(tiny_random, tmp_path):
    assert (tiny_random / RANDOM_WEIGHTS_MARKER).is_file()
    with pytest.raises(ValueError, match=str(tiny_random)):
        refuse_random_weights(str(tiny_random))
    for ok in (str(tmp_path), None, "", "timbrooks/instruct-pix2pix", str(tmp_path / "missing")):
        assert refuse_random_weights(ok) is None


def test_compensate_dataset_refuses_a_random_weight_pipeline_before_any_work(tiny_random, tmp_path):
    from dc3ray.config import CompensateConfig
    from dc3ray.pipeline.compensate import compensate_dataset
    from gpu_check import write_source_shards

    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    src = write_source_shards(images, ["a/0", "a/1"], ["a", "a"], tmp_path / "src")
    for comp in ("instructpix2pix", "img2img"):
        cfg = CompensateConfig(compensator=comp, model_path=str(tiny_random), steps=1, size=32)
        with pytest.raises(ValueError, match=RANDOM_WEIGHTS_MARKER):
            compensate_dataset(str(src), cfg, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()   # refused before reading or writing anything


# ------------------------------------------------------------------ record

def test_line_fit_recovers_fixed_cost_and_slope():
    fit = bench_diffusion_cost.line_fit([2, 4, 8], [10 + 6 * s for s in (2, 4, 8)], at=100)
    assert fit["fixed_s"] == pytest.approx(10) and fit["per_step_s"] == pytest.approx(6)
    assert fit["predicted_s"] == pytest.approx(610) and fit["max_abs_residual_s"] == pytest.approx(0, abs=1e-6)
    assert bench_diffusion_cost.line_fit([1], [0.5], at=100)["predicted_s"] is None


def test_flops_per_image_counts_two_edits_of_three_branches():
    f = {"unet_forward": 1, "vae_encode": 10, "vae_decode": 100, "text_encode": 1000}
    assert bench_diffusion_cost.flops_per_image(f, 100) == 2 * (300 + 10 + 100 + 2000)


def test_record_on_the_tiny_variant_with_one_step(tiny_random, tmp_path):
    bench_diffusion_cost.main(["--tiny", "--model", str(tiny_random), "--steps", "1", "--batch", "2",
                               "--size", "64", "--data", str(tmp_path / "no_data"),
                               "--attempts", "1", "--max-wait", "0",   # timing quality is not tested
                               "--out-dir", str(tmp_path)])
    rec = json.loads((tmp_path / "bench_diffusion_cost.json").read_text())
    assert {"name", "command", "machine", "date", "load_before", "load_after", "result"} <= set(rec)
    assert rec["name"] == "bench_diffusion_cost" and "--tiny" in rec["command"]
    r = rec["result"]
    assert {"args", "device", "dtype", "model", "runs", "fit", "fit_cpu", "unet_check", "flops",
            "gpu_estimate", "summary", "notes", "pipeline_load_s", "first_call_1_step_s",
            "peak_rss_mb"} <= set(r)
    assert (r["device"], r["dtype"], r["configured_steps"], r["images_from"]) == ("cpu", "float32", 100, "synthetic")
    assert r["model"]["random_weights"] is True and r["model"]["params"] == r["model"]["params_expected"]
    assert [(x["mode"], x["images_per_call"], x["steps"]) for x in r["runs"]] == [("single", 1, 1), ("batched", 2, 1)]
    for x in r["runs"]:
        assert x["attempts"] == 1 and isinstance(x["contended"], bool) and x["other_cores"] >= 0
        assert x["seconds"] > 0 and x["cpu_s"] > 0 and x["waiting_threads"] >= 0
        assert x["peak_memory_mib"] > 0 and x["unet_samples_per_step"] == 6 * x["images_per_call"]
        assert x["seconds_per_image"] == pytest.approx(x["seconds"] / x["images_per_call"], abs=1e-3)
    for fit in (r["fit"], r["fit_cpu"]):   # wall time and this process's CPU time
        assert set(fit) == {"single", "batched"} and fit["single"]["predicted_s"] is None  # one point
        assert fit["batched"]["points"][0][0] == 1
    f = r["flops"]
    assert all(isinstance(f[k], int) and f[k] > 0 for k in ("unet_forward", "vae_encode", "vae_decode",
                                                             "text_encode", "per_image_at_configured_steps"))
    assert f["latent"] == [8, 8] and 0 < f["unet_share"] < 1
    g = r["gpu_estimate"]
    assert "ESTIMATE" in g["kind"] and g["seconds_per_image"] > 0
    assert g["seconds_per_image"] == pytest.approx(
        f["per_image_at_configured_steps"] / (g["peak_tflops"] * 1e12 * g["assumed_utilisation"]), rel=1e-3)
    assert set(g["imagenet1k_gpu_hours"]) == {"ipc10", "ipc50"}
    assert len(r["summary"]) == 2 and all(isinstance(v, (int, float, str, bool, type(None)))
                                          for row in r["summary"] for v in row.values())
    assert all(isinstance(n, str) for n in r["notes"])
