"""One frozen dataclass per stage. A setting, its default and its help live here only: the
string under a field is its documentation (the CLI's help text is built from it)."""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from .loading import check

Backbone = Literal["efficientnet_lite0", "resnet18", "vae", "teacher", "convnet3"]
GradBackbone = Literal["efficientnet_lite0", "resnet18", "teacher", "convnet3"]
SelectMethod = Literal["dc3", "graphcut", "facility", "random", "herding", "kcenter", "centroid"]
Compensator = Literal["none", "classical", "instructpix2pix", "img2img"]
BlendMode = Literal["gradient", "random", "grid", "none"]
Arch = Literal["convnet3", "resnet18", "resnet18_cifar", "efficientnet_lite0"]

BACKBONES = typing.get_args(Backbone)
SELECT_METHODS = typing.get_args(SelectMethod)
COMPENSATORS = typing.get_args(Compensator)
BLEND_MODES = typing.get_args(BlendMode)
STUDENTS = typing.get_args(Arch)
# Backbones read from a local checkpoint or folder: nothing is downloaded.
_NEEDS_PATH = ("vae", "teacher", "resnet18", "convnet3")

DEFAULT_TEMPLATE = "Adjust the color hue to be {p} and preserve all details and content"
WARM_WORDS = ("sunny", "golden hour", "sepia", "vivid colors", "daylight")
COLD_WORDS = ("rainy", "snowy", "frozen lake", "infrared", "underwater")


@dataclass(frozen=True)
class IngestConfig:
    shard_rows: int = 1000
    """Rows per Parquet file."""
    class_map: str | None = None
    """JSON {name: index} or a text file, one class per line, fixing label order (e.g. to match
    a teacher's logits); default: sorted folder names."""
    num_workers: int = 2
    """Processes decoding images for validation."""

    def __post_init__(self):
        check(self.shard_rows >= 1, f"ingest.shard_rows must be >= 1, got {self.shard_rows}")
        check(self.num_workers >= 1, f"ingest.num_workers must be >= 1, got {self.num_workers}")


@dataclass(frozen=True)
class EmbedConfig:
    """Step 1 of the method: embeddings that define per-class bins."""
    backbone: Backbone = "efficientnet_lite0"
    """Embedding model (efficientnet_lite0 ships ImageNet weights offline)."""
    model_path: str | None = None
    """Local weights: VAE folder, ResNet-18 / teacher checkpoint ('auto' in condense: its teacher)."""
    image_size: int = 224
    """Backbone input side in px."""
    batch_size: int = 64
    """Images per actor call."""
    num_actors: int = 1
    """Actors in the Ray Data pool."""
    num_cpus_per_actor: float = 1.0
    """CPUs reserved per actor (its torch threads)."""
    fp16: bool = True
    """Half precision on CUDA (ignored on CPU)."""

    def __post_init__(self):
        check(self.image_size >= 8, f"embed.image_size must be >= 8, got {self.image_size}")
        check(self.batch_size >= 1, f"embed.batch_size must be >= 1, got {self.batch_size}")
        check(self.num_actors >= 1, f"embed.num_actors must be >= 1, got {self.num_actors}")
        check(self.backbone not in _NEEDS_PATH or bool(self.model_path),
              f"embed.backbone={self.backbone!r} needs embed.model_path (a local path)")


@dataclass(frozen=True)
class GradConfig:
    """Step 2 features: last-layer gradient factors (e = dL/dz, h = penultimate)."""
    backbone: GradBackbone = "efficientnet_lite0"
    """Classifier whose last-layer gradients are the selection features."""
    model_path: str | None = None
    """Local checkpoint of the backbone ('auto' in condense: its teacher)."""
    image_size: int = 224
    """Backbone input side in px."""
    batch_size: int = 64
    """Images per actor call."""
    num_actors: int = 1
    """Actors in the Ray Data pool."""
    num_cpus_per_actor: float = 1.0
    """CPUs reserved per actor (its torch threads)."""

    def __post_init__(self):
        check(self.image_size >= 8, f"grad.image_size must be >= 8, got {self.image_size}")
        check(self.batch_size >= 1, f"grad.batch_size must be >= 1, got {self.batch_size}")
        check(self.backbone not in _NEEDS_PATH or bool(self.model_path),
              f"grad.backbone={self.backbone!r} needs grad.model_path (a local path)")


@dataclass(frozen=True)
class SelectConfig:
    method: SelectMethod = "dc3"
    """dc3 = bins + GraphCut on gradients; the others are single objectives or baselines."""
    ipc: int = 10
    """Images per class."""
    k: int = 10
    """Bins per class (clamped to ipc and class size)."""
    pca_dim: int = 50
    """PCA dimensions before KMeans."""
    seed: int = 42
    """Seed of bins, tie-breaks and random picks."""
    take_all: bool = False
    """A class smaller than ipc keeps all its images instead of failing."""
    faithful: bool = False
    """Reproduce the reference code's quirks (DESIGN.md step 2)."""
    max_in_flight: int = 4
    """Per-class Ray tasks in flight."""

    def __post_init__(self):
        check(self.ipc >= 1, f"select.ipc must be >= 1, got {self.ipc}")
        check(self.k >= 1, f"select.k must be >= 1, got {self.k}")
        check(self.pca_dim >= 1, f"select.pca_dim must be >= 1, got {self.pca_dim}")
        check(self.max_in_flight >= 1, "select.max_in_flight must be >= 1")


@dataclass(frozen=True)
class CompensateConfig:
    compensator: Compensator = "classical"
    """classical (offline color shifts) or a diffusion editor (needs model_path)."""
    model_path: str | None = None
    """Local diffusers folder or hub id (diffusion compensators)."""
    steps: int = 100
    """Denoising steps."""
    guidance: float = 4.0
    """Text guidance scale."""
    image_guidance: float = 1.5
    """Image guidance scale (InstructPix2Pix)."""
    strength: float = 0.5
    """img2img only: how far from the source image the edit may go."""
    size: int = 256
    """Diffusion working resolution in px."""
    max_side: int = 2048
    """A longer input side is scaled down to this first (bounds memory)."""
    template: str = DEFAULT_TEMPLATE
    """Instruction; {p} is replaced by the color word."""
    warm: tuple[str, ...] = WARM_WORDS
    """Warm color words."""
    cold: tuple[str, ...] = COLD_WORDS
    """Cold color words."""
    blend: BlendMode = "gradient"
    """How the warm and cold edits are combined."""
    ramp: int = 20
    """Px of linear ramp for `gradient`."""
    cell: int = 8
    """Cells per side for `grid`."""
    keep_originals: bool = False
    """Also keep the unedited images."""
    seed: int = 0
    """Seed of prompts, blend masks and diffusion noise (per image key)."""
    batch_size: int = 8
    """Images per actor call."""
    num_actors: int = 1
    """Actors in the Ray Data pool."""
    num_cpus_per_actor: float = 1.0
    """CPUs reserved per actor."""

    def __post_init__(self):
        check("{p}" in self.template,
              f"compensate.template must contain '{{p}}' where the color word goes: {self.template!r}")
        check(len(self.warm) > 0 and len(self.cold) > 0,
              "compensate.warm and compensate.cold must each list at least one word")
        check(self.compensator in ("none", "classical") or bool(self.model_path),
              f"compensate.compensator={self.compensator!r} needs compensate.model_path "
              "(a local diffusers folder or a hub id)")
        check(self.steps >= 1, f"compensate.steps must be >= 1, got {self.steps}")
        check(0.0 < self.strength <= 1.0, f"compensate.strength must be in (0, 1], got {self.strength}")
        check(self.size >= 8 and self.size % 8 == 0,
              f"compensate.size must be a multiple of 8 and >= 8, got {self.size}")
        check(self.max_side >= 8, f"compensate.max_side must be >= 8, got {self.max_side}")
        check(self.ramp >= 0, f"compensate.ramp must be >= 0, got {self.ramp}")
        check(self.cell >= 1, f"compensate.cell must be >= 1, got {self.cell}")
        check(self.batch_size >= 1, "compensate.batch_size must be >= 1")


@dataclass(frozen=True)
class TeacherConfig:
    arch: Arch = "convnet3"
    """Teacher architecture."""
    epochs: int = 30
    """Training epochs."""
    batch_size: int = 128
    """Global batch, split over the workers."""
    lr: float = 0.1
    """One-cycle SGD peak learning rate."""
    weight_decay: float = 5e-4
    """SGD weight decay."""
    image_size: int = 32
    """Training side in px."""
    workers: int = 1
    """Ray Train workers (DDP)."""
    use_gpu: bool = False
    """One GPU per worker."""
    seed: int = 0
    """Seed of init, shuffling and augmentation."""

    def __post_init__(self):
        check(self.epochs >= 1, f"teacher.epochs must be >= 1, got {self.epochs}")
        check(self.batch_size >= 1, "teacher.batch_size must be >= 1")
        check(self.workers >= 1, f"teacher.workers must be >= 1, got {self.workers} (a teacher "
              "resumes from Ray Train checkpoints, so it always trains on workers)")


@dataclass(frozen=True)
class EvalConfig:
    """RDED protocol as the DC3 code runs it (DESIGN.md step 4)."""
    student: Arch = "convnet3"
    """Student architecture, trained from scratch."""
    epochs: int = 300
    """Student epochs."""
    seeds: int = 3
    """Students per set (mean +- std over them)."""
    batch_size: int = 0
    """0 = min(IPC x classes, batch_rule)."""
    batch_rule: int = 100
    """Dataset rule of the batch size (RDED's CIFAR-10 scripts use 100)."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay (none on biases and norms)."""
    temperature: float = 20.0
    """KD temperature."""
    patch_factor: int = 2
    """Patch shuffle factor per side."""
    rrc_min_scale: float = 0.5
    """RandomResizedCrop lower scale."""
    image_size: int = 32
    """Training side in px."""
    hard_labels: bool = False
    """Cross-entropy on labels instead of KD (no teacher)."""
    workers: int = 1
    """Ray Train workers per student; 0: train in this process."""
    use_gpu: bool = False
    """One GPU per worker."""
    eval_every: int = 1
    """Evaluate on the held-out split every N epochs."""

    def __post_init__(self):
        check(self.epochs >= 1, f"eval.epochs must be >= 1, got {self.epochs}")
        check(self.seeds >= 1, f"eval.seeds must be >= 1, got {self.seeds}")
        check(self.temperature > 0, "eval.temperature must be > 0")
        check(self.patch_factor >= 1, "eval.patch_factor must be >= 1")
        check(0 < self.rrc_min_scale <= 1, "eval.rrc_min_scale must be in (0, 1]")
        check(self.workers >= 0, f"eval.workers must be >= 0 (0: students train in this "
              f"process, without Ray Train), got {self.workers}")
        check(self.eval_every >= 1, "eval.eval_every must be >= 1")
