"""Frozen, validated configs per stage, loadable from YAML with `a.b=value` overrides.

No ray import here: configs cross Ray boundaries as plain dicts (`to_dict`) and are rebuilt
on the far side (`from_dict`).
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .core.fingerprint import json_digest

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting is invalid; the message names the setting and what to do."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


# --------------------------------------------------------------------------------------------
# Stage configs
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IngestConfig:
    shard_rows: int = 1000          # rows per Parquet file
    class_map: str | None = None    # JSON {name: index} or a text file, one class per line
    num_workers: int = 2            # processes validating images in parallel

    def __post_init__(self):
        _check(self.shard_rows >= 1, f"ingest.shard_rows must be >= 1, got {self.shard_rows}")
        _check(self.num_workers >= 1, f"ingest.num_workers must be >= 1, got {self.num_workers}")


BACKBONES = ("efficientnet_lite0", "resnet18", "vae", "teacher", "convnet3")


@dataclass(frozen=True)
class EmbedConfig:
    """Step 1 of the method: embeddings that define per-class bins."""
    backbone: str = "efficientnet_lite0"
    model_path: str | None = None   # local weights/folder (VAE folder, ResNet-18 / teacher ckpt)
    image_size: int = 224
    batch_size: int = 64
    num_actors: int = 1
    num_cpus_per_actor: float = 1.0
    fp16: bool = True               # only used on CUDA

    def __post_init__(self):
        _check(self.backbone in BACKBONES,
               f"embed.backbone={self.backbone!r} is unknown; choose one of {BACKBONES}")
        _check(self.image_size >= 8, f"embed.image_size must be >= 8, got {self.image_size}")
        _check(self.batch_size >= 1, f"embed.batch_size must be >= 1, got {self.batch_size}")
        _check(self.num_actors >= 1, f"embed.num_actors must be >= 1, got {self.num_actors}")
        _check(self.backbone not in ("vae", "teacher", "resnet18", "convnet3") or self.model_path,
               f"embed.backbone={self.backbone!r} needs embed.model_path (a local path)")


@dataclass(frozen=True)
class GradConfig:
    """Step 2 features: last-layer gradient factors (e = dL/dz, h = penultimate)."""
    backbone: str = "efficientnet_lite0"
    model_path: str | None = None
    image_size: int = 224
    batch_size: int = 64
    num_actors: int = 1
    num_cpus_per_actor: float = 1.0

    def __post_init__(self):
        _check(self.backbone in BACKBONES and self.backbone != "vae",
               f"grad.backbone={self.backbone!r} is unknown; choose one of "
               f"{tuple(b for b in BACKBONES if b != 'vae')}")
        _check(self.image_size >= 8, f"grad.image_size must be >= 8, got {self.image_size}")
        _check(self.batch_size >= 1, f"grad.batch_size must be >= 1, got {self.batch_size}")
        _check(self.backbone not in ("teacher", "resnet18", "convnet3") or self.model_path,
               f"grad.backbone={self.backbone!r} needs grad.model_path (a local path)")


SELECT_METHODS = ("dc3", "graphcut", "facility", "random", "herding", "kcenter", "centroid")


@dataclass(frozen=True)
class SelectConfig:
    method: str = "dc3"
    ipc: int = 10
    k: int = 10                     # bins per class (clamped to ipc and class size)
    pca_dim: int = 50
    seed: int = 42
    take_all: bool = False          # a class smaller than ipc keeps all its images instead of failing
    faithful: bool = False          # reproduce the reference code's quirks (DESIGN.md step 2)
    max_in_flight: int = 4          # per-class Ray tasks in flight

    def __post_init__(self):
        _check(self.method in SELECT_METHODS,
               f"select.method={self.method!r} is unknown; choose one of {SELECT_METHODS}")
        _check(self.ipc >= 1, f"select.ipc must be >= 1, got {self.ipc}")
        _check(self.k >= 1, f"select.k must be >= 1, got {self.k}")
        _check(self.pca_dim >= 1, f"select.pca_dim must be >= 1, got {self.pca_dim}")
        _check(self.max_in_flight >= 1, f"select.max_in_flight must be >= 1")


COMPENSATORS = ("none", "classical", "instructpix2pix", "img2img")
BLEND_MODES = ("gradient", "random", "grid", "none")
DEFAULT_TEMPLATE = "Adjust the color hue to be {p} and preserve all details and content"
WARM_WORDS = ("sunny", "golden hour", "sepia", "vivid colors", "daylight")
COLD_WORDS = ("rainy", "snowy", "frozen lake", "infrared", "underwater")


@dataclass(frozen=True)
class CompensateConfig:
    compensator: str = "classical"
    model_path: str | None = None   # local diffusers folder or hub id (diffusion compensators)
    steps: int = 100
    guidance: float = 4.0
    image_guidance: float = 1.5
    strength: float = 0.5           # img2img only
    size: int = 256                 # diffusion working resolution
    max_side: int = 2048            # a longer input side is scaled down to this first (bounds memory)
    template: str = DEFAULT_TEMPLATE
    warm: tuple[str, ...] = WARM_WORDS
    cold: tuple[str, ...] = COLD_WORDS
    blend: str = "gradient"
    ramp: int = 20                  # px of linear ramp for `gradient`
    cell: int = 8                   # cells per side for `grid`
    keep_originals: bool = False
    seed: int = 0
    batch_size: int = 8
    num_actors: int = 1
    num_cpus_per_actor: float = 1.0

    def __post_init__(self):
        _check(self.compensator in COMPENSATORS,
               f"compensate.compensator={self.compensator!r} is unknown; choose one of {COMPENSATORS}")
        _check(self.blend in BLEND_MODES,
               f"compensate.blend={self.blend!r} is unknown; choose one of {BLEND_MODES}")
        _check("{p}" in self.template,
               f"compensate.template must contain '{{p}}' where the color word goes: {self.template!r}")
        _check(len(self.warm) > 0 and len(self.cold) > 0,
               "compensate.warm and compensate.cold must each list at least one word")
        _check(self.compensator in ("none", "classical") or bool(self.model_path),
               f"compensate.compensator={self.compensator!r} needs compensate.model_path "
               "(a local diffusers folder or a hub id)")
        _check(self.steps >= 1, f"compensate.steps must be >= 1, got {self.steps}")
        _check(0.0 < self.strength <= 1.0, f"compensate.strength must be in (0, 1], got {self.strength}")
        _check(self.size >= 8 and self.size % 8 == 0,
               f"compensate.size must be a multiple of 8 and >= 8, got {self.size}")
        _check(self.max_side >= 8, f"compensate.max_side must be >= 8, got {self.max_side}")
        _check(self.ramp >= 0, f"compensate.ramp must be >= 0, got {self.ramp}")
        _check(self.cell >= 1, f"compensate.cell must be >= 1, got {self.cell}")
        _check(self.batch_size >= 1, f"compensate.batch_size must be >= 1")


STUDENTS = ("convnet3", "resnet18", "resnet18_cifar", "efficientnet_lite0")


@dataclass(frozen=True)
class TeacherConfig:
    arch: str = "convnet3"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1                 # one-cycle SGD peak
    weight_decay: float = 5e-4
    image_size: int = 32
    workers: int = 1
    use_gpu: bool = False
    seed: int = 0

    def __post_init__(self):
        _check(self.arch in STUDENTS, f"teacher.arch={self.arch!r} is unknown; choose one of {STUDENTS}")
        _check(self.epochs >= 1, f"teacher.epochs must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, f"teacher.batch_size must be >= 1")
        _check(self.workers >= 1, f"teacher.workers must be >= 1, got {self.workers} (a teacher "
               "resumes from Ray Train checkpoints, so it always trains on workers)")


@dataclass(frozen=True)
class EvalConfig:
    """RDED protocol as the DC3 code runs it (DESIGN.md step 4)."""
    student: str = "convnet3"
    epochs: int = 300
    seeds: int = 3
    batch_size: int = 0             # 0 = min(IPC*C, dataset rule)
    batch_rule: int = 100           # dataset rule (CIFAR-10 IPC>=10 uses 100 in RDED scripts)
    lr: float = 1e-3
    weight_decay: float = 0.01
    temperature: float = 20.0
    patch_factor: int = 2
    rrc_min_scale: float = 0.5
    image_size: int = 32
    hard_labels: bool = False
    workers: int = 1                # Ray Train workers per student; 0: train in this process
    use_gpu: bool = False
    eval_every: int = 1             # evaluate on the held-out split every N epochs

    def __post_init__(self):
        _check(self.student in STUDENTS,
               f"eval.student={self.student!r} is unknown; choose one of {STUDENTS}")
        _check(self.epochs >= 1, f"eval.epochs must be >= 1, got {self.epochs}")
        _check(self.seeds >= 1, f"eval.seeds must be >= 1, got {self.seeds}")
        _check(self.temperature > 0, f"eval.temperature must be > 0")
        _check(self.patch_factor >= 1, f"eval.patch_factor must be >= 1")
        _check(0 < self.rrc_min_scale <= 1, f"eval.rrc_min_scale must be in (0, 1]")
        _check(self.workers >= 0, f"eval.workers must be >= 0 (0: students train in this "
               f"process, without Ray Train), got {self.workers}")
        _check(self.eval_every >= 1, f"eval.eval_every must be >= 1")


# --------------------------------------------------------------------------------------------
# Generic loading: dicts/YAML -> nested frozen dataclasses, with overrides
# --------------------------------------------------------------------------------------------

def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        elem = args[0] if args else Any
        return tuple(_coerce(elem, v, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where} must be an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass `cls` from a (nested) dict; unknown keys are errors naming the key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown setting(s) {', '.join(prefix + u for u in unknown)}; "
            f"valid keys here: {', '.join(sorted(names))}")
    defaults = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        f = defaults[k]
        # A partial mapping for a nested config overrides the parent's default instance
        # (e.g. CondenseConfig.embed), not the nested class's own defaults.
        if dataclasses.is_dataclass(hints[k]) and isinstance(v, dict) and \
                f.default_factory is not dataclasses.MISSING:
            v = deep_merge(to_dict(f.default_factory()), v)
        kwargs[k] = _coerce(hints[k], v, f"{where}.{k}" if where else k)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def to_dict(cfg: Any) -> dict:
    """Plain, JSON-able dict of a (nested) config; tuples become lists."""
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v
    return conv(cfg)


def parse_overrides(overrides: list[str] | None) -> dict:
    """['a.b=1', 'c=x'] -> {'a': {'b': 1}, 'c': 'x'}; values parsed as YAML scalars/lists."""
    out: dict = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. select.ipc=10)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {p}")
        node[parts[-1]] = value
    return out


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(cls: type[T], path: str | Path | None = None,
                overrides: list[str] | None = None) -> T:
    """Load `cls` from a YAML file (optional) and apply `key=value` overrides."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        data = loaded
    data = deep_merge(data, parse_overrides(overrides))
    return from_dict(cls, data)


def config_hash(*parts: Any) -> str:
    """Stable short hash of config parts (dataclasses or plain values) for stage caching."""
    return json_digest([to_dict(p) for p in parts])


# --------------------------------------------------------------------------------------------
# The whole condense job
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CondenseConfig:
    """`dc3ray condense`: ingest -> teacher -> features -> selection -> compensation -> eval."""
    name: str = "cifar10"
    data: str = "../shared/data/cifar10/train"  # raw source (ImageFolder/pickle/tar) or shards
    val: str | None = "../shared/data/cifar10/val"  # held-out split for evaluation
    out: str = "runs/condense"
    class_map: str | None = None
    teacher_path: str | None = None  # our checkpoint; trained (and cached) when needed and absent
    evaluate: bool = True
    compare_random: bool = True     # also score a random IPC set with the same protocol
    compare_selection_only: bool = True  # also score the uncompensated DC3 selection
    num_cpus: int | None = None     # local Ray only; ignored with RAY_ADDRESS
    ingest: IngestConfig = field(default_factory=IngestConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    embed: EmbedConfig = field(default_factory=lambda: EmbedConfig(backbone="teacher", model_path="auto",
                                                                   image_size=32, batch_size=256))
    grad: GradConfig = field(default_factory=lambda: GradConfig(backbone="teacher", model_path="auto",
                                                                image_size=32, batch_size=256))
    select: SelectConfig = field(default_factory=SelectConfig)
    compensate: CompensateConfig = field(default_factory=CompensateConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        _check(bool(self.data), "data must name a dataset folder or shard folder")
        _check(not self.evaluate or bool(self.val),
               "evaluate=true needs val (a held-out split); set evaluate=false to skip scoring")
        _check(self.eval.image_size == self.teacher.image_size or self.teacher_path is not None,
               f"eval.image_size ({self.eval.image_size}) must equal teacher.image_size "
               f"({self.teacher.image_size}) so the teacher sees what the student sees")


# --------------------------------------------------------------------------------------------
# Sweeps (`dc3ray sweep`): a base CondenseConfig and a grid of dotted keys -> values
# --------------------------------------------------------------------------------------------

SWEEP_METRICS = ("best_top1", "final_top1")
# Top-level settings that steer the driver or fix the dataset and scoring split: one per sweep.
UNSWEEPABLE = ("name", "out", "data", "val", "class_map", "evaluate", "compare_random",
               "compare_selection_only", "num_cpus")
# Top-level settings that do not change the condensed set (they only steer the driver or the
# scoring), left out of a condensed set's identity.
_NOT_CONDENSATION = ("name", "out", "evaluate", "compare_random", "compare_selection_only",
                     "num_cpus", "eval")


def _dotted_field(key: str) -> None:
    """Raise ConfigError unless `key` (e.g. 'select.ipc') names one leaf setting of CondenseConfig."""
    cls, parts = CondenseConfig, key.split(".")
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        where = ".".join(parts[:i]) or "the top level"
        if part not in fields:
            raise ConfigError(f"grid key {key!r} is not a setting: {where} has "
                              f"{', '.join(sorted(fields))}")
        tp = typing.get_type_hints(cls)[part]
        if dataclasses.is_dataclass(tp):
            if i == len(parts) - 1:
                raise ConfigError(f"grid key {key!r} is a whole section; sweep one of its "
                                  f"settings, e.g. {key}.{dataclasses.fields(tp)[0].name}")
            cls = tp
        elif i < len(parts) - 1:
            raise ConfigError(f"grid key {key!r} is not a setting: {'.'.join(parts[:i + 1])} "
                              "has no sub-settings")


def set_dotted(data: dict, key: str, value: Any) -> dict:
    """Copy of nested dict `data` with dotted `key` ('select.ipc') set to `value`."""
    head, _, rest = key.partition(".")
    out = dict(data)
    if rest:
        inner = out.get(head)
        out[head] = set_dotted(inner if isinstance(inner, dict) else {}, rest, value)
    else:
        out[head] = value
    return out


def nest_dotted(flat: dict) -> dict:
    """{'select.ipc': 2, 'eval': {'lr': 1}} -> {'select': {'ipc': 2}, 'eval': {'lr': 1}}."""
    out: dict = {}
    for k, v in flat.items():
        if isinstance(v, dict) and "." not in k:
            v = nest_dotted(v)
            out[k] = deep_merge(out[k], v) if isinstance(out.get(k), dict) else v
        else:
            cur = out
            for p in k.split(".")[:-1]:
                cur = cur.setdefault(p, {})
            cur[k.split(".")[-1]] = v
    return out


def condensation_id(cfg: CondenseConfig) -> str:
    """Hash of every setting that changes the condensed set (all but eval and driver settings).

    Grid points that differ only in eval.* share one id, hence one condensed set.
    """
    d = {k: v for k, v in to_dict(cfg).items() if k not in _NOT_CONDENSATION}
    return config_hash(d)


@dataclass(frozen=True)
class SweepConfig:
    """`dc3ray sweep`: every grid point is `base` with the point's dotted keys set.

    Condensation keys (anything but eval.*) pick the condensed set, built once per distinct
    value combination; eval.* keys only change how a trial trains its student on that set.
    """
    name: str = "sweep"
    base: CondenseConfig = field(default_factory=CondenseConfig)
    grid: dict = field(default_factory=dict)   # dotted key -> list of values
    metric: str = "best_top1"                   # ranks trials (higher is better)
    max_concurrent_trials: int = 1              # 1 on a 2-core machine: a trial's students use all cores
    out: str = "runs/sweep"

    def __post_init__(self):
        import re
        _check(bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name or "")),
               f"sweep name {self.name!r} must be letters, digits, '.', '_' or '-' "
               "(it names a folder and the MLflow experiment)")
        _check(self.metric in SWEEP_METRICS,
               f"metric={self.metric!r} is unknown; choose one of {SWEEP_METRICS}")
        _check(self.max_concurrent_trials >= 1,
               f"max_concurrent_trials must be >= 1, got {self.max_concurrent_trials}")
        _check(bool(self.out), "out must name the sweep's output folder")
        _check(bool(self.base.val), "base.val must name a held-out split: every trial is scored on it")
        _check(isinstance(self.grid, dict) and len(self.grid) > 0,
               "grid must map at least one setting (e.g. select.ipc) to a list of values")
        grid = {}
        for key, values in self.grid.items():
            _check(isinstance(key, str) and bool(key), f"grid key {key!r} must be a dotted setting name")
            _check(key.split(".")[0] not in UNSWEEPABLE,
                   f"grid key {key!r} cannot be swept: {', '.join(UNSWEEPABLE)} are fixed per "
                   "sweep (set them in base)")
            _dotted_field(key)
            _check(isinstance(values, (list, tuple)) and len(values) > 0,
                   f"grid.{key} must be a non-empty list of values, got {values!r}")
            seen = [json.dumps(v, sort_keys=True, default=str) for v in values]
            _check(len(set(seen)) == len(seen), f"grid.{key} lists a value twice: {list(values)}")
            grid[key] = list(values)
        object.__setattr__(self, "grid", grid)
        for point in self.points():  # fail now, not after an hour of condensing
            self.config_for(point)

    @property
    def condensation_keys(self) -> list[str]:
        return [k for k in self.grid if not k.startswith("eval.")]

    @property
    def trial_keys(self) -> list[str]:
        return [k for k in self.grid if k.startswith("eval.")]

    def points(self, keys: list[str] | None = None) -> list[dict]:
        """Cartesian product of the grid (or of `keys` only), in grid order."""
        import itertools
        keys = list(self.grid) if keys is None else keys
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.grid[k] for k in keys))]

    def config_for(self, point: dict) -> CondenseConfig:
        """`base` with the point's dotted keys set; errors name the grid point."""
        data = to_dict(self.base)
        for k, v in point.items():
            data = set_dotted(data, k, v)
        try:
            return from_dict(CondenseConfig, data)
        except ConfigError as e:
            raise ConfigError(f"grid point {point}: {e}") from None

    def identity(self) -> str:
        """Hash of what the results depend on (not out / max_concurrent_trials)."""
        base = {k: v for k, v in to_dict(self.base).items() if k not in ("out", "num_cpus")}
        return config_hash(self.name, base, self.grid, self.metric)


_SWEEP_FIELDS = ("name", "metric", "max_concurrent_trials", "out")


def sweep_from_dict(data: dict, root: str | Path = ".",
                    overrides: list[str] | None = None) -> SweepConfig:
    """Build a SweepConfig from its YAML form.

    `data`: {base: preset path (relative to `root`, then the working directory) or inline
    mapping, overrides: mapping applied to base (nested or dotted keys), grid: {dotted key:
    [values]}, metric, max_concurrent_trials, name, out}. `overrides` ('key=value' strings):
    name/metric/max_concurrent_trials/out set the sweep's own field, `grid.<key>=[..]` one grid
    axis, `base.<key>=v` or any other key a base setting (e.g. eval.epochs=30).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"a sweep config must be a mapping, got {type(data).__name__}")
    known = set(_SWEEP_FIELDS) | {"base", "overrides", "grid"}
    unknown = sorted(set(data) - known)
    _check(not unknown, f"unknown sweep setting(s) {', '.join(map(str, unknown))}; valid keys: "
                        f"{', '.join(sorted(known))}")
    base = data.get("base", {})
    if isinstance(base, (str, Path)):
        base = _read_base(Path(base), Path(root))
    _check(isinstance(base, dict), f"base must be a preset path or a mapping, got {base!r}")
    extra = data.get("overrides") or {}
    _check(isinstance(extra, dict), f"overrides must be a mapping of settings, got {extra!r}")
    base = deep_merge(base, nest_dotted(extra))
    fields = {k: data[k] for k in _SWEEP_FIELDS if k in data}
    grid = data.get("grid") or {}
    _check(isinstance(grid, dict), f"grid must map dotted settings to lists, got {grid!r}")
    grid = flatten_dotted(grid)  # nested sections (select: {ipc: [..]}) read as dotted keys
    for item in overrides or []:
        for key, value in flatten_dotted(parse_overrides([item])).items():
            if key in _SWEEP_FIELDS:
                fields[key] = value
            elif key.startswith("grid."):
                grid[key[len("grid."):]] = value
            else:
                base = deep_merge(base, nest_dotted({key.removeprefix("base."): value}))
    try:
        base_cfg = from_dict(CondenseConfig, base)
    except ConfigError as e:
        raise ConfigError(f"base: {e}") from None
    hints = typing.get_type_hints(SweepConfig)
    kwargs = {k: _coerce(hints[k], v, k) for k, v in fields.items()}
    return SweepConfig(base=base_cfg, grid=grid, **kwargs)


def flatten_dotted(d: dict, prefix: str = "") -> dict:
    """{'select': {'ipc': 2}} -> {'select.ipc': 2} (empty mappings stay values)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten_dotted(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _read_base(path: Path, root: Path) -> dict:
    for p in ([path] if path.is_absolute() else [root / path, path]):
        if p.is_file():
            loaded = yaml.safe_load(p.read_text()) or {}
            _check(isinstance(loaded, dict), f"base preset {p} must hold a mapping at the top level")
            return loaded
    raise ConfigError(f"base preset {path} not found (looked in {root} and the working directory)")


def load_sweep_config(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """Read a sweep YAML (configs/sweep_*.yaml); a relative `base:` is read next to it first."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"sweep config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"sweep config file {p} is not valid YAML: {e}") from None
    return sweep_from_dict(data, p.parent, overrides)
