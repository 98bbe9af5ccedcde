"""Training maths: augmentations, KD loss, schedule, batching and one-epoch loops."""
import math

import pytest
import torch
from torch import nn

from dc3ray.config import EvalConfig
from dc3ray.core.models import ConvNet
from dc3ray.core.training import (augment_batch, batch_size_for, cutmix, epoch_batches, evaluate,
                                  hflip, kd_loss, lr_factor, param_groups, patch_shuffle,
                                  random_crop, random_resized_crop, student_optimizer,
                                  summarize_seeds, to_float, teacher_optimizer, train_one_epoch_ce, train_one_epoch_kd,
                                  train_teacher_epoch)

CFG = EvalConfig(epochs=2, seeds=1, image_size=32, patch_factor=2, rrc_min_scale=0.5)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def batch(n=6, seed=0):
    return torch.rand(n, 3, 32, 32, generator=gen(seed)) * 4 - 2


def tiny_images(n=12, seed=0):
    return torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=gen(seed))


def test_to_float_normalises_uint8_nhwc_to_nchw():
    x = torch.full((2, 4, 5, 3), 255, dtype=torch.uint8)
    out = to_float(x, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0))
    assert out.shape == (2, 3, 4, 5) and out.dtype == torch.float32
    assert out[:, 0].eq(1.0).all() and out[:, 1].eq(2.0).all() and out[:, 2].eq(0.5).all()
    with pytest.raises(ValueError, match="uint8"):
        to_float(torch.zeros(2, 3, 4, 4))


def test_patch_shuffle_permutes_half_strips_of_each_image():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(8, 3, 1, 1)
    out = patch_shuffle(x, 2, gen(3))
    assert out.shape == x.shape
    seen = set()
    for img in out[:, 0]:
        # Every result is the 2x2 grid of 2x2 blocks with rows / columns of blocks swapped or not.
        blocks = {(r, c): img[2 * r:2 * r + 2, 2 * c:2 * c + 2] for r in range(2) for c in range(2)}
        assert sorted(img.flatten().tolist()) == list(range(16))
        assert any(torch.equal(b, x[0, 0, 0:2, 0:2]) for b in blocks.values())
        seen.add(tuple(img.flatten().tolist()))
    assert len(seen) > 1  # permutations differ across images
    assert torch.equal(patch_shuffle(x, 1, gen(3)), x)


def test_patch_shuffle_handles_sizes_not_divisible_by_the_factor():
    x = batch(2)[:, :, :31, :29]
    out = patch_shuffle(x, 3, gen(0))
    assert out.shape == x.shape
    torch.testing.assert_close(out.flatten(1).sort(1).values, x.flatten(1).sort(1).values)


def test_random_resized_crop_of_the_full_box_is_the_identity():
    x = batch(4)
    out = random_resized_crop(x, 32, scale=(1.0, 1.0), generator=gen(0), ratio=(1.0, 1.0))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_random_resized_crop_keeps_shape_and_range_and_is_seeded():
    x = batch(5)
    a = random_resized_crop(x, 32, (0.5, 1.0), gen(7))
    b = random_resized_crop(x, 32, (0.5, 1.0), gen(7))
    c = random_resized_crop(x, 32, (0.5, 1.0), gen(8))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= x.min() - 1e-5 and a.max() <= x.max() + 1e-5
    assert random_resized_crop(x, 16, (0.5, 1.0), gen(7)).shape == (5, 3, 16, 16)


def test_hflip_flips_some_images_and_leaves_the_rest():
    x = batch(16)
    out = hflip(x, gen(1))
    flipped = [torch.equal(o, i.flip(2)) for o, i in zip(out, x)]
    kept = [torch.equal(o, i) for o, i in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 0 < sum(flipped) < 16


def test_random_crop_shifts_within_padding():
    x = batch(4)
    out = random_crop(x, gen(0), padding=4)
    assert out.shape == x.shape
    assert random_crop(x, gen(0), padding=0).equal(x)


def test_cutmix_pastes_one_box_and_lambda_is_the_kept_fraction():
    x = batch(8)
    out, index, lam = cutmix(x, gen(5))
    assert out.shape == x.shape and 0.0 <= lam <= 1.0
    assert sorted(index.tolist()) == list(range(8))
    changed = (out != x).any(1)  # (N, H, W) pixels taken from another image
    for k in range(8):
        if index[k] != k:
            assert changed[k].float().mean().item() == pytest.approx(1 - lam)
    assert changed.any() and 0.0 < lam < 1.0
    mask = changed.unsqueeze(1).expand_as(x)
    assert torch.equal(out[mask], x[index][mask])
    out2, index2, lam2 = cutmix(x, gen(5))
    assert torch.equal(out, out2) and torch.equal(index, index2) and lam == lam2


def test_augment_batch_keeps_shape_and_range_and_is_deterministic():
    x = batch(6)
    a, ia, la = augment_batch(x, CFG, gen(11))
    b, ib, lb = augment_batch(x, CFG, gen(11))
    assert a.shape == x.shape
    assert torch.equal(a, b) and torch.equal(ia, ib) and la == lb
    assert a.min() >= x.min() - 1e-5 and a.max() <= x.max() + 1e-5
    assert not torch.equal(augment_batch(x, CFG, gen(12))[0], a)


def test_kd_loss_is_zero_for_equal_logits_and_matches_the_kl_formula():
    s = torch.randn(4, 10, generator=gen(0))
    t = torch.randn(4, 10, generator=gen(1))
    assert kd_loss(s, s, 20.0).item() == pytest.approx(0.0, abs=1e-7)
    p = torch.softmax(t / 4, 1)
    manual = (p * (p.log() - torch.log_softmax(s / 4, 1))).sum(1).mean()
    torch.testing.assert_close(kd_loss(s, t, 4.0), manual)


def test_param_groups_put_biases_and_norm_weights_in_the_no_decay_group():
    net = ConvNet(10, width=8)
    decay, no_decay = param_groups(net, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in no_decay["params"]}
    assert id(net.features[1].weight) in ids and id(net.features[0].bias) in ids
    assert id(net.features[0].weight) not in ids and id(net.classifier.weight) not in ids
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(net.parameters()))


def test_lr_factor_starts_at_one_and_decays_to_half():
    assert lr_factor(0, 300) == 1.0
    assert lr_factor(300, 300) == pytest.approx(0.5)
    assert lr_factor(150, 300) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    vals = [lr_factor(e, 10) for e in range(11)]
    assert all(a > b for a, b in zip(vals, vals[1:]))


def test_batch_size_for_uses_the_rule_unless_set():
    assert batch_size_for(1, 10, EvalConfig(batch_size=0, batch_rule=100)) == 10
    assert batch_size_for(50, 10, EvalConfig(batch_size=0, batch_rule=100)) == 100
    assert batch_size_for(50, 10, EvalConfig(batch_size=64)) == 64


def test_epoch_batches_split_each_global_batch_across_ranks():
    per_rank = [epoch_batches(10, 4, gen(2), rank=r, world_size=2) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 3
    merged = torch.cat([torch.cat([a, b]) for a, b in zip(*per_rank)])
    assert sorted(merged.tolist()) == list(range(10))
    # A last global batch smaller than the world size is reused: no empty step.
    tiny = [epoch_batches(5, 4, gen(2), rank=r, world_size=3) for r in range(3)]
    assert all(len(b[-1]) >= 1 for b in tiny) and len({len(b) for b in tiny}) == 1


def test_one_kd_step_changes_the_student_and_leaves_the_teacher_untouched():
    torch.manual_seed(0)
    student, teacher = ConvNet(4, width=8), ConvNet(4, width=8)
    s0 = {k: v.clone() for k, v in student.state_dict().items()}
    t0 = {k: v.clone() for k, v in teacher.state_dict().items()}
    opt = student_optimizer(student, CFG)
    images = tiny_images(8)
    stats = train_one_epoch_kd(student, teacher, images, opt, CFG, "cpu", gen(0),
                               batches=[torch.arange(8)])
    assert stats["steps"] == 1 and math.isfinite(stats["loss"]) and stats["loss"] > 0
    assert any(not torch.equal(s0[k], v) for k, v in student.state_dict().items())
    assert all(torch.equal(t0[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    assert not teacher.training


def test_one_ce_epoch_updates_the_student_with_hard_labels():
    torch.manual_seed(0)
    student = ConvNet(4, width=8)
    w0 = student.classifier.weight.clone()
    opt = student_optimizer(student, CFG)
    labels = torch.tensor([0, 1, 2, 3] * 3)
    stats = train_one_epoch_ce(student, tiny_images(12), labels, opt, CFG, "cpu", gen(0),
                               batch_size=5)
    assert stats["steps"] == 3 and math.isfinite(stats["loss"])
    assert not torch.equal(student.classifier.weight, w0)


def test_teacher_epoch_steps_the_one_cycle_schedule_once_per_batch():
    torch.manual_seed(0)
    model = ConvNet(4, width=8)
    opt, sched = teacher_optimizer(model, lr=0.1, weight_decay=5e-4, total_steps=6)
    lr0 = opt.param_groups[0]["lr"]
    stats = train_teacher_epoch(model, tiny_images(12), torch.tensor([0, 1, 2, 3] * 3), opt, sched,
                                "cpu", gen(0), batch_size=4)
    assert stats["steps"] == 3 and sched.last_epoch == 3
    assert opt.param_groups[0]["lr"] > lr0  # warming up towards the peak
    assert 0.0 <= stats["acc"] <= 100.0


class ConstantLogits(nn.Module):
    def __init__(self, cls, num_classes=3):
        super().__init__()
        self.cls, self.num_classes = cls, num_classes

    def forward(self, x):
        out = torch.zeros(len(x), self.num_classes)
        out[:, self.cls] = 1.0
        return out


def test_evaluate_returns_top1_percent():
    images = tiny_images(8)
    labels = torch.tensor([1, 1, 0, 2, 1, 0, 1, 2])
    assert evaluate(ConstantLogits(1), images, labels, "cpu", batch_size=3) == 50.0
    assert evaluate(ConstantLogits(2), images, labels, "cpu") == 25.0


def test_summarize_seeds_gives_mean_and_population_std_of_final_and_best():
    out = summarize_seeds([{"top1_final": 10.0, "top1_best": 12.0},
                           {"top1_final": 20.0, "top1_best": 22.0},
                           {"top1_final": 30.0, "top1_best": 26.0}])
    assert out["final_mean"] == 20.0 and out["best_mean"] == 20.0
    assert out["final_std"] == pytest.approx(math.sqrt(200 / 3), abs=1e-3)
    assert out["best_std"] == pytest.approx(math.sqrt(104 / 3), abs=1e-3)
    with pytest.raises(ValueError):
        summarize_seeds([])


def test_kd_epochs_are_reproducible_from_the_seeds():
    def run():
        torch.manual_seed(3)
        student, teacher = ConvNet(4, width=8), ConvNet(4, width=8)
        opt = student_optimizer(student, CFG)
        train_one_epoch_kd(student, teacher, tiny_images(12), opt, CFG, "cpu", gen(9), batch_size=5)
        return student.state_dict()
    a, b = run(), run()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_even_cpu_share_gives_whole_cpus_between_one_and_eight():
    from dc3ray.pipeline.raytrain import even_cpu_share
    assert even_cpu_share(16, 4) == 4.0
    assert even_cpu_share(7, 2) == 3.0  # whole CPUs: a thread count
    assert even_cpu_share(2, 4) == 1.0  # never 0, even when oversubscribed
    assert even_cpu_share(64, 1) == 8.0
    assert even_cpu_share(4, 0) == 4.0  # 0 workers: no division by zero
