"""`dc3ray condense`: the whole job's settings, one section per stage."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .loading import check, config_hash, to_dict
from .stages import (
    CompensateConfig,
    EmbedConfig,
    EvalConfig,
    GradConfig,
    IngestConfig,
    SelectConfig,
    TeacherConfig,
)


@dataclass(frozen=True)
class CondenseConfig:
    """ingest -> teacher -> features -> selection -> compensation -> evaluation."""
    name: str = "cifar10"
    """Run name (names the MLflow experiment dc3ray-<name>)."""
    data: str | None = None
    """Training split: ImageFolder, CIFAR pickle folder, WebDataset tars or ingested shards."""
    val: str | None = None
    """Held-out split used for scoring (needed when evaluate is true)."""
    out: str = "runs/condense"
    """Output folder (condensed set, manifest, MLflow store, stage cache)."""
    class_map: str | None = None
    """Class order for ingest (JSON {name: index} or one class per line)."""
    teacher_path: str | None = None
    """A teacher checkpoint (dc3ray format); empty: one is trained once and cached."""
    evaluate: bool = True
    """Score the condensed set by KD training of students."""
    compare_random: bool = True
    """Also score a random IPC set with the same protocol."""
    compare_selection_only: bool = True
    """Also score the uncompensated selection."""
    num_cpus: int | None = None
    """CPUs of the local Ray instance (ignored with RAY_ADDRESS)."""
    tracking: Literal["required", "optional", "disabled"] = "required"
    """MLflow: required = stop before any work when the store cannot be opened; optional = go on
    without tracking after one warning line; disabled = record no MLflow run."""
    ingest: IngestConfig = field(default_factory=IngestConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    embed: EmbedConfig = field(default_factory=lambda: EmbedConfig(
        backbone="teacher", model_path="auto", image_size=32, batch_size=256))
    grad: GradConfig = field(default_factory=lambda: GradConfig(
        backbone="teacher", model_path="auto", image_size=32, batch_size=256))
    select: SelectConfig = field(default_factory=SelectConfig)
    compensate: CompensateConfig = field(default_factory=CompensateConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        # KD feeds the teacher its own input size; only a trained ConvNet's linear head ties it
        # to one, and a student at another size would see what the teacher never did.
        convnet = self.teacher_path is None and self.teacher.kind == "trained" \
            and self.teacher.arch == "convnet3"
        check(not convnet or self.eval.image_size == self.teacher.image_size,
              f"eval.image_size ({self.eval.image_size}) must equal teacher.image_size "
              f"({self.teacher.image_size}) for a trained convnet3 teacher, whose head fixes its "
              "input size")

    def check_inputs(self) -> None:
        """The inputs a run needs (not a default: a machine's data path is not one)."""
        check(bool(self.data), "data is not set: pass --set data=PATH (a dataset folder or shard "
              "folder) or give it in the preset")
        check(not self.evaluate or bool(self.val),
              "evaluate=true needs val (a held-out split): pass --set val=PATH, or set "
              "evaluate=false to skip scoring")


# Top-level settings that do not change the condensed set (they steer the driver or scoring).
NOT_CONDENSATION = ("name", "out", "evaluate", "compare_random", "compare_selection_only",
                    "num_cpus", "tracking", "eval")


def condensation_id(cfg: CondenseConfig) -> str:
    """Hash of every setting that changes the condensed set (all but eval and driver settings):
    grid points that differ only in eval.* share one id, hence one condensed set."""
    return config_hash({k: v for k, v in to_dict(cfg).items() if k not in NOT_CONDENSATION})
