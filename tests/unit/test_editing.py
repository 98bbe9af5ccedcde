"""dc3ray.core.editing and tests/tiny_diffusion.py: seeded, batch-independent compensation."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dc3ray.config import COLD_WORDS, DEFAULT_TEMPLATE, WARM_WORDS, CompensateConfig
from dc3ray.core import editing
from dc3ray.core.imageio import decode_rgb


@pytest.fixture(scope="module")
def cifar8(cifar_root):
    """8 real CIFAR-10 train images (one per class for 8 classes) and their keys."""
    dirs = sorted(p for p in (cifar_root / "train").iterdir() if p.is_dir())[:8]
    files = [sorted(d.iterdir())[0] for d in dirs]
    return np.stack([decode_rgb(f.read_bytes()) for f in files]), [f"{f.parent.name}/{f.name}" for f in files]


@pytest.fixture(scope="module")
def tiny_p2p(tmp_path_factory):
    from tiny_diffusion import build_tiny_instruct_pix2pix
    # Narrow (16, 32) blocks: half the CPU time of the default (32, 64), same code path.
    return build_tiny_instruct_pix2pix(tmp_path_factory.mktemp("tiny") / "p2p", seed=0, channels=(16, 32))


@pytest.fixture(scope="module")
def tiny_i2i(tmp_path_factory):
    from tiny_diffusion import build_tiny_img2img
    return build_tiny_img2img(tmp_path_factory.mktemp("tiny") / "i2i", seed=0)   # default widths


def _p2p_cfg(path, **kw) -> CompensateConfig:
    base = dict(compensator="instructpix2pix", model_path=str(path), steps=2, size=16, batch_size=8)
    return CompensateConfig(**{**base, **kw})


# ------------------------------------------------------------------ prompts

def test_prompt_pair_is_seeded_by_run_seed_and_key():
    a = editing.prompt_pair(DEFAULT_TEMPLATE, WARM_WORDS, COLD_WORDS, 0, "cat/1.jpg")
    assert a == editing.prompt_pair(DEFAULT_TEMPLATE, WARM_WORDS, COLD_WORDS, 0, "cat/1.jpg")
    warm_word = a[0][len("Adjust the color hue to be "):-len(" and preserve all details and content")]
    assert warm_word in WARM_WORDS and any(a[1] == DEFAULT_TEMPLATE.replace("{p}", c) for c in COLD_WORDS)
    pairs = {editing.prompt_pair(DEFAULT_TEMPLATE, WARM_WORDS, COLD_WORDS, 0, f"k{i}") for i in range(60)}
    assert len(pairs) > 10        # keys spread over the 25 combinations
    pairs_other_seed = [editing.prompt_pair(DEFAULT_TEMPLATE, WARM_WORDS, COLD_WORDS, 1, f"k{i}") for i in range(60)]
    assert pairs_other_seed != [editing.prompt_pair(DEFAULT_TEMPLATE, WARM_WORDS, COLD_WORDS, 0, f"k{i}")
                                for i in range(60)]


def test_template_keeps_other_braces():
    assert editing.fill_template("{x} be {p}", "sunny") == "{x} be sunny"


# ------------------------------------------------------------------ classical

def test_classical_same_seed_gives_identical_bytes_at_the_input_size(cifar8):
    images, keys = cifar8
    cfg = CompensateConfig(compensator="classical", seed=3)
    a = editing.build_compensator(cfg).compensate(images, keys)
    b = editing.ClassicalCompensator(cfg).compensate(images.copy(), list(keys))
    assert len(a) == 8
    for ra, rb, src in zip(a, b, images):
        assert ra["image"].shape == src.shape and ra["image"].dtype == np.uint8
        assert ra["image"].tobytes() == rb["image"].tobytes()
        assert not np.array_equal(ra["image"], src)
        assert ra["seed"] == 3 and ra["warm_prompt"] != ra["cold_prompt"]
    c = editing.ClassicalCompensator(CompensateConfig(compensator="classical", seed=4)).compensate(images, keys)
    assert any(not np.array_equal(ra["image"], rc["image"]) for ra, rc in zip(a, c))


def test_classical_batch_of_8_equals_8_single_calls(cifar8):
    images, keys = cifar8
    comp = editing.ClassicalCompensator(CompensateConfig(compensator="classical"))
    batch = comp.compensate(images, keys)
    for i in range(8):
        assert np.array_equal(comp.compensate(images[i:i + 1], keys[i:i + 1])[0]["image"], batch[i]["image"])


def test_classical_accepts_images_of_different_sizes(cifar8):
    images, keys = cifar8
    big = np.kron(images[0], np.ones((2, 2, 1), np.uint8))          # 64 x 64
    out = editing.ClassicalCompensator(CompensateConfig()).compensate([images[1], big], keys[:2])
    assert out[0]["image"].shape == (32, 32, 3) and out[1]["image"].shape == (64, 64, 3)


def test_pass_through_returns_the_images_unchanged(cifar8):
    images, keys = cifar8
    out = editing.build_compensator(CompensateConfig(compensator="none")).compensate(images, keys)
    assert all(np.array_equal(r["image"], im) for r, im in zip(out, images))


def test_inputs_are_validated(cifar8):
    images, keys = cifar8
    comp = editing.ClassicalCompensator(CompensateConfig())
    with pytest.raises(ValueError, match="8 images but 7 keys"):
        comp.compensate(images, keys[:7])
    with pytest.raises(ValueError, match=r"images\[0\] must be uint8"):
        comp.compensate(images.astype(np.float32), keys)


def test_ramp_scales_with_the_image_side():
    assert editing.scaled_ramp(20, 256, 256, 256) == 20
    assert editing.scaled_ramp(20, 32, 32, 256) == 3
    assert editing.scaled_ramp(20, 512, 384, 256) == 30


# ------------------------------------------------------------------ tiny pipelines

def test_tiny_pipelines_save_and_load_back_through_from_pretrained(tiny_p2p, tiny_i2i):
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInstructPix2PixPipeline

    for path, cls, in_ch in ((tiny_p2p, StableDiffusionInstructPix2PixPipeline, 8),
                             (tiny_i2i, StableDiffusionImg2ImgPipeline, 4)):
        index = json.loads((path / "model_index.json").read_text())
        assert index["_class_name"] == cls.__name__
        pipe = cls.from_pretrained(path, safety_checker=None, requires_safety_checker=False)
        assert pipe.unet.config.in_channels == in_ch
        assert pipe.scheduler.__class__.__name__ == "EulerAncestralDiscreteScheduler"
        assert len(pipe.tokenizer) == 49408 and pipe.tokenizer.model_max_length == 77


def test_clip_tokenizer_built_offline_gives_the_real_clip_ids():
    from tiny_diffusion import build_clip_tokenizer

    tok = build_clip_tokenizer()
    # Reference ids of openai/clip-vit-* for this sentence.
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_missing_local_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist and does not look like a hub id"):
        editing.resolve_model_path(str(tmp_path / "no" / "model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        editing.resolve_model_path(str(tmp_path / "empty"))
    assert editing.resolve_model_path("timbrooks/instruct-pix2pix") == "timbrooks/instruct-pix2pix"
    with pytest.raises(ValueError, match="compensate.model_path is empty"):
        editing.resolve_model_path(None)


# ------------------------------------------------------------------ diffusion compensators

def test_instructpix2pix_same_seed_gives_identical_bytes(tiny_p2p, cifar8):
    images, keys = cifar8
    cfg = _p2p_cfg(tiny_p2p)
    a = editing.build_compensator(cfg, device="cpu").compensate(images[:4], keys[:4])
    b = editing.DiffusionCompensator(cfg, device="cpu").compensate(images[:4], keys[:4])  # a fresh load
    for ra, rb in zip(a, b):
        assert ra["image"].shape == (32, 32, 3)
        assert ra["image"].tobytes() == rb["image"].tobytes()
    c = editing.DiffusionCompensator(_p2p_cfg(tiny_p2p, seed=1), device="cpu").compensate(images[:4], keys[:4])
    assert all(not np.array_equal(ra["image"], rc["image"]) for ra, rc in zip(a, c))


def test_instructpix2pix_batch_of_8_equals_8_single_calls(tiny_p2p, cifar8):
    """Noise is drawn per image from (seed, key), so batching draws the same noise; batched
    kernels may round differently (~1e-6), which can move a rare pixel by one level."""
    images, keys = cifar8
    comp = editing.DiffusionCompensator(_p2p_cfg(tiny_p2p, blend="none"), device="cpu")
    batch = np.stack([r["image"] for r in comp.compensate(images, keys)])
    single = np.stack([comp.compensate(images[i:i + 1], keys[i:i + 1])[0]["image"] for i in range(8)])
    diff = np.abs(batch.astype(int) - single.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    # Reversed input order: the same set of keys gives the same bytes in the same key order.
    rev = comp.compensate(images[::-1].copy(), keys[::-1])
    assert all(np.array_equal(r["image"], batch[7 - i]) for i, r in enumerate(rev))


def test_img2img_compensator_is_seeded_and_keeps_the_input_size(tiny_i2i, cifar8):
    images, keys = cifar8
    cfg = CompensateConfig(compensator="img2img", model_path=str(tiny_i2i), steps=4, strength=0.5,
                           size=16, batch_size=4)
    comp = editing.build_compensator(cfg, device="cpu")
    assert isinstance(comp, editing.Img2ImgCompensator)
    a, b = comp.compensate(images[:2], keys[:2]), comp.compensate(images[:2], keys[:2])
    assert a[0]["image"].shape == (32, 32, 3)
    assert all(ra["image"].tobytes() == rb["image"].tobytes() for ra, rb in zip(a, b))
    with pytest.raises(ValueError, match="leaves no denoising step"):
        editing.Img2ImgCompensator(CompensateConfig(compensator="img2img", model_path=str(tiny_i2i),
                                                    steps=1, strength=0.5))
