"""One frozen dataclass per stage. A setting, its default and its help live here only: the
string under a field is its documentation (the CLI's help text is built from it)."""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from .loading import check

Backbone = Literal["efficientnet_lite0", "resnet18", "vae", "teacher", "convnet3"]
GradBackbone = Literal["efficientnet_lite0", "resnet18", "teacher", "convnet3"]
SelectMethod = Literal["dc3", "graphcut", "facility", "random", "herding", "kcenter", "centroid",
                       "rded"]
Compensator = Literal["none", "classical", "instructpix2pix", "img2img"]
BlendMode = Literal["gradient", "random", "grid", "none"]
Arch = Literal["convnet3", "resnet18", "resnet18_cifar", "efficientnet_lite0"]
Norm = Literal["auto", "cifar", "imagenet", "symmetric"]

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
    head: Literal["auto", "model", "imagenet", "random", "zero"] = "auto"
    """Last layer whose CE gradient is taken. model: the backbone's own head (must have one
    output per class); imagenet: the real 1000-way ImageNet head with y = each class's ImageNet
    index (needs the set ingested with a .tsv class table, or 1000 classes); random: a C-way
    nn.Linear-init head seeded 0; zero: a zero C-way head (e = 1/C - onehot); auto: model for
    teacher / convnet3, else the ImageNet head when there are 1000 classes, else zero (random
    with select.faithful)."""

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
    budget: Literal["equal", "proportional"] = "equal"
    """dc3: picks per bin, equal shares (one per bin when k == ipc) or proportional to bin size."""
    # rded defaults are the RDED reference's (its ImageNet scripts: factor 2, 5 crops, mipc 300,
    # RandomResizedCrop's scale 0.08..1); its own CIFAR-10 ConvNet-3 script uses factor 1.
    rded_factor: int = 2
    """rded: each condensed image stitches factor x factor patches (1 for 32 px data)."""
    rded_crops: int = 5
    """rded: random candidate crops per real image, scored by the grad model (the teacher)."""
    rded_min_scale: float = 0.08
    """rded: smallest crop, as a fraction of the image area."""
    rded_candidates: int = 300
    """rded: real images drawn per class (seeded) whose crops compete; 0 = every image."""
    max_in_flight: int = 4
    """Per-class Ray tasks in flight."""

    def __post_init__(self):
        check(self.ipc >= 1, f"select.ipc must be >= 1, got {self.ipc}")
        check(self.rded_factor >= 1 and self.rded_crops >= 1 and 0 < self.rded_min_scale <= 1,
              "select.rded_factor and select.rded_crops must be >= 1 and rded_min_scale in (0, 1]")
        check(self.rded_candidates >= 0,
              f"select.rded_candidates must be >= 0 (0 = every image), got {self.rded_candidates}")
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
    strength: float | None = None
    """Edit strength in [0, 1], recorded per image: classical scales the color shift,
    instructpix2pix mixes each edit with the source ((1-s) source + s edit, before the warm/cold
    blend), img2img is the pipeline's noise strength. None: 1.0 for classical and
    instructpix2pix, 0.5 for img2img (the outputs before this setting). 0 keeps every source."""
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
    assignment: Literal["random", "diverse"] = "random"
    """Word pair per image: random (seeded by key), or diverse (greedy on the set's hue entropy,
    judged by each word's classical shift, also for diffusion compensators)."""
    gate_threshold: float = 0.0
    """Fidelity gate: an edit whose p(true class) under gate_model is below this x the source's
    is retried; 0 = no gate."""
    gate_model: str | None = None
    """Classifier checkpoint of the gate (a dc3ray teacher.pt); 'auto' in condense: its teacher."""
    gate_tries: int = 3
    """Edits tried per image (next word pair each time) before the source is kept."""
    gate_backoff: float = 0.5
    """Strength factor per retry (1 = only the words change)."""
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
        check(self.strength is None or 0.0 <= self.strength <= 1.0,
              f"compensate.strength must be in [0, 1] (or null), got {self.strength}")
        check(self.gate_threshold >= 0.0,
              f"compensate.gate_threshold must be >= 0 (0 = no gate), got {self.gate_threshold}")
        check(self.gate_threshold == 0.0 or bool(self.gate_model),
              f"compensate.gate_threshold={self.gate_threshold} needs compensate.gate_model (a "
              "classifier checkpoint; 'auto' in condense = its teacher)")
        check(self.gate_tries >= 1, f"compensate.gate_tries must be >= 1, got {self.gate_tries}")
        check(0.0 < self.gate_backoff <= 1.0,
              f"compensate.gate_backoff must be in (0, 1], got {self.gate_backoff}")
        check(self.size >= 8 and self.size % 8 == 0,
              f"compensate.size must be a multiple of 8 and >= 8, got {self.size}")
        check(self.max_side >= 8, f"compensate.max_side must be >= 8, got {self.max_side}")
        check(self.ramp >= 0, f"compensate.ramp must be >= 0, got {self.ramp}")
        check(self.cell >= 1, f"compensate.cell must be >= 1, got {self.cell}")
        check(self.batch_size >= 1, "compensate.batch_size must be >= 1")

    @property
    def edits(self) -> bool:
        """Whether this config edits images at all (compensator 'none' keeps the selection)."""
        return self.compensator != "none"

    def edit_strength(self) -> float:
        """`strength`, or its default for the compensator when it is None."""
        if self.strength is not None:
            return self.strength
        return 0.5 if self.compensator == "img2img" else 1.0


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
    norm: Norm = "auto"
    """Input normalisation of a trained teacher (recorded in its checkpoint); auto: cifar for
    training sets stored at <= 32 px, else imagenet."""
    kind: Literal["trained", "imagenet_subset"] = "trained"
    """trained: train `arch` on the data (Ray Train); imagenet_subset: an ImageNet-1K classifier
    restricted to the set's classes, no training (ingest the train set with a .tsv class table;
    only image_size applies)."""
    imagenet_arch: Literal["efficientnet_lite0", "resnet18"] = "efficientnet_lite0"
    """imagenet_subset's classifier (efficientnet_lite0's ImageNet weights ship offline)."""
    imagenet_weights: str | None = None
    """imagenet_subset: local torchvision ImageNet checkpoint of imagenet_arch (needed for
    resnet18; efficientnet_lite0 defaults to its offline weights)."""

    def __post_init__(self):
        check(self.epochs >= 1, f"teacher.epochs must be >= 1, got {self.epochs}")
        check(self.kind != "imagenet_subset" or self.imagenet_arch != "resnet18"
              or bool(self.imagenet_weights),
              "teacher.imagenet_arch=resnet18 needs teacher.imagenet_weights (a local torchvision "
              "ResNet-18 ImageNet .pth; nothing is downloaded)")
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
    """Student input side in px: crops of the set at its stored size are resized to it; larger
    held-out images are resized to image_size / 0.875 and centre-cropped."""
    hard_labels: bool = False
    """Cross-entropy on labels instead of KD (no teacher)."""
    workers: int = 1
    """Ray Train workers per student; 0: train in this process."""
    use_gpu: bool = False
    """One GPU per worker."""
    eval_every: int = 1
    """Evaluate on the held-out split every N epochs."""
    norm: Norm = "auto"
    """Input normalisation of student, teacher and held-out split (one per evaluation). auto:
    with KD the teacher checkpoint's recorded one; with hard labels (or a teacher recording
    none) cifar for sets stored at <= 32 px, else imagenet. An explicit value must agree with
    the teacher's record."""

    def __post_init__(self):
        check(self.epochs >= 1, f"eval.epochs must be >= 1, got {self.epochs}")
        check(self.seeds >= 1, f"eval.seeds must be >= 1, got {self.seeds}")
        check(self.temperature > 0, "eval.temperature must be > 0")
        check(self.patch_factor >= 1, "eval.patch_factor must be >= 1")
        check(0 < self.rrc_min_scale <= 1, "eval.rrc_min_scale must be in (0, 1]")
        check(self.workers >= 0, f"eval.workers must be >= 0 (0: students train in this "
              f"process, without Ray Train), got {self.workers}")
        check(self.eval_every >= 1, "eval.eval_every must be >= 1")
