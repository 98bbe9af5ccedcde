"""Dicts / YAML / `key=value` overrides -> nested frozen dataclasses, and back.

One loader for every config: `load_config(cls, path, overrides)`. A setting's documentation is
the string literal under its field (as litgpt and jsonargparse read it): `field_docs(cls)`.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ..core.fingerprint import json_digest
from ..errors import ConfigError

T = TypeVar("T")


def check(cond: bool, msg: str) -> None:
    """Raise ConfigError(msg) unless `cond`: the one-line validations of __post_init__."""
    if not cond:
        raise ConfigError(msg)


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """{field name: the docstring written under it} for dataclass `cls` (and its bases)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _choices(tp: Any) -> tuple | None:
    return typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else None


def coerce(tp: Any, value: Any, where: str) -> Any:
    """`value` (from YAML or a command line) as type `tp`; ConfigError naming `where` if it is not."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}={value!r} is unknown; choose one of {args}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(inner[0], value, where)
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        elem = args[0] if args else Any
        return tuple(coerce(elem, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
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


def _suggest(cls: type, key: str) -> str:
    """' (did you mean teacher.epochs?)' when `key` is a setting of one of cls's sections."""
    hints = typing.get_type_hints(cls)
    hits = [f"{name}.{key}" for name, tp in hints.items()
            if dataclasses.is_dataclass(tp) and key in {f.name for f in dataclasses.fields(tp)}]
    return f" (did you mean {' or '.join(hits)}?)" if hits else ""


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass `cls` from a (nested) dict; unknown or missing keys are errors naming them."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    prefix = f"{where}." if where else ""
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(prefix + u for u in unknown)}"
            f"{_suggest(cls, unknown[0])}; valid keys here: {', '.join(sorted(fields))}")
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing setting(s) {', '.join(prefix + m for m in missing)}")
    kwargs = {}
    for k, v in data.items():
        f = fields[k]
        # A partial mapping for a section overrides the parent's default instance of it
        # (e.g. CondenseConfig.embed), not the section class's own defaults.
        if dataclasses.is_dataclass(hints[k]) and isinstance(v, dict) and \
                f.default_factory is not dataclasses.MISSING:
            v = deep_merge(to_dict(f.default_factory()), v)
        kwargs[k] = coerce(hints[k], v, prefix + k)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    """Plain, JSON-able dict of a (nested) config; tuples become lists."""
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v
    return conv(cfg)


def deep_merge(base: dict, extra: dict) -> dict:
    """`base` with `extra` merged in, section by section (extra wins)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def nest_dotted(flat: dict) -> dict:
    """{'select.ipc': 2, 'eval': {'lr': 1}} -> {'select': {'ipc': 2}, 'eval': {'lr': 1}}."""
    out: dict = {}
    for k, v in flat.items():
        if isinstance(v, dict) and v:
            v = nest_dotted(v)
        parts = k.split(".")
        for p in reversed(parts[1:]):
            v = {p: v}
        head = parts[0]
        out[head] = deep_merge(out[head], v) if isinstance(v, dict) and isinstance(out.get(head), dict) else v
    return out


def flatten_dotted(d: dict, prefix: str = "") -> dict:
    """{'select': {'ipc': 2}} -> {'select.ipc': 2} (empty mappings stay values)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten_dotted(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def parse_overrides(overrides: list[str] | None) -> dict:
    """['a.b=1', 'c=x'] -> {'a': {'b': 1}, 'c': 'x'}; values parsed as YAML scalars/lists."""
    flat: dict = {}
    for item in overrides or []:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. select.ipc=10)")
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        clash = [k for k in flat if k.startswith(key + ".") or key.startswith(k + ".")]
        if clash:
            raise ConfigError(f"override {item!r} conflicts with the override of {clash[0]}")
        flat[key] = value
    return nest_dotted(flat)


def read_yaml(path: str | Path, what: str = "config file") -> dict:
    """The mapping at the top of a YAML file; ConfigError naming the file otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {p} does not exist")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {p} is not valid YAML: {e}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {p} must hold a mapping at the top level")
    return loaded


def load_config(cls: type[T], path: str | Path | None = None,
                overrides: list[str] | dict | None = None, *, sections_only: bool = False) -> T:
    """`cls` from a YAML file (optional), then overrides ('key=value' strings or a nested dict).

    sections_only: take only the file's sections that `cls` has (a stage command reading the
    teacher: / eval: sections of a condense preset), ignoring its other keys.
    """
    data = read_yaml(path) if path is not None else {}
    if sections_only:
        sections = {f.name for f in dataclasses.fields(cls) if dataclasses.is_dataclass(f.type)
                    or dataclasses.is_dataclass(typing.get_type_hints(cls)[f.name])}
        data = {k: v for k, v in data.items() if k in sections}
    extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    return from_dict(cls, deep_merge(data, extra))


def config_hash(*parts: Any) -> str:
    """Stable short hash of config parts (dataclasses or plain values) for stage caching."""
    return json_digest([to_dict(p) for p in parts])


def optional_inner(tp: Any) -> Any:
    """T for Optional[T] / T | None, else tp itself."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return inner[0] if len(inner) == 1 else tp
    return tp


def choices_of(tp: Any) -> tuple | None:
    """The allowed values of a Literal type (also inside Optional), else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _choices(inner[0]) if len(inner) == 1 else None
    return _choices(tp)
