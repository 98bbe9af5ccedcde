"""Compensation control (issue 26): edit strength, the fidelity gate and diverse word assignment,
on real CIFAR-10 images, without Ray (the actor is called as a plain object)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import save_random_teacher
from dc3ray.config import CompensateConfig, ConfigError, to_dict
from dc3ray.core import color, editing, schema
from dc3ray.core.imageio import decode_rgb
from dc3ray.core.seeding import rng_for
from dc3ray.core.shards import read_shards

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cifar50(cifar_root):
    """50 real CIFAR-10 train images (5 a class), their keys and labels."""
    files, labels = [], []
    for c, d in enumerate(sorted(p for p in (cifar_root / "train").iterdir() if p.is_dir())):
        files += sorted(d.iterdir())[:5]
        labels += [c] * 5
    images = np.stack([decode_rgb(f.read_bytes()) for f in files])
    return images, [f"{f.parent.name}/{f.name}" for f in files], np.array(labels)


@pytest.fixture(scope="module")
def batch12(cifar_small_shards):
    """12 real rows of the shared shards as the numpy batch an actor gets."""
    t = read_shards(cifar_small_shards).slice(0, 12)
    return {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}


@pytest.fixture(scope="module")
def gate_model(tmp_path_factory) -> str:
    return str(save_random_teacher(tmp_path_factory.mktemp("gate") / "teacher.pt"))


def _chroma(images: np.ndarray) -> np.ndarray:
    lab = color.rgb_to_oklab(images)
    return np.hypot(lab[..., 1], lab[..., 2])


# ------------------------------------------------------------------ settings

def test_strength_defaults_keep_todays_edits_and_settings_are_validated():
    assert CompensateConfig().edit_strength() == 1.0
    assert CompensateConfig(compensator="instructpix2pix", model_path="m").edit_strength() == 1.0
    assert CompensateConfig(compensator="img2img", model_path="m").edit_strength() == 0.5
    assert CompensateConfig(strength=0.0).edit_strength() == 0.0
    with pytest.raises(ConfigError, match="strength must be in"):
        CompensateConfig(strength=1.5)
    with pytest.raises(ConfigError, match="needs compensate.gate_model"):
        CompensateConfig(gate_threshold=0.5)
    with pytest.raises(ConfigError, match="gate_tries"):
        CompensateConfig(gate_tries=0)
    with pytest.raises(ConfigError, match="gate_backoff"):
        CompensateConfig(gate_backoff=0.0)
    with pytest.raises(ConfigError, match="assignment"):
        from dc3ray.config import from_dict
        from_dict(CompensateConfig, {"assignment": "sorted"})


def test_attempt_zero_draws_the_words_of_the_original_draw():
    warm, cold = ("a", "b", "c"), ("x", "y", "z")
    for i in range(20):
        rng = rng_for(3, f"k{i}", "prompts")  # what choose_words drew before the gate existed
        want = (warm[int(rng.integers(3))], cold[int(rng.integers(3))])
        assert editing.choose_words(warm, cold, 3, f"k{i}") == want
        assert editing.choose_words(warm, cold, 3, f"k{i}", attempt=0) == want
    retries = [editing.choose_words(warm, cold, 3, f"k{i}", attempt=1) for i in range(20)]
    assert retries != [editing.choose_words(warm, cold, 3, f"k{i}") for i in range(20)]


# ------------------------------------------------------------------ strength

def test_strength_zero_returns_the_source_bytes(batch12):
    from dc3ray.pipeline.compensate import CompensatorActor

    out = CompensatorActor(to_dict(CompensateConfig(strength=0.0)))(batch12)
    assert list(out[schema.IMAGE]) == list(batch12[schema.IMAGE])  # the bytes, not a re-encode
    assert set(out["variant"]) == {"source"} and set(out["outcome"]) == {"kept_source"}
    assert set(out["tries"]) == {0} and set(out["strength"]) == {0.0}


def test_default_strength_records_one_accepted_edit_per_image(batch12):
    from dc3ray.pipeline.compensate import CompensatorActor

    out = CompensatorActor(to_dict(CompensateConfig()))(batch12)
    assert set(out["variant"]) == {"compensated"} and set(out["outcome"]) == {"accepted"}
    assert set(out["strength"]) == {1.0} and set(out["tries"]) == {1}
    assert np.isnan(out["p_source"]).all() and np.isnan(out["p_edit"]).all()  # no gate
    assert all(b[:8] == b"\x89PNG\r\n\x1a\n" for b in out[schema.IMAGE])


def test_strength_moves_the_colour_statistics_monotonically(cifar50):
    images, keys, _ = cifar50
    chroma0 = _chroma(images)
    d_chroma, d_colorful = [], []
    for s in (0.0, 0.25, 0.5, 1.0):
        out = np.stack([r["image"] for r in
                        editing.ClassicalCompensator(CompensateConfig(strength=s)).compensate(images, keys)])
        d_chroma.append(float(np.abs(_chroma(out) - chroma0).mean()))
        d_colorful.append(float(np.mean([abs(color.colorfulness(o) - color.colorfulness(i))
                                         for o, i in zip(out, images)])))
    assert d_chroma[0] == 0.0 and d_colorful[0] == 0.0
    assert all(a < b for a, b in zip(d_chroma, d_chroma[1:])), d_chroma
    assert all(a < b for a, b in zip(d_colorful, d_colorful[1:])), d_colorful


def test_instructpix2pix_strength_mixes_each_edit_with_the_source(cifar50, tmp_path):
    from tiny_diffusion import build_tiny_instruct_pix2pix

    images, keys, _ = cifar50
    path = build_tiny_instruct_pix2pix(tmp_path / "p2p", seed=0, channels=(16, 32))
    # blend none and size 32 (the input size): the output is the warm edit itself, unresized
    cfg = dict(compensator="instructpix2pix", model_path=str(path), steps=2, size=32, blend="none")
    full = editing.build_compensator(CompensateConfig(**cfg), device="cpu").compensate(images[:3], keys[:3])
    half = editing.build_compensator(CompensateConfig(**cfg, strength=0.5), device="cpu") \
        .compensate(images[:3], keys[:3])
    none = editing.build_compensator(CompensateConfig(**cfg, strength=0.0), device="cpu") \
        .compensate(images[:3], keys[:3])
    for f, h, n, src in zip(full, half, none, images[:3]):
        assert np.array_equal(h["image"], color.interpolate(src, f["image"], 0.5))
        assert h["strength"] == 0.5 and f["strength"] == 1.0
        assert np.array_equal(n["image"], src)
        assert (n["outcome"], n["tries"]) == ("kept_source", 0)


# ------------------------------------------------------------------ fidelity gate

def test_a_gate_that_rejects_everything_retries_then_keeps_every_source(cifar50):
    images, keys, labels = cifar50
    cfg = CompensateConfig(gate_threshold=2.0, gate_model="unused", gate_tries=3, gate_backoff=0.5)
    calls = []

    def score(ims, labs):  # every image, source or edit, gets p = 0.5 < 2 x 0.5
        calls.append(len(ims))
        return np.full(len(ims), 0.5)

    recs = editing.ClassicalCompensator(cfg).compensate(images[:10], keys[:10], labels=labels[:10],
                                                        score=score)
    assert calls == [10, 10, 10, 10]  # the sources once, then three rounds of edits
    for r, src, key in zip(recs, images, keys):
        assert r["outcome"] == "kept_source" and np.array_equal(r["image"], src) and r["tries"] == 3
        assert r["strength"] == 0.25 and (r["p_source"], r["p_edit"]) == (0.5, 0.5)
        w, c = editing.choose_words(cfg.warm, cfg.cold, cfg.seed, key, attempt=2)  # the last try
        assert (r["warm_prompt"], r["cold_prompt"]) == (editing.fill_template(cfg.template, w),
                                                         editing.fill_template(cfg.template, c))


def test_a_rejected_edit_is_retried_with_the_next_words_at_a_lower_strength(cifar50):
    images, keys, labels = cifar50
    cfg = CompensateConfig(gate_threshold=0.9, gate_model="unused", gate_tries=3, gate_backoff=0.5)
    answers = iter([np.ones(4), np.zeros(4), np.ones(4)])  # sources; attempt 0 fails; 1 passes
    recs = editing.ClassicalCompensator(cfg).compensate(images[:4], keys[:4], labels=labels[:4],
                                                        score=lambda ims, labs: next(answers))
    for r, src, key in zip(recs, images, keys):
        w, c = editing.choose_words(cfg.warm, cfg.cold, cfg.seed, key, attempt=1)
        want = editing.blend_pair(color.shift_color(src, w, 0.5, kind="warm"),
                                  color.shift_color(src, c, 0.5, kind="cold"), cfg, key)
        assert (r["outcome"], r["tries"], r["strength"]) == ("accepted", 2, 0.5)
        assert np.array_equal(r["image"], want)


def test_a_gate_that_accepts_everything_changes_no_byte(cifar50):
    images, keys, labels = cifar50
    plain = editing.ClassicalCompensator(CompensateConfig()).compensate(images, keys)
    gated = editing.ClassicalCompensator(CompensateConfig(gate_threshold=0.5, gate_model="x")) \
        .compensate(images, keys, labels=labels, score=lambda ims, labs: np.ones(len(ims)))
    assert all(np.array_equal(a["image"], b["image"]) for a, b in zip(plain, gated))
    assert {r["outcome"] for r in gated} == {"accepted"} and {r["tries"] for r in gated} == {1}


def test_the_gate_needs_its_classifier_and_labels(cifar50):
    images, keys, labels = cifar50
    comp = editing.ClassicalCompensator(CompensateConfig(gate_threshold=0.5, gate_model="x"))
    with pytest.raises(ValueError, match="needs a classifier"):
        comp.compensate(images[:2], keys[:2], labels=labels[:2])
    with pytest.raises(ValueError, match="one label per image"):
        comp.compensate(images[:2], keys[:2], score=lambda ims, labs: np.ones(len(ims)))


def test_a_real_classifier_gate_that_rejects_everything_keeps_the_source_bytes_and_says_so(
        batch12, gate_model):
    import pyarrow as pa
    from dc3ray.pipeline.compensate import COMPENSATED_SCHEMA, CompensatorActor, edit_summary

    cfg = CompensateConfig(gate_threshold=1e6, gate_model=gate_model, gate_tries=2)
    out = CompensatorActor(to_dict(cfg))(batch12)
    assert list(out[schema.IMAGE]) == list(batch12[schema.IMAGE])
    assert set(out["outcome"]) == {"kept_source"} and set(out["variant"]) == {"source"}
    assert set(out["tries"]) == {2} and set(out["strength"]) == {0.5}
    assert ((out["p_source"] > 0) & (out["p_source"] <= 1)).all() and np.isfinite(out["p_edit"]).all()
    summary = edit_summary(pa.Table.from_pydict(out, schema=COMPENSATED_SCHEMA), cfg)
    assert (summary["acceptance_rate"], summary["accepted"], summary["kept_source"]) == (0.0, 0, 12)


def test_checkpoint_scorer_gives_the_softmax_of_the_true_class(cifar50, gate_model):
    import torch
    from dc3ray.core.models import load_model_checkpoint
    from dc3ray.core.training import norm_stats, to_float

    images, _, labels = cifar50
    p = editing.checkpoint_scorer(gate_model)(list(images[:8]), labels[:8])
    model, _ = load_model_checkpoint(gate_model)
    with torch.no_grad():
        ref = torch.softmax(model(to_float(images[:8], *norm_stats("cifar"))), 1)
    assert np.allclose(p, ref[torch.arange(8), torch.as_tensor(labels[:8])].numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="do not fit the 10 classes"):
        editing.checkpoint_scorer(gate_model)(list(images[:1]), [10])


# ------------------------------------------------------------------ diverse assignment

def test_diverse_assignment_raises_the_set_hue_entropy_over_random(cifar50):
    images, keys, _ = cifar50
    cfg = CompensateConfig()
    words = editing.assign_diverse(images, keys, cfg)
    assert words == editing.assign_diverse(images[::-1].copy(), keys[::-1], cfg)  # a set-level choice
    assert all(w in cfg.warm and c in cfg.cold for w, c in words.values())
    comp = editing.ClassicalCompensator(cfg)
    random = np.stack([r["image"] for r in comp.compensate(images, keys)])
    diverse = np.stack([r["image"] for r in comp.compensate(images, keys, words=[words[k] for k in keys])])
    assert color.hue_entropy(diverse) > color.hue_entropy(random) + 0.2


# ------------------------------------------------------------------ sweep file, metrics

def test_the_compensation_sweep_file_loads_with_every_axis():
    from dc3ray.config import load_sweep_config

    s = load_sweep_config(REPO / "configs" / "sweep_compensation_cifar10.yaml")
    assert {"compensate.strength", "compensate.gate_threshold", "compensate.warm", "compensate.cold",
            "compensate.assignment", "compensate.blend"} <= set(s.grid)
    assert 0.0 in s.grid["compensate.gate_threshold"] and len(s.grid["compensate.warm"]) >= 2
    assert s.base.select.ipc == 10 and not s.base.eval.hard_labels
    assert s.base.compensate.gate_model == "auto"
    assert len(s.points()) == len(s.points(s.condensation_keys))  # one trial per condensed set
    for w in s.grid["compensate.warm"] + s.grid["compensate.cold"]:  # built-in shifts, no generic
        assert all(color.shift_for_word(word) for word in w)


def test_condense_metrics_carry_the_acceptance_rate():
    from dc3ray.pipeline.tracking import condense_metrics

    manifest = {"stages": {"compensate": {"seconds": 1.0, "acceptance_rate": 0.75,
                                          "mean_strength": 0.5, "mean_tries": 1.5,
                                          "resized": [], "digest": "abc"}},
                "images": [], "total_seconds": 2.0}
    m = condense_metrics(json.loads(json.dumps(manifest)))
    assert m["compensate.acceptance_rate"] == 0.75 and m["compensate.mean_tries"] == 1.5
