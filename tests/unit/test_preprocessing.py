"""Preprocessing as the reference does it: one normalisation per evaluation (the teacher's, or
the set's by stored size), held-out images resized and centre-cropped, training crops taken from
the stored resolution, the teacher fed at its own input size. CIFAR (stored 32 = trained 32)
keeps today's numbers exactly."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dc3ray.config import CondenseConfig, EvalConfig, load_config
from dc3ray.core import datasets
from dc3ray.core.imageio import eval_view, resize_center_crop
from dc3ray.core.models import build_model, save_checkpoint
from dc3ray.core.training import (_rrc_box, augment_batch, norm_for_side, random_resized_crop,
                                  recorded_norm, train_one_epoch_kd)
from dc3ray.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def image_folder(root: Path, side: int, per_class: int = 2, classes: int = 2,
                 sides: list[int] | None = None) -> Path:
    """ImageFolder of random PNGs, `side` px (or sides[i] for the i-th image written)."""
    k = 0
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            s = sides[k] if sides else side
            Image.fromarray(rgb(s, s, seed=k)).save(root / f"c{c}" / f"{i}.png")
            k += 1
    return root


# --- held-out view -------------------------------------------------------------------------

@pytest.mark.parametrize("shape, size", [((224, 224), 112), ((224, 224), 128), ((224, 300), 112),
                                         ((333, 224), 160)])
def test_val_view_of_a_larger_image_is_torchvision_resize_then_centre_crop(shape, size):
    from torchvision import transforms
    arr = rgb(*shape)
    ref = transforms.Compose([transforms.Resize(round(size / 0.875)), transforms.CenterCrop(size)])
    expected = np.asarray(ref(Image.fromarray(arr)))
    assert eval_view(arr, size).shape == (size, size, 3)
    np.testing.assert_array_equal(eval_view(arr, size), expected)
    np.testing.assert_array_equal(resize_center_crop(arr, size), expected)


def test_real_imagenette_val_images_at_112_are_the_reference_view(imagenette_root, tmp_path):
    from torchvision import transforms
    ref = transforms.Compose([transforms.Resize(128), transforms.CenterCrop(112)])
    files = sorted((imagenette_root / "val").glob("*/*.JPEG"))[:6]
    for i, f in enumerate(files):
        (tmp_path / "c" / f"{i}.JPEG").parent.mkdir(exist_ok=True)
        (tmp_path / "c" / f"{i}.JPEG").symlink_to(f)
    images, _, _ = datasets.decode_eval(datasets.load_table(tmp_path), 112)
    expected = [np.asarray(ref(Image.open(tmp_path / "c" / f"{i}.JPEG").convert("RGB")))
                for i in range(len(files))]
    np.testing.assert_array_equal(images, np.stack(expected))


def test_val_view_keeps_an_image_at_the_size_and_upsamples_a_smaller_one_whole():
    arr = rgb(32, 32)
    assert eval_view(arr, 32) is arr
    up = np.asarray(Image.fromarray(arr).resize((64, 64), Image.BICUBIC))
    np.testing.assert_array_equal(eval_view(arr, 64), up)


def test_decode_eval_of_cifar_at_32_is_the_plain_decode(cifar_val_shards):
    table = datasets.load_table(cifar_val_shards)
    old, labels, _ = datasets.decode_images(table, 32)
    new, new_labels, _ = datasets.decode_eval(table, 32)
    np.testing.assert_array_equal(new, old)
    np.testing.assert_array_equal(new_labels, labels)


# --- training crops at the stored resolution -----------------------------------------------

def _old_random_resized_crop(x, size, scale, generator, ratio=(3 / 4, 4 / 3)):
    """The crop as it was before stored-resolution training (grid sampling for every box)."""
    n, _, h, w = x.shape
    theta = torch.zeros(n, 2, 3, dtype=x.dtype)
    for k in range(n):
        i, j, ch, cw = _rrc_box(h, w, scale, ratio, generator)
        theta[k, 0, 0], theta[k, 0, 2] = cw / w, (2 * j + cw) / w - 1
        theta[k, 1, 1], theta[k, 1, 2] = ch / h, (2 * i + ch) / h - 1
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def test_crop_at_the_training_size_is_unchanged_bit_for_bit():
    x = torch.rand(16, 3, 32, 32, generator=gen(1)) * 4 - 2
    for seed in range(3):
        assert torch.equal(random_resized_crop(x, 32, (0.5, 1.0), gen(seed)),
                           _old_random_resized_crop(x, 32, (0.5, 1.0), gen(seed)))


def quadrants(side: int) -> torch.Tensor:
    """(1, 3, side, side): four flat quadrants of distinct colours plus a 1-px checkerboard in
    the top-left one (detail that exists only at the stored resolution)."""
    x = torch.zeros(1, 3, side, side)
    h = side // 2
    for (r, c), colour in zip([(0, 0), (0, 1), (1, 0), (1, 1)],
                              [(1., 0., 0.), (0., 1., 0.), (0., 0., 1.), (1., 1., 0.)]):
        x[0, :, r * h:(r + 1) * h, c * h:(c + 1) * h] = torch.tensor(colour).view(3, 1, 1)
    checker = (torch.arange(h).view(-1, 1) + torch.arange(h).view(1, -1)) % 2
    x[0, 2, :h, :h] = checker.float()
    return x


def test_the_crop_is_taken_from_the_stored_resolution_then_resized():
    x = quadrants(64)
    for seed in range(4):
        out = random_resized_crop(x, 16, (0.3, 1.0), gen(seed))
        i, j, ch, cw = _rrc_box(64, 64, (0.3, 1.0), (3 / 4, 4 / 3), gen(seed))
        expected = F.interpolate(x[:, :, i:i + ch, j:j + cw], size=(16, 16), mode="bilinear",
                                 align_corners=False, antialias=True)
        assert out.shape == (1, 3, 16, 16)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    # The old path resized the set to 16 px first and cropped a box of 16 px coordinates.
    small = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    assert not torch.allclose(random_resized_crop(x, 16, (0.3, 1.0), gen(0)),
                              _old_random_resized_crop(small, 16, (0.3, 1.0), gen(0)), atol=1e-3)


def test_a_full_box_of_a_flat_quadrant_image_keeps_each_quadrants_colour():
    x = quadrants(64)
    x[0, 2, :32, :32] = 0.0  # no checkerboard: flat quadrants
    out = random_resized_crop(x, 16, (1.0, 1.0), gen(0), ratio=(1.0, 1.0))
    for (r, c) in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        # An inner pixel of each 8 x 8 output quadrant is that quadrant's colour.
        torch.testing.assert_close(out[0, :, 8 * r + 3, 8 * c + 3], x[0, :, 32 * r + 8, 32 * c + 8])


def test_augment_batch_shuffles_and_crops_at_the_stored_size_and_returns_the_training_size():
    cfg = EvalConfig(image_size=16, patch_factor=2, rrc_min_scale=0.5)
    x = torch.rand(4, 3, 64, 64, generator=gen(2))
    out, index, lam = augment_batch(x, cfg, gen(3))
    assert out.shape == (4, 3, 16, 16) and sorted(index.tolist()) == [0, 1, 2, 3]
    assert 0.0 <= lam <= 1.0


def test_decode_stored_keeps_one_shape_and_brings_mixed_shapes_to_the_largest_side(tmp_path):
    same = datasets.decode_stored(datasets.load_table(image_folder(tmp_path / "a", 48)))[0]
    assert same.shape == (4, 48, 48, 3)
    mixed = image_folder(tmp_path / "b", 0, sides=[40, 64, 48, 64])
    images, labels, _ = datasets.decode_stored(datasets.load_table(mixed))
    assert images.shape == (4, 64, 64, 3) and labels.tolist() == [0, 0, 1, 1]
    assert datasets.stored_side(datasets.load_table(mixed)) == 64


# --- the teacher at its own input size -----------------------------------------------------

class SizeRecorder(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.sizes: list[tuple[int, int]] = []
        self.head = nn.Linear(3, num_classes)

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return self.head(x.mean(dim=(2, 3)))


def test_kd_feeds_the_teacher_at_its_own_size_and_the_student_at_the_training_size():
    cfg = EvalConfig(image_size=16, patch_factor=2)
    images = torch.randint(0, 256, (6, 64, 64, 3), dtype=torch.uint8, generator=gen(0))
    teacher, student = SizeRecorder(3), SizeRecorder(3)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    train_one_epoch_kd(student, teacher, images, opt, cfg, "cpu", gen(1), batch_size=3,
                       teacher_size=24)
    assert teacher.sizes == [(24, 24)] * 2 and student.sizes == [(16, 16)] * 2
    teacher.sizes.clear()
    train_one_epoch_kd(student, teacher, images, opt, cfg, "cpu", gen(1), batch_size=3,
                       teacher_size=16)
    assert teacher.sizes == [(16, 16)] * 2


# --- one normalisation per evaluation ------------------------------------------------------

def test_recorded_norm_reads_a_name_or_a_known_mean_and_std():
    assert recorded_norm({"extra": {"norm": "symmetric"}}) == "symmetric"
    assert recorded_norm({"extra": {"mean": [0.485, 0.456, 0.406],
                                    "std": [0.229, 0.224, 0.225]}}) == "imagenet"
    assert recorded_norm({"extra": {}}) is None
    with pytest.raises(ValueError, match="none of"):
        recorded_norm({"extra": {"mean": [0.1] * 3, "std": [0.2] * 3}})
    assert norm_for_side(32) == "cifar" and norm_for_side(64) == norm_for_side(224) == "imagenet"


def teacher_ckpt(path: Path, norm: str | None, arch: str = "convnet3", size: int = 32) -> Path:
    torch.manual_seed(0)
    model = build_model(arch, 2, image_size=size, **({"width": 8} if arch == "convnet3" else {}))
    return save_checkpoint(path, model, arch, 2, size, extra={"norm": norm} if norm else None,
                           model_kwargs={"width": 8} if arch == "convnet3" else None)


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sets")
    return {"small": image_folder(root / "s32", 32), "small_val": image_folder(root / "v32", 32),
            "big": image_folder(root / "s224", 224), "big_val": image_folder(root / "v224", 224)}


def test_a_symmetric_norm_teacher_sets_the_evaluations_norm(sets, tmp_path):
    from dc3ray.pipeline.evaluate import evaluation_plan
    ckpt = teacher_ckpt(tmp_path / "t.pt", "symmetric", arch="resnet18", size=160)
    cfg = EvalConfig(student="resnet18", image_size=112)
    plan = evaluation_plan(cfg, sets["big"], sets["big_val"], ckpt)
    assert plan["norm"] == "symmetric" and plan["norm_source"].startswith("teacher")
    assert plan["stored_side"] == 224 and plan["teacher_image_size"] == 160
    # An explicit norm that disagrees with the teacher is refused, naming both.
    with pytest.raises(ConfigError, match="eval.norm=imagenet .*'symmetric'"):
        evaluation_plan(EvalConfig(student="resnet18", image_size=112, norm="imagenet"),
                        sets["big"], sets["big_val"], ckpt)


def test_without_a_teacher_the_norm_follows_the_stored_size(sets):
    from dc3ray.pipeline.evaluate import evaluation_plan
    hard = EvalConfig(hard_labels=True)
    assert evaluation_plan(hard, sets["small"], sets["small_val"], None)["norm"] == "cifar"
    big = evaluation_plan(EvalConfig(hard_labels=True, image_size=112), sets["big"],
                          sets["big_val"], None)
    assert big["norm"] == "imagenet" and big["norm_source"] == "auto: images stored at 224 px"
    explicit = EvalConfig(hard_labels=True, image_size=112, norm="symmetric")
    assert evaluation_plan(explicit, sets["big"], sets["big_val"], None)["norm"] == "symmetric"


def test_the_cifar_preset_still_evaluates_with_cifar_normalisation(sets, tmp_path):
    from dc3ray.pipeline.evaluate import evaluation_plan
    cfg = load_config(CondenseConfig, REPO / "configs" / "cifar10.yaml", []).eval
    assert cfg.norm == "auto"
    # Its teacher records the norm it was trained with (cifar: the teacher's own auto rule).
    recorded = teacher_ckpt(tmp_path / "cifar.pt", "cifar")
    unrecorded = teacher_ckpt(tmp_path / "bare.pt", None)
    for ckpt in (recorded, unrecorded):
        assert evaluation_plan(cfg, sets["small"], sets["small_val"], ckpt)["norm"] == "cifar"


def test_the_inputs_key_of_a_cifar_evaluation_is_the_same_for_auto_and_cifar(sets, tmp_path):
    from dc3ray.pipeline.evaluate import evaluation_plan
    ckpt = teacher_ckpt(tmp_path / "t.pt", "cifar")
    keys = {evaluation_plan(EvalConfig(norm=n), sets["small"], sets["small_val"], ckpt)
            ["inputs_key"] for n in ("auto", "cifar")}
    assert len(keys) == 1


def test_the_student_loop_trains_at_its_size_from_a_stored_224_set_with_a_160_px_teacher(
        sets, tmp_path):
    """End to end in this process: condensed set at 224, student resnet18 at 32, teacher at 48,
    val centre-cropped, one normalisation (the teacher's) for all."""
    from dc3ray.config import to_dict
    from dc3ray.pipeline.evaluate import evaluation_plan
    from dc3ray.pipeline.student import student_loop
    ckpt = teacher_ckpt(tmp_path / "t.pt", "symmetric", arch="resnet18", size=48)
    cfg = EvalConfig(student="resnet18", image_size=32, epochs=1, seeds=1, workers=0)
    plan = evaluation_plan(cfg, sets["big"], sets["big_val"], ckpt)
    config = {"cfg": to_dict(cfg), "seed": 0, "print_every": 1, "in_process": True,
              "use_gpu": False, **{k: plan[k] for k in ("condensed_path", "val_path",
                                                        "teacher_ckpt", "num_classes",
                                                        "batch_size", "norm", "model_kwargs")}}
    res = student_loop(config)
    assert res["history"][-1][0] == 1 and 0.0 <= res["top1_final"] <= 100.0
    assert plan["norm"] == "symmetric"


# --- config checks -------------------------------------------------------------------------

def test_student_and_teacher_sizes_may_differ_unless_the_teacher_is_a_trained_convnet():
    def condense(*overrides):
        return load_config(CondenseConfig, None, list(overrides))
    condense("teacher.kind=imagenet_subset", "teacher.image_size=160", "eval.student=resnet18",
             "eval.image_size=112")
    condense("teacher.arch=resnet18", "teacher.image_size=224", "eval.image_size=112")
    condense("teacher_path=/some/teacher.pt", "eval.image_size=112")
    with pytest.raises(ConfigError, match="convnet3"):
        condense("teacher.arch=convnet3", "teacher.image_size=32", "eval.image_size=64")


def test_the_imagenette_preset_evaluates_a_resnet18_at_its_cpu_resolution():
    cfg = load_config(CondenseConfig, REPO / "configs" / "imagenette.yaml", [])
    assert cfg.eval.student == "resnet18" and cfg.eval.norm == "auto"
    assert cfg.eval.epochs == 300 and cfg.eval.seeds == 3 and not cfg.eval.use_gpu
    assert cfg.eval.image_size in (112, 128) and math.isclose(cfg.eval.rrc_min_scale, 0.5)


def test_decode_stored_caps_the_longer_side_keeping_the_aspect_of_one_shape_sets(tmp_path):
    table = datasets.load_table(image_folder(tmp_path / "a", 224))
    assert datasets.decode_stored(table, max_side=224)[0].shape == (4, 224, 224, 3)
    assert datasets.decode_stored(table, max_side=100)[0].shape == (4, 100, 100, 3)
    mixed = datasets.load_table(image_folder(tmp_path / "b", 0, sides=[40, 300, 48, 64]))
    assert datasets.decode_stored(mixed, max_side=128)[0].shape == (4, 128, 128, 3)


def test_a_trained_teacher_normalises_by_stored_size_unless_told(sets):
    from dc3ray.config import TeacherConfig
    from dc3ray.pipeline.teacher import teacher_norm
    assert teacher_norm(TeacherConfig(), sets["small"]) == "cifar"
    assert teacher_norm(TeacherConfig(arch="resnet18", image_size=112), sets["big"]) == "imagenet"
    assert teacher_norm(TeacherConfig(norm="symmetric"), sets["small"]) == "symmetric"
