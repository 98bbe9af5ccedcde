"""Models: forward shapes, feature/head split, weight loading errors, our checkpoint format."""
import pytest
import torch
from torch import nn

from dc3ray.config import STUDENTS
from dc3ray.core.models import (ConvNet, build_model, efficientnet_lite0_weights_path,
                                load_model_checkpoint, load_weights, replace_head, save_checkpoint,
                                split_model)

FEATURE_DIMS = {"convnet3": 128 * 4 * 4, "resnet18": 512, "resnet18_cifar": 512,
                "efficientnet_lite0": 1280}


@pytest.mark.parametrize("arch", STUDENTS)
def test_every_student_gives_logits_and_consistent_features_on_32px(arch):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=7, image_size=32).eval()
    x = torch.randn(3, 3, 32, 32)
    feature_fn, head = split_model(model)
    with torch.no_grad():
        logits = model(x)
        feats = feature_fn(x)
        assert logits.shape == (3, 7)
        assert feats.shape == (3, FEATURE_DIMS[arch])
        assert isinstance(head, nn.Linear) and head.out_features == 7
        torch.testing.assert_close(head(feats), logits)


def test_convnet_uses_instance_norm_avgpool_and_exposes_flat_features():
    net = ConvNet(10, width=16, depth=3, image_size=32)
    kinds = [type(m).__name__ for m in net.features]
    assert kinds == ["Conv2d", "GroupNorm", "ReLU", "AvgPool2d"] * 3 + ["Flatten"]
    assert net.features[1].num_groups == 16 and net.features[1].affine
    assert net.features(torch.zeros(2, 3, 32, 32)).shape == (2, 16 * 4 * 4)
    assert net.classifier.in_features == 16 * 4 * 4


def test_convnet_rejects_image_size_not_divisible_by_pooling():
    with pytest.raises(ValueError, match="image_size=30"):
        ConvNet(10, image_size=30)


def test_resnet18_cifar_stem_keeps_resolution_imagenet_stem_downsamples():
    cifar = build_model("resnet18_cifar", 10)
    imnet = build_model("resnet18", 10)
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, nn.Identity)
    assert imnet.conv1.kernel_size == (7, 7) and isinstance(imnet.maxpool, nn.MaxPool2d)


def test_efficientnet_lite0_loads_the_offline_imagenet_weights_and_gets_a_new_head():
    model = build_model("efficientnet_lite0", 10, pretrained=True)
    sd = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    torch.testing.assert_close(model._conv_stem.weight, sd["_conv_stem.weight"])
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert model._fc.weight.shape == (10, 1280)


def test_build_model_errors_name_the_arch():
    with pytest.raises(ValueError, match="'vgg'"):
        build_model("vgg", 10)
    with pytest.raises(ValueError, match="load_weights"):
        build_model("resnet18", 10, pretrained=True)


def test_load_weights_shape_mismatch_names_file_key_and_both_shapes(tmp_path):
    path = tmp_path / "ten.pth"
    torch.save(ConvNet(10, width=16).state_dict(), path)
    with pytest.raises(ValueError) as err:
        load_weights(ConvNet(5, width=16), path)
    msg = str(err.value)
    assert str(path) in msg and "classifier.weight" in msg
    assert "(10, 256)" in msg and "(5, 256)" in msg


def test_load_weights_missing_keys_raise_when_strict_and_are_reported_otherwise(tmp_path):
    sd = ConvNet(10, width=16).state_dict()
    del sd["classifier.bias"]
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match="classifier.bias"):
        load_weights(ConvNet(10, width=16), path)
    report = load_weights(ConvNet(10, width=16), path, strict=False)
    assert report == {"missing": ["classifier.bias"], "unexpected": []}


def test_load_weights_reads_rded_style_checkpoint_with_module_prefix(tmp_path):
    src = ConvNet(10, width=16)
    path = tmp_path / "rded.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()},
                "epoch": 3}, path)
    dst = ConvNet(10, width=16)
    load_weights(dst, path)
    torch.testing.assert_close(dst.classifier.weight, src.classifier.weight)


def test_load_weights_on_a_missing_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth does not exist"):
        load_weights(ConvNet(10, width=16), tmp_path / "nope.pth")


def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path):
    torch.manual_seed(1)
    model = build_model("convnet3", 4, width=16).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, "convnet3", 4, 32, extra={"val_top1": 12.5},
                           model_kwargs={"width": 16})
    loaded, meta = load_model_checkpoint(path)
    assert meta["arch"] == "convnet3" and meta["extra"]["val_top1"] == 12.5
    assert not loaded.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_load_model_checkpoint_rejects_a_plain_state_dict(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(ConvNet(10, width=16).state_dict(), path)
    with pytest.raises(ValueError, match="not a dc3ray model checkpoint"):
        load_model_checkpoint(path)


def test_replace_head_swaps_only_the_final_linear():
    model = build_model("resnet18", 1000)
    before = model.layer1[0].conv1.weight.clone()
    replace_head(model, 10)
    assert model.fc.out_features == 10 and model.fc.in_features == 512
    torch.testing.assert_close(model.layer1[0].conv1.weight, before)
