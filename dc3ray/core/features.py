"""Per-image features for selection: bin embeddings (DC3 step 1) and gradient factors (step 2).

Pure torch (+ diffusers, lazily, for the VAE); never imports ray. Models come from
dc3ray.core.models; every loader takes a local path, nothing is downloaded.

Two callables, both built once per actor and fed uint8 NHWC batches:
- `build_embedder(cfg, device)` -> `ImageEmbedder`: images -> float32 (N, D) embeddings.
- `build_grad_model(cfg, num_classes, device)` -> `GradientModel`: (images, labels) ->
  (e float32 (N, C), h float32 (N, D)), the factors of the last-layer gradient g = [e, e (x) h].
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import EmbedConfig, GradConfig
from ..errors import DataError, MissingPathError

# SYMMETRIC_*: EfficientNet-Lite was trained in TF with (x - 127) / 128, and the VAE takes
# [-1, 1]: both are (x/255 - 0.5) / 0.5.
from .training import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SYMMETRIC_MEAN,
    SYMMETRIC_STD,
    norm_for_side,
    norm_stats,
)

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------------
# Gradient factors
# --------------------------------------------------------------------------------------------

def gradient_factors(feature_fn: FeatureFn, head: nn.Module, x: torch.Tensor,
                     labels: torch.Tensor, faithful: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors of each sample's last-layer gradient: e = dL/dz (N, C) and h = features (N, D).

    x: model-ready float (N, 3, H, W); labels: int64 (N,) in [0, C). L is the per-sample
    cross-entropy of logits z = head(h), so dL/dW = e (x) h and dL/db = e.
    Default: e = softmax(z) - onehot(y), computed analytically.
    faithful=True reproduces the reference, which applies softmax before cross-entropy
    (L = CE(softmax(z), y)); its exact gradient wrt z is taken with autograd.
    Returns float32 tensors on x's device.
    """
    with torch.no_grad():
        h = feature_fn(x)
        if h.ndim != 2:
            h = h.flatten(1)
        z = head(h).float()
    h = h.float()
    labels = labels.to(device=z.device, dtype=torch.long)
    num_classes = z.shape[1]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}) for a {num_classes}-way head, got "
                         f"[{int(labels.min())}, {int(labels.max())}]; the gradient model's head "
                         "does not match the dataset's class map")
    if not faithful:
        e = torch.softmax(z, dim=1)
        e[torch.arange(len(z), device=z.device), labels] -= 1.0
        return e, h
    zz = z.detach().requires_grad_(True)
    with torch.enable_grad():
        # Summing per-sample losses keeps each row's gradient that sample's own gradient.
        loss = F.cross_entropy(torch.softmax(zz, dim=1), labels, reduction="sum")
        (e,) = torch.autograd.grad(loss, zz)
    return e.detach(), h


# --------------------------------------------------------------------------------------------
# Preprocessing shared by both callables
# --------------------------------------------------------------------------------------------

def to_model_input(images: np.ndarray | torch.Tensor, size: int | None, mean, std,
                   device: torch.device, dtype: torch.dtype = torch.float32,
                   resize: str = "bilinear") -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, size, size) on `device`.

    Resizes only when H, W != size (bilinear with antialias, or "nearest"); size=None keeps the
    input size. Values: (x / 255 - mean) / std.
    """
    t = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
    if t.ndim != 4 or t.shape[-1] != 3 or t.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {t.dtype} {tuple(t.shape)}")
    x = t.to(device).permute(0, 3, 1, 2).float().div_(255.0)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        if resize == "nearest":
            x = F.interpolate(x, size=(size, size), mode="nearest")
        else:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=True)
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return ((x - m) / s).to(dtype)


def _use_fp16(device: torch.device, fp16: bool) -> bool:
    return bool(fp16) and torch.device(device).type == "cuda"


class _Backbone:
    """A frozen feature extractor with its input convention (size, mean/std) and ImageNet head."""

    def __init__(self, feature_fn: FeatureFn, head: nn.Module | None, size: int | None,
                 mean, std, device: torch.device, dtype: torch.dtype, resize: str = "bilinear"):
        self.feature_fn, self.head = feature_fn, head
        self.size, self.mean, self.std = size, mean, std
        self.device, self.dtype, self.resize = torch.device(device), dtype, resize
        # The real 1000-way ImageNet head when the model has one (None otherwise), and, for an
        # imagenet_subset checkpoint, its label -> ImageNet index list.
        self.imagenet_head: nn.Linear | None = None
        self.subset_indices: list[int] | None = None

    def prepare(self, images: np.ndarray) -> torch.Tensor:
        return to_model_input(images, self.size, self.mean, self.std, self.device, self.dtype,
                              self.resize)


def _freeze(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    model = model.to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    return model


def _checkpoint_norm(meta: dict, path) -> tuple[tuple, tuple]:
    """mean/std a checkpoint was trained with: explicit meta mean/std, else meta['extra']['norm']
    ('cifar' / 'imagenet', as pipeline.teacher saves it), else the rule evaluation uses for a
    model trained from scratch: by its input size (<= 32 px cifar, larger imagenet)."""
    extra = meta.get("extra") or {}
    mean = extra.get("mean", meta.get("mean"))
    std = extra.get("std", meta.get("std"))
    if mean is not None and std is not None:
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"checkpoint {path}: mean/std must have 3 values, got {mean}, {std}")
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if extra.get("norm"):
        return norm_stats(extra["norm"])
    return norm_stats(norm_for_side(int(meta.get("image_size") or 32)))


def _load_backbone(backbone: str, model_path: str | None, image_size: int, device: torch.device,
                   dtype: torch.dtype) -> _Backbone:
    """Classifier backbones (not the VAE), split into feature_fn + head via models.split_model."""
    from . import models  # lazy: keeps `import dc3ray.core.features` light

    if backbone == "efficientnet_lite0":
        model = models.efficientnet_lite0(num_classes=1000, pretrained=True, image_size=image_size)
        mean, std = SYMMETRIC_MEAN, SYMMETRIC_STD
    elif backbone == "resnet18":
        path = _local_file(model_path, "resnet18")
        model = models.build_model("resnet18", 1000, image_size, pretrained=False)
        models.load_weights(model, path)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    elif backbone in ("teacher", "convnet3"):
        path = _local_file(model_path, backbone)
        model, meta = models.load_model_checkpoint(path)
        mean, std = _checkpoint_norm(meta or {}, path)
        # A ConvNet's linear layer fixes its input size: checkpoints run at their own size.
        image_size = int((meta or {}).get("image_size") or image_size)
    else:
        raise ValueError(f"backbone {backbone!r} has no classifier head; choose one of "
                         "efficientnet_lite0, resnet18, teacher, convnet3")
    model = _freeze(model, device, dtype)
    feature_fn, head = models.split_model(model)
    bb = _Backbone(feature_fn, head, image_size, mean, std, device, dtype)
    if isinstance(model, models.ImageNetSubset):
        bb.imagenet_head = models.split_model(model.base)[1]
        bb.subset_indices = model.indices.tolist()
    elif isinstance(head, nn.Linear) and head.out_features == 1000:
        bb.imagenet_head = head
    return bb


def _local_file(path: str | None, backbone: str) -> Path:
    if not path:
        raise ValueError(f"backbone {backbone!r} needs model_path (a local checkpoint file)")
    p = Path(path).expanduser()
    if not p.exists():
        raise MissingPathError(f"backbone {backbone!r}: model_path {p} does not exist; pass a "
                                "local checkpoint (nothing is downloaded)")
    return p


# --------------------------------------------------------------------------------------------
# Embeddings (bins)
# --------------------------------------------------------------------------------------------

class ImageEmbedder:
    """uint8 (N, H, W, 3) -> float32 (N, D) numpy embeddings, batched by the caller.

    `input_size` is the side the caller should decode to (None: keep each image's own size,
    used by the faithful VAE, which upsamples by nearest itself).
    """

    def __init__(self, embed_fn: Callable[[torch.Tensor], torch.Tensor], backbone: _Backbone,
                 input_size: int | None):
        self._embed_fn, self._backbone, self.input_size = embed_fn, backbone, input_size

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, 0), np.float32)
        out = self._embed_fn(self._backbone.prepare(images))
        return out.flatten(1).float().cpu().numpy()


def _load_vae(model_path: str | None, device: torch.device, dtype: torch.dtype):
    from diffusers import AutoencoderKL  # lazy: diffusers is heavy

    if not model_path:
        raise ValueError("embed.backbone='vae' needs embed.model_path: a local AutoencoderKL "
                         "folder (or a Stable Diffusion folder with a vae/ subfolder)")
    p = Path(model_path).expanduser()
    if not p.exists():
        raise MissingPathError(f"embed.model_path {p} does not exist; pass a local VAE folder "
                                "(nothing is downloaded)")
    sub = "vae" if (p / "vae" / "config.json").is_file() else None
    vae = AutoencoderKL.from_pretrained(str(p), subfolder=sub, torch_dtype=dtype)
    return _freeze(vae, device, dtype)


def build_embedder(cfg: EmbedConfig, device: torch.device | str = "cpu", *,
                   faithful: bool = False, dataset_mean=IMAGENET_MEAN,
                   dataset_std=IMAGENET_STD) -> ImageEmbedder:
    """Embedding callable for `cfg.backbone` at `cfg.image_size`; fp16 only on CUDA (cfg.fp16).

    - efficientnet_lite0: offline ImageNet weights, penultimate 1280-d, inputs in [-1, 1].
    - resnet18: torchvision ImageNet layout from cfg.model_path, penultimate 512-d, ImageNet norm.
    - teacher / convnet3: our checkpoint (models.load_model_checkpoint), penultimate features,
      at the checkpoint's own image_size (cfg.image_size is ignored: a ConvNet's head fixes
      it), normalised as the checkpoint records (extra.norm), else by its input size.
    - vae: diffusers AutoencoderKL from cfg.model_path, latent_dist.mean flattened
      (4 * (size/8)^2 values), inputs in [-1, 1] resized bilinearly to cfg.image_size.
      faithful=True: the reference's input instead, i.e. images at their stored size normalised
      with (dataset_mean, dataset_std), then nearest-upsampled to cfg.image_size.
    """
    device = torch.device(device)
    dtype = torch.float16 if _use_fp16(device, cfg.fp16) else torch.float32
    if cfg.backbone == "vae":
        vae = _load_vae(cfg.model_path, device, dtype)

        def embed(x: torch.Tensor) -> torch.Tensor:
            return vae.encode(x).latent_dist.mean

        if faithful:
            bb = _Backbone(embed, None, cfg.image_size, dataset_mean, dataset_std, device, dtype,
                           resize="nearest")
            return ImageEmbedder(embed, bb, input_size=None)
        bb = _Backbone(embed, None, cfg.image_size, SYMMETRIC_MEAN, SYMMETRIC_STD, device, dtype)
        return ImageEmbedder(embed, bb, input_size=cfg.image_size)
    bb = _load_backbone(cfg.backbone, cfg.model_path, cfg.image_size, device, dtype)
    return ImageEmbedder(bb.feature_fn, bb, input_size=cfg.image_size)


# --------------------------------------------------------------------------------------------
# Gradient model
# --------------------------------------------------------------------------------------------

class GradientModel:
    """(uint8 (N, H, W, 3), int64 labels (N,)) -> (e float32 (N, K), h float32 (N, D)) numpy.

    K = the head's outputs: C, or 1000 for the ImageNet head, whose targets are
    label_map[label] (each class's ImageNet-1K index).
    """

    def __init__(self, backbone: _Backbone, head: nn.Module, faithful: bool, head_kind: str,
                 label_map: list[int] | None = None):
        self._backbone, self.head, self.faithful = backbone, head, faithful
        # "pretrained" | "checkpoint" | "zero" | "random" (auto) | "model" | "imagenet"
        self.head_kind = head_kind
        self.input_size = backbone.size
        self.num_classes = head.out_features
        self.label_map = None if label_map is None else np.asarray(label_map, np.int64)

    def __call__(self, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(images) == 0:
            return np.zeros((0, self.num_classes), np.float32), np.zeros((0, 0), np.float32)
        x = self._backbone.prepare(images)
        y = np.array(labels, np.int64)  # a copy: Ray batches are read-only
        if self.label_map is not None:
            if y.min() < 0 or y.max() >= len(self.label_map):
                raise ValueError(f"labels must be in [0, {len(self.label_map)}) for the class "
                                 f"table's {len(self.label_map)} classes, got [{y.min()}, {y.max()}]")
            y = self.label_map[y]
        y = torch.from_numpy(y)
        e, h = gradient_factors(self._backbone.feature_fn, self.head, x, y, self.faithful)
        return e.cpu().numpy(), h.cpu().numpy()


def build_grad_model(cfg: GradConfig, num_classes: int, device: torch.device | str = "cpu", *,
                     faithful: bool = False, head_seed: int = 0,
                     imagenet_indices: list[int] | None = None) -> GradientModel:
    """Backbone + the head whose per-sample CE gradients define similarity (cfg.head).

    Heads (fp32 throughout: gradients are cheap at the last layer):
    - model: the backbone's own head; its out_features must equal num_classes.
    - imagenet: the real 1000-way ImageNet head (efficientnet_lite0, resnet18, an imagenet_subset
      teacher's base, a 1000-way checkpoint) with target = the class's ImageNet-1K index:
      `imagenet_indices` (label order, from the set's imagenet_index.json), an imagenet_subset
      teacher's own indices, or the identity when num_classes == 1000. e is (N, 1000).
    - zero: z = 0, so e = 1/C - onehot(y) is the same for every image of a class and the
      similarity reduces to cos([1, h_i], [1, h_j]) on the frozen features: no made-up
      information, deterministic.
    - random: the reference's randomly initialised C-way head (nn.Linear default init drawn
      from a torch.Generator seeded with head_seed, 0 unless given), a random projection.
    - auto: model for teacher / convnet3 (trained for this task, recommended); for ImageNet
      backbones the pretrained head when num_classes == 1000, else zero, or random when
      faithful (the reference).
    """
    device = torch.device(device)
    bb = _load_backbone(cfg.backbone, cfg.model_path, cfg.image_size, device, torch.float32)
    head = bb.head
    if not isinstance(head, nn.Linear):
        raise ValueError(f"grad.backbone={cfg.backbone!r}: split_model returned a "
                         f"{type(head).__name__} head, expected nn.Linear")
    what = f"grad.backbone={cfg.backbone!r}" + (f" ({cfg.model_path})" if cfg.model_path else "")
    if cfg.head == "model":
        if head.out_features != num_classes:
            raise DataError(f"grad.head=model: {what} has a {head.out_features}-way head but the "
                            f"dataset has {num_classes} classes; use grad.head=imagenet, random "
                            "or zero, or a teacher trained on this class map")
        return GradientModel(bb, head, faithful, "model")
    if cfg.head == "imagenet":
        if bb.imagenet_head is None:
            raise DataError(f"grad.head=imagenet: {what} has no ImageNet-1K head (its head has "
                            f"{head.out_features} outputs); use efficientnet_lite0, resnet18 or "
                            "an imagenet_subset teacher")
        lut = _imagenet_targets(imagenet_indices, bb.subset_indices, num_classes, what)
        return GradientModel(bb, bb.imagenet_head, faithful, "imagenet", label_map=lut)
    if cfg.head in ("random", "zero"):
        return GradientModel(bb, _fresh_head(head.in_features, num_classes, cfg.head == "random",
                                             head_seed, device), faithful, cfg.head)
    # auto: the behaviour from before grad.head existed (feature bytes must not change).
    if cfg.backbone in ("teacher", "convnet3"):
        if head.out_features != num_classes:
            raise DataError(f"grad.model_path {cfg.model_path} has a {head.out_features}-way head "
                             f"but the dataset has {num_classes} classes; use a teacher trained "
                             "on this class map")
        return GradientModel(bb, head, faithful, "checkpoint")
    if head.out_features == num_classes:
        return GradientModel(bb, head, faithful, "pretrained")
    new = _fresh_head(head.in_features, num_classes, faithful, head_seed, device)
    return GradientModel(bb, new, faithful, "random" if faithful else "zero")


def _fresh_head(in_features: int, num_classes: int, random: bool, seed: int,
                device: torch.device) -> nn.Linear:
    """A frozen C-way head: nn.Linear's default uniform init from Generator(seed), or zeros."""
    new = nn.Linear(in_features, num_classes)
    if random:
        g = torch.Generator().manual_seed(int(seed))
        bound = 1.0 / in_features ** 0.5  # nn.Linear's default uniform init range
        with torch.no_grad():
            new.weight.uniform_(-bound, bound, generator=g)
            new.bias.uniform_(-bound, bound, generator=g)
    else:
        nn.init.zeros_(new.weight)
        nn.init.zeros_(new.bias)
    return _freeze(new, device, torch.float32)


def _imagenet_targets(dataset: list[int] | None, model: list[int] | None, num_classes: int,
                      what: str) -> list[int]:
    """label -> ImageNet-1K index for the imagenet head; DataError naming the fix if unknown."""
    if model is not None and dataset is not None and list(model) != list(dataset):
        raise DataError(f"grad.head=imagenet: {what} maps the classes to ImageNet indices "
                        f"{list(model)[:10]} but the dataset's imagenet_index.json gives "
                        f"{list(dataset)[:10]}; use a teacher built on this dataset")
    lut = model if model is not None else dataset
    if lut is None:
        if num_classes == 1000:
            return list(range(1000))  # ImageNet-1K itself: labels are the ImageNet indices
        raise DataError("grad.head=imagenet needs each class's ImageNet-1K index: ingest the "
                        "training set with --class-map <classes.tsv> (it writes "
                        "imagenet_index.json), or choose grad.head=random or zero")
    if len(lut) != num_classes:
        raise DataError(f"grad.head=imagenet: {len(lut)} ImageNet indices for {num_classes} "
                        "classes; re-ingest with the class table of this dataset")
    return [int(i) for i in lut]


def build_scorer(cfg: GradConfig, device: torch.device | str = "cpu"
                 ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """(uint8 (N, H, W, 3), labels (N,)) -> float64 (N,) p(label) under cfg's classifier with
    its own head (a teacher checkpoint: the realism score of RDED), batched by the caller."""
    device = torch.device(device)
    bb = _load_backbone(cfg.backbone, cfg.model_path, cfg.image_size, device, torch.float32)
    if not isinstance(bb.head, nn.Linear):
        raise DataError(f"grad.backbone={cfg.backbone!r} has no classifier head to score with")

    @torch.inference_mode()
    def score(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        probs = torch.softmax(bb.head(bb.feature_fn(bb.prepare(images))).float(), dim=1)
        y = torch.as_tensor(np.asarray(labels, np.int64), device=device)
        return probs.gather(1, y[:, None])[:, 0].double().cpu().numpy()
    return score


__all__ = ["gradient_factors", "to_model_input", "build_embedder", "build_grad_model", "build_scorer",
           "ImageEmbedder", "GradientModel", "IMAGENET_MEAN", "IMAGENET_STD"]
