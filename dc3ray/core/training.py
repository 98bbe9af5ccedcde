"""Training maths: augmentations, KD loss, LR schedule, one-epoch loops, evaluation.

DESIGN.md section 1 step 4 (the RDED protocol as the DC3 code runs it): each student batch gets
patch-shuffle -> RandomResizedCrop -> flip -> CutMix; loss = KL(student/T || teacher/T) with
the frozen teacher seeing the same augmented batch; AdamW, no decay on biases and norms, LR
factor 0.5 * (1 + cos(pi * epoch / (2 * epochs))) set per epoch.

Images live in memory as uint8 (N, H, W, 3) tensors (condensed sets are small); every batch is
converted to normalised float NCHW on the device, then augmented there. All randomness comes
from an explicit torch.Generator (on the CPU; draws are moved to the data's device), so a fixed
generator state gives the same batch on any device.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# pytorch-cifar / RDED CIFAR constants.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# "symmetric" maps [0, 1] to [-1, 1]: EfficientNet-Lite's TF training input ((x - 127) / 128).
SYMMETRIC_MEAN = (0.5, 0.5, 0.5)
SYMMETRIC_STD = (0.5, 0.5, 0.5)
NORMS = {"cifar": (CIFAR_MEAN, CIFAR_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
         "symmetric": (SYMMETRIC_MEAN, SYMMETRIC_STD)}


def norm_stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of a named normalisation: 'cifar', 'imagenet' or 'symmetric'."""
    if name not in NORMS:
        raise ValueError(f"normalisation {name!r} is unknown; choose one of {tuple(NORMS)}")
    return NORMS[name]


# CIFAR-10/100 are the 32 px sets; larger stored images (Tiny-ImageNet's 64 px, Imagenette's
# 224 px) are photos of ImageNet's domain.
CIFAR_MAX_SIDE = 32


def norm_for_side(stored_side: int) -> str:
    """The normalisation of a model trained from scratch on images whose stored side is
    `stored_side` px: 'cifar' up to CIFAR_MAX_SIDE, else 'imagenet'."""
    return "cifar" if stored_side <= CIFAR_MAX_SIDE else "imagenet"


def recorded_norm(meta: dict) -> str | None:
    """The named normalisation a checkpoint's meta records (extra.norm, or extra / top-level
    mean and std equal to a NORMS entry); None when it records none. Raises ValueError for
    mean / std that match no named normalisation."""
    extra = meta.get("extra") or {}
    if extra.get("norm"):
        norm_stats(extra["norm"])  # an unknown name fails here, naming the choices
        return extra["norm"]
    mean, std = extra.get("mean", meta.get("mean")), extra.get("std", meta.get("std"))
    if mean is None or std is None:
        return None
    pair = (tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std))
    for name, (m, s) in NORMS.items():
        if pair == (tuple(round(v, 4) for v in m), tuple(round(v, 4) for v in s)):
            return name
    raise ValueError(f"checkpoint normalisation mean={mean} std={std} is none of {tuple(NORMS)}")


def to_float(images: torch.Tensor | np.ndarray, mean: Sequence[float] = CIFAR_MEAN,
             std: Sequence[float] = CIFAR_STD, device: str | torch.device | None = None
             ) -> torch.Tensor:
    """uint8 (N, H, W, 3) in [0, 255] -> float32 (N, 3, H, W), (x / 255 - mean) / std."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"to_float expects uint8 (N, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    x = x.to(device) if device is not None else x
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


# --------------------------------------------------------------------------------------------
# Augmentations: float (N, C, H, W) in, same shape out; values stay within the input's range
# (every op is a permutation, a flip, or a convex combination of input pixels).
# --------------------------------------------------------------------------------------------

def _strip_order(length: int, factor: int, perm: list[int]) -> list[int]:
    bounds = [i * (length // factor) for i in range(factor)] + [length]
    return [j for p in perm for j in range(bounds[p], bounds[p + 1])]


def patch_shuffle(x: torch.Tensor, factor: int, generator: torch.Generator) -> torch.Tensor:
    """RDED ShufflePatches, per image: cut the width into `factor` strips (the last one takes
    the remainder), shuffle them, concatenate; then the same along the height.

    Each image draws its own two permutations. factor=1 returns x unchanged.
    """
    if factor <= 1:
        return x
    n, c, h, w = x.shape
    cols, rows = [], []
    for _ in range(n):
        pw = torch.randperm(factor, generator=generator).tolist()
        ph = torch.randperm(factor, generator=generator).tolist()
        cols.append(_strip_order(w, factor, pw))
        rows.append(_strip_order(h, factor, ph))
    ci = torch.tensor(cols, device=x.device).view(n, 1, 1, w).expand(n, c, h, w)
    ri = torch.tensor(rows, device=x.device).view(n, 1, h, 1).expand(n, c, h, w)
    return x.gather(3, ci).gather(2, ri)


def _rrc_box(h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float],
             generator: torch.Generator) -> tuple[int, int, int, int]:
    # torchvision's RandomResizedCrop.get_params, drawing from `generator`.
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(2, generator=generator).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            i = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
            j = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
            return i, j, ch, cw
    # Fallback: central crop at the closest allowed ratio (as torchvision does).
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def _sample_boxes(x: torch.Tensor, boxes: list[tuple[int, int, int, int]], size: int
                  ) -> torch.Tensor:
    # Bilinear sampling of each box at size x size through an affine grid (no antialiasing:
    # for boxes no larger than the output, i.e. upsampling).
    n, c, h, w = x.shape
    theta = torch.zeros(n, 2, 3, dtype=x.dtype)
    for k, (i, j, ch, cw) in enumerate(boxes):
        # Affine map from output coords to the box, in grid_sample's [-1, 1] space.
        theta[k, 0, 0] = cw / w
        theta[k, 0, 2] = (2 * j + cw) / w - 1
        theta[k, 1, 1] = ch / h
        theta[k, 1, 2] = (2 * i + ch) / h - 1
    grid = F.affine_grid(theta.to(x.device), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop(x: torch.Tensor, size: int | None = None,
                        scale: tuple[float, float] = (0.5, 1.0),
                        generator: torch.Generator | None = None,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Per image: crop a random box (area fraction in `scale`, aspect in `ratio`, in the
    input's own pixels) and resize it bilinearly to size x size (default: the input size).
    (N, C, H, W) -> (N, C, size, size).

    A box larger than the output on either side is resized with antialiasing (torchvision's
    RandomResizedCrop(antialias=True)), so a crop from a stored 224 px image trained at 112 px
    does not alias; smaller boxes are upsampled by grid sampling."""
    if generator is None:
        raise ValueError("random_resized_crop needs an explicit torch.Generator")
    n, _, h, w = x.shape
    size = size or h
    boxes = [_rrc_box(h, w, scale, ratio, generator) for _ in range(n)]
    shrink = [k for k, (_, _, ch, cw) in enumerate(boxes) if ch > size or cw > size]
    if not shrink:  # every box at or below the output size (always so when size >= H, W)
        return _sample_boxes(x, boxes, size)
    out = x.new_empty(n, x.shape[1], size, size)
    grow = [k for k in range(n) if k not in set(shrink)]
    if grow:
        out[grow] = _sample_boxes(x[grow], [boxes[k] for k in grow], size)
    for k in shrink:
        i, j, ch, cw = boxes[k]
        out[k] = F.interpolate(x[k:k + 1, :, i:i + ch, j:j + cw], size=(size, size),
                               mode="bilinear", align_corners=False, antialias=True)[0]
    return out


def hflip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Flip each image left-right with probability p."""
    flip = (torch.rand(x.shape[0], generator=generator) < p).to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(3), x)


def random_crop(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Per image: zero-pad by `padding` and crop back to (H, W) at a random offset."""
    n, c, h, w = x.shape
    xp = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, c, h, w + 2 * padding)
    cols = (dx[:, None] + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, c, h, w)
    return xp.gather(2, rows).gather(3, cols)


def cutmix(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix with lambda ~ Beta(1, 1) = U(0, 1), one box for the whole batch (as RDED).

    Returns (mixed copy of x, index, lam): the box of image k is taken from image index[k];
    lam is the fraction of each image's pixels that stayed its own (box-area corrected).
    """
    n, _, h, w = x.shape
    index = torch.randperm(n, generator=generator)
    lam0 = float(torch.rand(1, generator=generator))
    cut = math.sqrt(1.0 - lam0)
    cw, ch = int(w * cut), int(h * cut)
    cx = int(torch.randint(0, w, (1,), generator=generator))
    cy = int(torch.randint(0, h, (1,), generator=generator))
    x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    out = x.clone()
    index_d = index.to(x.device)
    out[:, :, y1:y2, x1:x2] = x[index_d, :, y1:y2, x1:x2]
    lam = 1.0 - (x2 - x1) * (y2 - y1) / float(h * w)
    return out, index_d, lam


def augment_batch(x: torch.Tensor, cfg: Any, generator: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Student augmentation: patch_shuffle(cfg.patch_factor) -> RRC(cfg.image_size, scale
    (cfg.rrc_min_scale, 1)) -> flip -> cutmix. float (N, C, H, W) at the images' stored
    resolution (shuffle and crop act on it; the crop is resized to cfg.image_size) ->
    (x (N, C, image_size, image_size), index, lam)."""
    x = patch_shuffle(x, cfg.patch_factor, generator)
    x = random_resized_crop(x, cfg.image_size, (cfg.rrc_min_scale, 1.0), generator)
    x = hflip(x, generator)
    return cutmix(x, generator)


# --------------------------------------------------------------------------------------------
# Loss, optimiser, schedule
# --------------------------------------------------------------------------------------------

def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """KLDivLoss(batchmean)(log_softmax(s / T), softmax(t / T)); no T**2 factor (as RDED)."""
    return F.kl_div(F.log_softmax(student_logits / T, dim=1),
                    F.softmax(teacher_logits / T, dim=1), reduction="batchmean")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two optimiser groups: decay on weights of rank >= 2, none on biases and norm weights."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(epoch: int, epochs: int) -> float:
    """RDED's per-epoch LR factor 0.5 * (1 + cos(pi * epoch / (2 * epochs))): 1 -> 0.5."""
    return 0.5 * (1.0 + math.cos(math.pi * epoch / (2.0 * epochs)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr


def student_optimizer(model: nn.Module, cfg: Any) -> torch.optim.Optimizer:
    """AdamW(cfg.lr, weight decay cfg.weight_decay except on biases and norms)."""
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)


def batch_size_for(ipc: int, num_classes: int, cfg: Any) -> int:
    """cfg.batch_size when > 0, else min(ipc * num_classes, cfg.batch_rule)."""
    if cfg.batch_size > 0:
        return int(cfg.batch_size)
    return max(1, min(int(ipc) * int(num_classes), int(cfg.batch_rule)))


def epoch_batches(n: int, batch_size: int, generator: torch.Generator, rank: int = 0,
                  world_size: int = 1, drop_last: bool = False) -> list[torch.Tensor]:
    """Index batches of one epoch for worker `rank` of `world_size`.

    One permutation of range(n) (the same on every worker when their generators agree) is cut
    into global batches of `batch_size`; worker r takes batch[r::world_size]. Every worker gets
    the same number of steps (DDP needs that); a global batch smaller than world_size is
    reused cyclically so no worker gets an empty step.
    """
    if n < 1:
        raise ValueError("epoch_batches: the image set is empty")
    perm = torch.randperm(n, generator=generator)
    out = []
    for start in range(0, n, batch_size):
        b = perm[start:start + batch_size]
        if drop_last and len(b) < batch_size and start > 0:
            break
        if len(b) < world_size:
            b = b.repeat(math.ceil(world_size / len(b)))
        out.append(b[rank::world_size])
    return out


# --------------------------------------------------------------------------------------------
# Epoch loops
# --------------------------------------------------------------------------------------------

def _default_batches(n: int, batch_size: int | None, cfg: Any, generator: torch.Generator):
    bs = batch_size or getattr(cfg, "batch_size", 0)
    if not bs:
        raise ValueError("pass batches= or batch_size= (cfg.batch_size is 0: use batch_size_for)")
    return epoch_batches(n, bs, generator)


def _student_epoch(student: nn.Module, images: torch.Tensor, batches: list[torch.Tensor],
                   optimizer: torch.optim.Optimizer, cfg: Any, device: str | torch.device,
                   generator: torch.Generator, mean: Sequence[float], std: Sequence[float],
                   loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]
                   ) -> dict:
    """The student step shared by KD and hard labels: augment_batch, loss_fn(x, idx, index, lam)
    (idx: the batch's rows; index, lam: the CutMix pairing), one optimizer step per batch."""
    student.train()
    total, steps = 0.0, 0
    for idx in batches:
        x = to_float(images[idx], mean, std, device)
        x, index, lam = augment_batch(x, cfg, generator)
        loss = loss_fn(x, idx, index, lam)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
        steps += 1
    return {"loss": total / max(steps, 1), "steps": steps}


def train_one_epoch_kd(student: nn.Module, teacher: nn.Module, images: torch.Tensor,
                       optimizer: torch.optim.Optimizer, cfg: Any, device: str | torch.device,
                       generator: torch.Generator, *, batches: list[torch.Tensor] | None = None,
                       batch_size: int | None = None, mean: Sequence[float] = CIFAR_MEAN,
                       std: Sequence[float] = CIFAR_STD, teacher_size: int | None = None) -> dict:
    """One KD epoch over uint8 (N, H, W, 3) `images` (stored resolution); returns
    {'loss': mean loss, 'steps': n}.

    `batches` are index tensors (see epoch_batches); by default one shuffled pass drawn from
    `generator`. The teacher is frozen (eval mode, no grad) and sees the same augmented batch,
    resized bilinearly to teacher_size x teacher_size when that differs from cfg.image_size.
    cfg needs temperature, patch_factor, rrc_min_scale, image_size (EvalConfig).
    """
    batches = batches if batches is not None else _default_batches(len(images), batch_size, cfg,
                                                                   generator)
    teacher.eval()

    def loss_fn(x, idx, index, lam):
        with torch.no_grad():
            t_logits = teacher(resize_batch(x, teacher_size))
        return kd_loss(student(x), t_logits, cfg.temperature)

    return _student_epoch(student, images, batches, optimizer, cfg, device, generator, mean, std,
                          loss_fn)


def resize_batch(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """float (N, C, H, W) -> (N, C, size, size), bilinear (antialiased when shrinking); x itself
    when size is None or already its size."""
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < max(x.shape[-2:]))


def train_one_epoch_ce(student: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       optimizer: torch.optim.Optimizer, cfg: Any, device: str | torch.device,
                       generator: torch.Generator, *, batches: list[torch.Tensor] | None = None,
                       batch_size: int | None = None, mean: Sequence[float] = CIFAR_MEAN,
                       std: Sequence[float] = CIFAR_STD) -> dict:
    """One hard-label epoch: the same augmentation, loss = lam * CE(y) + (1 - lam) * CE(y[index])
    on the CutMix-mixed targets. Returns {'loss': mean loss, 'steps': n}."""
    batches = batches if batches is not None else _default_batches(len(images), batch_size, cfg,
                                                                   generator)

    def loss_fn(x, idx, index, lam):
        y = labels[idx].to(device)
        out = student(x)
        return lam * F.cross_entropy(out, y) + (1.0 - lam) * F.cross_entropy(out, y[index])

    return _student_epoch(student, images, batches, optimizer, cfg, device, generator, mean, std,
                          loss_fn)


def teacher_optimizer(model: nn.Module, lr: float, weight_decay: float, total_steps: int,
                      pct_start: float = 0.25):
    """Teacher recipe: SGD (momentum 0.9, Nesterov; no decay on biases / norms) with a
    one-cycle LR peaking at `lr`, stepped once per batch. Returns (optimizer, scheduler)."""
    opt = torch.optim.SGD(param_groups(model, weight_decay), lr=lr, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(total_steps, 1),
                                                pct_start=pct_start)
    return opt, sched


def train_teacher_epoch(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                        optimizer: torch.optim.Optimizer, scheduler: Any,
                        device: str | torch.device, generator: torch.Generator,
                        batch_size: int, *, batches: list[torch.Tensor] | None = None,
                        label_smoothing: float = 0.1, mean: Sequence[float] = CIFAR_MEAN,
                        std: Sequence[float] = CIFAR_STD) -> dict:
    """One teacher epoch on real data (CPU-friendly recipe): random crop (zero pad 4) + flip,
    cross-entropy with label smoothing 0.1, optimizer/scheduler from teacher_optimizer (the
    scheduler steps per batch). Returns {'loss': mean loss, 'acc': train top-1 %, 'steps': n}."""
    if batches is None:
        batches = epoch_batches(len(images), batch_size, generator)
    model.train()
    total, correct, seen, steps = 0.0, 0, 0, 0
    for idx in batches:
        x = hflip(random_crop(to_float(images[idx], mean, std, device), generator), generator)
        y = labels[idx].to(device)
        out = model(x)
        loss = F.cross_entropy(out, y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += float(loss.detach())
        correct += int((out.argmax(1) == y).sum())
        seen += len(y)
        steps += 1
    return {"loss": total / max(steps, 1), "acc": 100.0 * correct / max(seen, 1), "steps": steps}


@torch.no_grad()
def evaluate_counts(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    device: str | torch.device, batch_size: int = 256,
                    mean: Sequence[float] = CIFAR_MEAN, std: Sequence[float] = CIFAR_STD
                    ) -> tuple[int, int]:
    """(correct, total) top-1 over uint8 (N, H, W, 3) images and int labels (N,), no augmentation."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = to_float(images[start:start + batch_size], mean, std, device)
        y = torch.as_tensor(labels[start:start + batch_size]).to(device)
        correct += int((model(x).argmax(1) == y).sum())
    model.train(was_training)
    return correct, len(images)


@torch.no_grad()
def class_confidence(model: nn.Module, images: np.ndarray | torch.Tensor, labels: np.ndarray,
                     device: str | torch.device = "cpu", batch_size: int = 256,
                     mean: Sequence[float] = CIFAR_MEAN, std: Sequence[float] = CIFAR_STD
                     ) -> dict:
    """How sure a classifier is of each image's own label: {'top1' (%), 'mean_p_true'} over
    uint8 (N, H, W, 3) images, no augmentation. KD trains a student on a teacher's softmax, so a
    set the teacher reads less surely gives weaker targets (the accuracy notes compare sets by it)."""
    was_training = model.training
    model.eval()
    correct, p_true = 0, 0.0
    for start in range(0, len(images), batch_size):
        x = to_float(images[start:start + batch_size], mean, std, device)
        y = torch.as_tensor(labels[start:start + batch_size]).to(device)
        probs = torch.softmax(model(x).float(), dim=1)
        if len(y) and int(y.max()) >= probs.shape[1]:
            raise ValueError(f"label {int(y.max())} but the model has {probs.shape[1]} classes")
        correct += int((probs.argmax(1) == y).sum())
        p_true += float(probs[torch.arange(len(y)), y].sum())
    model.train(was_training)
    n = max(len(images), 1)
    return {"top1": 100.0 * correct / n, "mean_p_true": p_true / n}


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             device: str | torch.device, batch_size: int = 256,
             mean: Sequence[float] = CIFAR_MEAN, std: Sequence[float] = CIFAR_STD) -> float:
    """Top-1 accuracy in percent (0-100) of `model` on the given images."""
    correct, total = evaluate_counts(model, images, labels, device, batch_size, mean, std)
    return 100.0 * correct / max(total, 1)


def summarize_seeds(results: Sequence[dict]) -> dict:
    """Mean and population std (ddof=0) of per-seed 'top1_final' / 'top1_best' (percent)
    -> {'final_mean', 'final_std', 'best_mean', 'best_std'}."""
    if not results:
        raise ValueError("summarize_seeds: no per-seed results")
    out = {}
    for key, name in (("top1_final", "final"), ("top1_best", "best")):
        v = np.array([r[key] for r in results], dtype=np.float64)
        out[f"{name}_mean"] = round(float(v.mean()), 3)
        out[f"{name}_std"] = round(float(v.std()), 3)
    return out


__all__ = [
    "CIFAR_MEAN", "CIFAR_STD", "IMAGENET_MEAN", "IMAGENET_STD", "norm_stats", "norm_for_side",
    "recorded_norm", "to_float", "patch_shuffle", "random_resized_crop", "hflip", "random_crop",
    "cutmix", "augment_batch", "resize_batch", "kd_loss", "param_groups", "lr_factor", "set_lr",
    "student_optimizer", "batch_size_for", "epoch_batches", "train_one_epoch_kd",
    "train_one_epoch_ce", "teacher_optimizer", "train_teacher_epoch", "evaluate_counts",
    "evaluate", "class_confidence", "summarize_seeds",
]
