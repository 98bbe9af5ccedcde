"""Gradient factors and embedding backbones (no Ray; tiny models, offline weights only)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dc3ray.config import EmbedConfig, GradConfig
from dc3ray.core.features import (
    build_embedder, build_grad_model, gradient_factors, to_model_input,
)
from dc3ray.core.selection import factored_similarity, materialised_gradient


def tiny_model(num_classes: int = 5, dim: int = 6, seed: int = 0):
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, dim), nn.Tanh())
    head = nn.Linear(dim, num_classes)
    return body.eval(), head.eval()


def batch(n: int = 8, num_classes: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, num_classes, (n,), generator=g)


def per_sample_head_grads(body, head, x, y, faithful=False):
    """Autograd reference: each sample's (dL/db, dL/dW) for the head, flattened -> (N, C + C*D)."""
    rows = []
    for i in range(len(x)):
        head.zero_grad()
        z = head(body(x[i:i + 1]))
        loss = F.cross_entropy(torch.softmax(z, 1) if faithful else z, y[i:i + 1])
        loss.backward()
        rows.append(torch.cat([head.bias.grad.flatten(), head.weight.grad.flatten()]).clone())
    return torch.stack(rows).numpy()


def test_analytic_e_equals_autograd_of_cross_entropy():
    body, head = tiny_model()
    x, y = batch()
    e, h = gradient_factors(body, head, x, y)
    z = head(body(x)).detach().requires_grad_(True)
    (expected,) = torch.autograd.grad(F.cross_entropy(z, y, reduction="sum"), z)
    torch.testing.assert_close(e, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h, body(x).detach())
    torch.testing.assert_close(e.sum(1), torch.zeros(len(x)), atol=1e-6, rtol=0)


@pytest.mark.parametrize("faithful", [False, True])
def test_factors_rebuild_the_true_last_layer_gradient(faithful):
    body, head = tiny_model()
    x, y = batch(6)
    e, h = gradient_factors(body, head, x, y, faithful=faithful)
    g = materialised_gradient(e.numpy(), h.numpy())
    np.testing.assert_allclose(g, per_sample_head_grads(body, head, x, y, faithful), atol=1e-6)
    # ... so the factored similarity is the cosine of the real parameter gradients.
    ref = per_sample_head_grads(body, head, x, y, faithful)
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(factored_similarity(e.numpy(), h.numpy()), 0.5 + 0.5 * ref @ ref.T,
                               atol=1e-5)


def test_faithful_gradient_differs_from_the_default():
    body, head = tiny_model()
    x, y = batch()
    e0, _ = gradient_factors(body, head, x, y)
    e1, _ = gradient_factors(body, head, x, y, faithful=True)
    assert not torch.allclose(e0, e1, atol=1e-3)


def test_labels_outside_the_head_are_rejected():
    body, head = tiny_model(num_classes=3)
    x, _ = batch(2)
    with pytest.raises(ValueError, match=r"\[0, 3\) for a 3-way head"):
        gradient_factors(body, head, x, torch.tensor([0, 3]))


def test_to_model_input_normalises_and_resizes():
    img = np.full((2, 4, 4, 3), 255, np.uint8)
    x = to_model_input(img, 8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), torch.device("cpu"))
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.ones_like(x))
    with pytest.raises(ValueError, match="uint8"):
        to_model_input(img.astype(np.float32), 8, (0, 0, 0), (1, 1, 1), torch.device("cpu"))


# ------------------------------------------------------------------ real backbones (offline)

def images(n=4, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_efficientnet_embedder_gives_1280_d_deterministic_features():
    emb = build_embedder(EmbedConfig(backbone="efficientnet_lite0", image_size=32), "cpu")
    imgs = images()
    a = emb(imgs)
    assert a.shape == (4, 1280) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, emb(imgs))
    np.testing.assert_allclose(emb(imgs[:1]), a[:1], rtol=1e-4, atol=1e-5)  # batch-independent
    assert emb.input_size == 32


def test_imagenet_backbone_gets_a_zero_head_by_default_and_a_seeded_random_one_when_faithful():
    cfg = GradConfig(backbone="efficientnet_lite0", image_size=32)
    zero = build_grad_model(cfg, 10, "cpu")
    assert zero.head_kind == "zero"
    e, h = zero(images(3), np.array([0, 4, 9]))
    assert e.shape == (3, 10) and h.shape == (3, 1280)
    expected = np.full((3, 10), 0.1, np.float32)
    expected[[0, 1, 2], [0, 4, 9]] -= 1.0
    np.testing.assert_allclose(e, expected, atol=1e-6)
    r1 = build_grad_model(cfg, 10, "cpu", faithful=True, head_seed=3)
    r2 = build_grad_model(cfg, 10, "cpu", faithful=True, head_seed=3)
    assert r1.head_kind == "random"
    torch.testing.assert_close(r1.head.weight, r2.head.weight)
    assert r1.head.weight.abs().sum() > 0
    assert build_grad_model(cfg, 1000, "cpu").head_kind == "pretrained"


def _tiny_teacher(path, num_classes=10):
    from dc3ray.core.models import build_model, save_checkpoint
    torch.manual_seed(0)
    model = build_model("convnet3", num_classes, image_size=16, width=8)
    save_checkpoint(path, model, "convnet3", num_classes, 16, extra={"norm": "cifar"},
                    model_kwargs={"width": 8})
    return model


def test_teacher_checkpoint_supplies_features_and_its_trained_head(tmp_path):
    ckpt = tmp_path / "teacher.pt"
    model = _tiny_teacher(ckpt)
    gm = build_grad_model(GradConfig(backbone="teacher", model_path=str(ckpt)), 10, "cpu")
    assert gm.head_kind == "checkpoint" and gm.input_size == 16  # the checkpoint's size wins
    imgs, labels = images(5, 16), np.arange(5)
    e, h = gm(imgs, labels)
    from dc3ray.core.training import to_float
    with torch.no_grad():
        z = model.eval()(to_float(imgs))
    expected = torch.softmax(z, 1).numpy()
    expected[np.arange(5), labels] -= 1
    np.testing.assert_allclose(e, expected, atol=1e-5)
    assert h.shape == (5, 8 * 2 * 2)
    emb = build_embedder(EmbedConfig(backbone="teacher", model_path=str(ckpt)), "cpu")
    np.testing.assert_allclose(emb(imgs), h, atol=1e-5)


def test_teacher_with_another_class_count_is_refused(tmp_path):
    ckpt = tmp_path / "teacher.pt"
    _tiny_teacher(ckpt, num_classes=7)
    with pytest.raises(ValueError, match="7-way head but the dataset has 10 classes"):
        build_grad_model(GradConfig(backbone="teacher", model_path=str(ckpt)), 10, "cpu")


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        build_grad_model(GradConfig(backbone="teacher", model_path=str(tmp_path / "nope.pt")),
                         10, "cpu")


def _tiny_vae(path):
    from diffusers import AutoencoderKL
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
                        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                        sample_size=16)
    vae.save_pretrained(path)
    return vae


def test_vae_embedder_flattens_the_latent_mean(tmp_path):
    vae = _tiny_vae(tmp_path / "vae")
    emb = build_embedder(EmbedConfig(backbone="vae", model_path=str(tmp_path / "vae"),
                                     image_size=16), "cpu")
    imgs = images(3, 16)
    out = emb(imgs)
    assert out.shape == (3, 4 * 8 * 8)  # one downsampling: 16 px -> 8x8 latents
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        ref = vae.eval().encode(x).latent_dist.mean.flatten(1).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-5)
    # faithful: stored size in, dataset-normalised, nearest-upsampled inside the embedder.
    faithful = build_embedder(EmbedConfig(backbone="vae", model_path=str(tmp_path / "vae"),
                                          image_size=16), "cpu", faithful=True)
    assert faithful.input_size is None
    small = images(2, 8)
    assert faithful(small).shape == (2, 4 * 8 * 8)
    assert not np.allclose(faithful(np.repeat(np.repeat(small, 2, 1), 2, 2)),
                           emb(np.repeat(np.repeat(small, 2, 1), 2, 2)))


@pytest.mark.parametrize(("side", "norm"), [(32, "cifar"), (64, "imagenet")])
def test_a_checkpoint_recording_no_norm_is_normalised_by_its_input_size(tmp_path, side, norm):
    """The same rule evaluation applies (core.training.norm_for_side), not a CIFAR default."""
    from dc3ray.core.models import build_model, save_checkpoint, split_model
    from dc3ray.core.training import norm_stats
    torch.manual_seed(0)
    model = build_model("convnet3", 10, image_size=side).eval()
    ckpt = save_checkpoint(tmp_path / "c.pt", model, "convnet3", 10, side)
    embed = build_embedder(EmbedConfig(backbone="convnet3", model_path=str(ckpt),
                                       image_size=side, fp16=False))
    images = np.random.default_rng(0).integers(0, 256, (2, side, side, 3), dtype=np.uint8)
    with torch.no_grad():
        want = split_model(model)[0](to_model_input(images, side, *norm_stats(norm), "cpu"))
    np.testing.assert_allclose(embed(images), want.flatten(1).numpy(), rtol=1e-5, atol=1e-5)
