"""dc3ray.core.lora on a tiny random text-to-image pipeline: adapter training, resume, save/load, sampling."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from dc3ray.core import lora
from dc3ray.core.imageio import decode_rgb

SIZE = 32          # training resolution: latents 16 x 16 with the tiny VAE
CLASSES = ["airplane", "automobile"]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from tiny_diffusion import build_tiny_text2img
    # Narrow (16, 32) blocks keep CPU time low; the code path is the one real weights take.
    return build_tiny_text2img(tmp_path_factory.mktemp("tiny") / "sd", seed=0, channels=(16, 32))


@pytest.fixture(scope="module")
def images(cifar_root):
    """3 real CIFAR-10 train images of each of 2 classes -> uint8 (6, 32, 32, 3), labels."""
    ims, labels = [], []
    for label, name in enumerate(CLASSES):
        for f in sorted((cifar_root / "train" / name).iterdir())[:3]:
            ims.append(decode_rgb(f.read_bytes()))
            labels.append(label)
    return np.stack(ims), np.asarray(labels)


def _setup(base, images, pipe=None):
    pipe = pipe or lora.load_text2img(base, "cpu", dtype=torch.float32)
    params = lora.add_lora(pipe.unet, rank=4, seed=0)
    data = lora.prepare_training_data(pipe, images[0], images[1], CLASSES, SIZE, torch.device("cpu"))
    return pipe, lora.lora_optimizer(params, lr=1e-3), data, lora.noise_scheduler(pipe)


def _base_weights(unet) -> dict:
    # peft renames a wrapped layer's weight to '<layer>.base_layer.weight'; map it back.
    return {k.replace(".base_layer", ""): v.detach().clone() for k, v in unet.state_dict().items()
            if "lora_" not in k}


@pytest.fixture(scope="module")
def trained(tiny_base, images):
    """A pipeline after 4 LoRA steps, plus snapshots: the base weights before, the adapter at
    init, and the adapter + optimizer state after step 2."""
    pipe = lora.load_text2img(tiny_base, "cpu", dtype=torch.float32)
    base_before = _base_weights(pipe.unet)
    pipe, opt, data, sched = _setup(tiny_base, images, pipe)
    init = lora.lora_state_dict(pipe.unet)
    losses = [lora.lora_step(pipe.unet, sched, data, opt, s, seed=0, batch_size=4) for s in range(2)]
    at2 = {"adapter": lora.lora_state_dict(pipe.unet), "optimizer": copy.deepcopy(opt.state_dict())}
    losses += [lora.lora_step(pipe.unet, sched, data, opt, s, seed=0, batch_size=4) for s in range(2, 4)]
    return {"pipe": pipe, "base_before": base_before, "init": init, "at2": at2, "losses": losses,
            "final": lora.lora_state_dict(pipe.unet)}


def test_training_data_has_latents_per_image_and_an_embedding_per_class(trained, images):
    data = lora.prepare_training_data(trained["pipe"], images[0], images[1], CLASSES, SIZE, torch.device("cpu"))
    assert data.latent_mean.shape == data.latent_std.shape == (6, 4, SIZE // 2, SIZE // 2)
    assert (data.latent_std > 0).all() and data.text_emb.shape[:2] == (2, 77)
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_lora_steps_change_every_adapter_weight_and_no_base_weight(trained):
    init, final = trained["init"], trained["final"]
    assert len(init) > 0 and set(init) == set(final)
    assert all(k.endswith(("lora_A.weight", "lora_B.weight")) for k in init)
    assert all(not v.any() for k, v in init.items() if "lora_B" in k)       # starts as the base model
    assert all(not torch.equal(init[k], final[k]) for k in init)
    after = _base_weights(trained["pipe"].unet)
    assert set(after) == set(trained["base_before"])
    assert all(torch.equal(trained["base_before"][k], v) for k, v in after.items())
    assert all(np.isfinite(trained["losses"]))


def test_adapter_init_depends_on_the_seed_only(tiny_base, trained):
    pipe = lora.load_text2img(tiny_base, "cpu", dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(12345)                   # the global stream must not matter
        lora.add_lora(pipe.unet, rank=4, seed=0)
    again = lora.lora_state_dict(pipe.unet)
    assert all(torch.equal(again[k], v) for k, v in trained["init"].items())


def test_resuming_from_adapter_and_optimizer_state_matches_uninterrupted_training(tiny_base, images, trained):
    pipe, opt, data, sched = _setup(tiny_base, images)
    lora.set_lora_state_dict(pipe.unet, trained["at2"]["adapter"])
    opt.load_state_dict(trained["at2"]["optimizer"])
    for s in range(2, 4):
        lora.lora_step(pipe.unet, sched, data, opt, s, seed=0, batch_size=4)
    resumed = lora.lora_state_dict(pipe.unet)
    for k, v in trained["final"].items():
        torch.testing.assert_close(resumed[k], v, rtol=0, atol=1e-7)


def test_saved_adapter_loads_into_a_fresh_pipeline_and_generates_the_same_images(tiny_base, trained, tmp_path):
    folder = lora.save_lora(trained["pipe"].unet, tmp_path / "lora")
    assert (folder / lora.LORA_WEIGHTS_FILE).is_file()
    kw = dict(class_names=CLASSES, n_per_class=2, seed=0, size=16, steps=2, batch_size=4)
    tuned = lora.generate(trained["pipe"], **kw)
    loaded = lora.generate(lora.load_lora(lora.load_text2img(tiny_base, "cpu"), folder), **kw)
    base = lora.generate(lora.load_text2img(tiny_base, "cpu"), **kw)
    np.testing.assert_array_equal(loaded["images"], tuned["images"])
    assert np.abs(base["images"].astype(int) - tuned["images"]).max() > 0


def test_generation_shapes_labels_keys_and_seeding(trained):
    pipe = trained["pipe"]
    out = lora.generate(pipe, CLASSES, n_per_class=2, seed=0, size=16, steps=2, batch_size=4)
    assert out["images"].shape == (4, 16, 16, 3) and out["images"].dtype == np.uint8
    assert out["labels"].tolist() == [0, 0, 1, 1]
    assert out["keys"] == ["airplane/00000", "airplane/00001", "automobile/00000", "automobile/00001"]
    assert out["prompts"][2] == "a photo of a automobile"
    again = lora.generate(pipe, CLASSES, n_per_class=2, seed=0, size=16, steps=2, batch_size=4)
    np.testing.assert_array_equal(again["images"], out["images"])
    # One generator per (seed, class, index): batching does not change what is drawn (a level
    # of rounding at most), a subset of the items gives the same images, another seed others.
    single = lora.generate(pipe, CLASSES, n_per_class=2, seed=0, size=16, steps=2, batch_size=1)
    assert np.abs(single["images"].astype(int) - out["images"]).max() <= 1
    part = lora.generate_items(pipe, [("automobile", 1, 1)], seed=0, size=16, steps=2)
    assert np.abs(part["images"][0].astype(int) - out["images"][3]).max() <= 1
    other = lora.generate(pipe, CLASSES, n_per_class=2, seed=1, size=16, steps=2, batch_size=4)
    assert not np.array_equal(other["images"], out["images"])


def test_prompts_and_bad_inputs_are_explained(tmp_path):
    assert lora.class_prompt("golden_retriever") == "a photo of a golden retriever"
    assert lora.class_prompt("cat", "{class}, photo") == "cat, photo"
    with pytest.raises(ValueError, match="placeholder"):
        lora.class_prompt("cat", "a photo")
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        lora.resolve_base(tmp_path)
    with pytest.raises(FileNotFoundError, match="--base=.* does not exist"):
        lora.resolve_base(tmp_path / "missing" / "sd")
    with pytest.raises(FileNotFoundError, match="pytorch_lora_weights"):
        lora.load_lora(object(), tmp_path)
    with pytest.raises(ValueError, match="n_per_class"):
        lora.generation_items({"cat": 0}, 0)
