"""`dc3ray sweep`: a base CondenseConfig and a grid of dotted keys -> lists of values."""
from __future__ import annotations

import dataclasses
import itertools
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import ConfigError
from .condense import CondenseConfig
from .loading import (
    check,
    coerce,
    config_hash,
    deep_merge,
    flatten_dotted,
    from_dict,
    nest_dotted,
    parse_overrides,
    read_yaml,
    to_dict,
)

SWEEP_METRICS = ("best_top1", "final_top1")
# Top-level settings that steer the driver or fix the dataset and scoring split: one per sweep.
UNSWEEPABLE = ("name", "out", "data", "val", "class_map", "evaluate", "compare_random",
               "compare_selection_only", "num_cpus")
# Top-level settings that do not change the condensed set (they only steer the driver or the
# scoring), left out of a condensed set's identity.


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


@dataclass(frozen=True)
class SweepConfig:
    """`dc3ray sweep`: every grid point is `base` with the point's dotted keys set.

    Condensation keys (anything but eval.*) pick the condensed set, built once per distinct
    value combination; eval.* keys only change how a trial trains its student on that set.
    """
    name: str = "sweep"
    base: CondenseConfig = field(default_factory=CondenseConfig)
    grid: dict = field(default_factory=dict)   # dotted key -> list of values
    metric: Literal["best_top1", "final_top1"] = "best_top1"  # ranks trials (higher is better)
    max_concurrent_trials: int = 1              # 1 on a 2-core machine: a trial's students use all cores
    out: str = "runs/sweep"

    def __post_init__(self):
        check(bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name or "")),
               f"sweep name {self.name!r} must be letters, digits, '.', '_' or '-' "
               "(it names a folder and the MLflow experiment)")
        check(self.metric in SWEEP_METRICS,
               f"metric={self.metric!r} is unknown; choose one of {SWEEP_METRICS}")
        check(self.max_concurrent_trials >= 1,
               f"max_concurrent_trials must be >= 1, got {self.max_concurrent_trials}")
        check(bool(self.out), "out must name the sweep's output folder")
        check(bool(self.base.val), "base.val must name a held-out split: every trial is scored on it")
        check(isinstance(self.grid, dict) and len(self.grid) > 0,
               "grid must map at least one setting (e.g. select.ipc) to a list of values")
        grid = {}
        for key, values in self.grid.items():
            check(isinstance(key, str) and bool(key), f"grid key {key!r} must be a dotted setting name")
            check(key.split(".")[0] not in UNSWEEPABLE,
                   f"grid key {key!r} cannot be swept: {', '.join(UNSWEEPABLE)} are fixed per "
                   "sweep (set them in base)")
            _dotted_field(key)
            check(isinstance(values, (list, tuple)) and len(values) > 0,
                   f"grid.{key} must be a non-empty list of values, got {values!r}")
            seen = [json.dumps(v, sort_keys=True, default=str) for v in values]
            check(len(set(seen)) == len(seen), f"grid.{key} lists a value twice: {list(values)}")
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
        keys = list(self.grid) if keys is None else keys
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.grid[k] for k in keys))]

    def config_for(self, point: dict) -> CondenseConfig:
        """`base` with the point's dotted keys set; errors name the grid point."""
        data = deep_merge(to_dict(self.base), nest_dotted(point))
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
    check(not unknown, f"unknown sweep setting(s) {', '.join(map(str, unknown))}; valid keys: "
                        f"{', '.join(sorted(known))}")
    base = data.get("base", {})
    if isinstance(base, (str, Path)):
        base = _read_base(Path(base), Path(root))
    check(isinstance(base, dict), f"base must be a preset path or a mapping, got {base!r}")
    extra = data.get("overrides") or {}
    check(isinstance(extra, dict), f"overrides must be a mapping of settings, got {extra!r}")
    base = deep_merge(base, nest_dotted(extra))
    fields = {k: data[k] for k in _SWEEP_FIELDS if k in data}
    grid = data.get("grid") or {}
    check(isinstance(grid, dict), f"grid must map dotted settings to lists, got {grid!r}")
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
    kwargs = {k: coerce(hints[k], v, k) for k, v in fields.items()}
    return SweepConfig(base=base_cfg, grid=grid, **kwargs)


def _read_base(path: Path, root: Path) -> dict:
    for p in ([path] if path.is_absolute() else [root / path, path]):
        if p.is_file():
            return read_yaml(p, "base preset")
    raise ConfigError(f"base preset {path} not found (looked in {root} and the working directory)")


def load_sweep_config(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """Read a sweep YAML (configs/sweep_*.yaml); a relative `base:` is read next to it first."""
    return sweep_from_dict(read_yaml(path, "sweep config file"), Path(path).parent, overrides)
