"""`dc3ray` command line: a table of subcommand -> (config dataclass, function).

Flags, help texts and defaults are derived from the config dataclasses (dc3ray.config), so a
setting and its default are written once. `--set key=value` reaches any setting of the
command's config; unknown keys are errors naming them. The `jobs/` scripts use the same table.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import sys
import typing
from dataclasses import dataclass
from typing import Any, Callable

from . import config as C
from .errors import UserError

EPILOG = """\
the whole job in one command (preset + overrides):
  dc3ray condense --config configs/cifar10.yaml --set select.ipc=50 --set compensate.compensator=classical --set compensate.blend=grid
  dc3ray demo                       # cifar10 preset, IPC 10, short evaluation (what `make demo` runs)

or stage by stage (CIFAR-10 JPEG folders):
  dc3ray ingest ../shared/data/cifar10/train runs/c10/train
  dc3ray ingest ../shared/data/cifar10/val runs/c10/val --class-map runs/c10/train/class_map.json
  dc3ray teacher runs/c10/train --val runs/c10/val --out runs/c10/teacher --epochs 30
  dc3ray select runs/c10/train --method dc3 --ipc 10 --out runs/c10/dc3_10 \\
      --embed.backbone teacher --embed.model-path runs/c10/teacher/teacher.pt --embed.image-size 32 \\
      --grad.backbone teacher --grad.model-path runs/c10/teacher/teacher.pt --grad.image-size 32
  dc3ray compensate runs/c10/dc3_10/condensed --out runs/c10/dc3_10_comp
  dc3ray evaluate runs/c10/dc3_10_comp --val runs/c10/val --teacher runs/c10/teacher/teacher.pt --out runs/c10/eval
  dc3ray colors runs/c10/dc3_10/condensed runs/c10/dc3_10_comp --out colors.png

`dc3ray COMMAND --help` lists every setting of a command with its default.
Ray: local by default (all cores); set RAY_ADDRESS to use a running cluster.
"""


@dataclass(frozen=True)
class Command:
    config: type
    """The command's config dataclass: the source of its flags."""
    run: str | Callable[[Any], int]
    """'module:function' (imported when run) or a function, called with the config; returns an
    exit code."""
    positional: tuple[str, ...] = ()
    """Top-level fields taken as positional arguments, in order."""
    preset: bool = False
    """Takes --config PRESET (a condense preset; stage commands read only their sections)."""
    section_flags: bool = True
    """Each setting of a section gets a flag (--epochs, or --embed.backbone when ambiguous)."""


COMMANDS: dict[str, Command] = {
    "ingest": Command(C.IngestCommand, "dc3ray.pipeline.ingest:ingest_command", ("src", "out")),
    "info": Command(C.InfoCommand, "dc3ray.pipeline.ingest:info_command", ("path",)),
    "teacher": Command(C.TeacherCommand, "dc3ray.pipeline.teacher:teacher_command", ("data",),
                       preset=True),
    "evaluate": Command(C.EvaluateCommand, "dc3ray.pipeline.evaluate:evaluate_command",
                        ("condensed",), preset=True),
    "select": Command(C.SelectCommand, "dc3ray.pipeline.select:select_command", ("data",),
                      preset=True),
    "compensate": Command(C.CompensateCommand, "dc3ray.pipeline.compensate:compensate_command",
                          ("condensed",), preset=True),
    "colors": Command(C.ColorsCommand, "dc3ray.pipeline.colors:colors_command", ("sets",)),
    "condense": Command(C.CondenseConfig, "dc3ray.pipeline.condense:condense_command",
                        preset=True, section_flags=False),
    "demo": Command(C.DemoCommand, "dc3ray.pipeline.demo:demo_command"),
    "sweep": Command(C.SweepCommand, "dc3ray.pipeline.sweep:sweep_command"),
    "fid": Command(C.FidCommand, "dc3ray.pipeline.fid:fid_command", ("set_a", "set_b")),
    "finetune-diffusion": Command(C.FinetuneConfig, "dc3ray.pipeline.finetune:finetune_command",
                                  ("condensed",)),
    "generate": Command(C.GenerateConfig, "dc3ray.pipeline.generate:generate_command"),
}
for _name, _cmd in COMMANDS.items():  # each config documents its command
    assert _cmd.config.__doc__, f"{_cmd.config.__name__} needs a docstring: it is `{_name} --help`"


# --------------------------------------------------------------------------------------------
# Flags from dataclass fields
# --------------------------------------------------------------------------------------------

def _leaves(cmd: Command) -> list[tuple[str, dataclasses.Field, Any, Any, type]]:
    """(dest, field, type, default, owner class) of every setting that gets an argument."""
    hints = typing.get_type_hints(cmd.config)
    out = []
    for f in dataclasses.fields(cmd.config):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            if not cmd.section_flags:
                continue
            section = f.default_factory()
            sub = typing.get_type_hints(tp)
            out += [(f"{f.name}.{g.name}", g, sub[g.name], getattr(section, g.name), tp)
                    for g in dataclasses.fields(tp)]
        elif tp is not dict:
            default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            out.append((f.name, f, tp, default, cmd.config))
    return out


def _flag(dest: str, taken: list[str]) -> str:
    """--epochs for a name used once in the command, --embed.backbone when it is ambiguous."""
    leaf = dest.rsplit(".", 1)[-1]
    name = leaf if taken.count(leaf) == 1 else dest
    return "--" + name.replace("_", "-")


def _add_argument(p: argparse.ArgumentParser, cmd: Command, dest: str, f: dataclasses.Field,
                  tp: Any, default: Any, owner: type, taken: list[str]) -> None:
    doc = C.field_docs(owner).get(f.name, "")
    required = default is dataclasses.MISSING
    base = C.loading.optional_inner(tp)
    kw: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS}
    choices = C.loading.choices_of(tp)
    if choices:
        kw["choices"] = choices
    if dest == "set":
        kw.update(action="append", metavar="KEY=VALUE")
    elif base is bool:
        kw["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(base) is tuple:
        kw["nargs"] = "+"
    if not required and dest != "set" and default is not None:
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        doc += f" (default: {shown})"
    if "action" not in kw and "choices" not in kw:
        kw["metavar"] = f.name.upper()
    if dest in cmd.positional:
        kw.pop("dest")
        p.add_argument(dest, help=doc, **kw)
    else:
        p.add_argument(_flag(dest, taken), help=doc, required=required, **kw)


def _subparser(sub, name: str, cmd: Command, prog: str | None = None) -> argparse.ArgumentParser:
    doc = inspect.cleandoc(cmd.config.__doc__ or "")
    kwargs = dict(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p = sub.add_parser(name, help=doc.splitlines()[0] if doc else None, **kwargs) if sub else \
        argparse.ArgumentParser(prog=prog, **kwargs)
    leaves = _leaves(cmd)
    taken = [d.rsplit(".", 1)[-1] for d, *_ in leaves]
    for dest in cmd.positional:  # positionals in the declared order
        d, f, tp, default, owner = next(x for x in leaves if x[0] == dest)
        _add_argument(p, cmd, d, f, tp, default, owner, taken)
    for d, f, tp, default, owner in leaves:
        if d not in cmd.positional:
            _add_argument(p, cmd, d, f, tp, default, owner, taken)
    if cmd.preset:
        p.add_argument("--config", default=None, metavar="PRESET",
                       help="YAML preset (configs/*.yaml)" + (
                           "" if not cmd.section_flags else "; only its sections that this "
                           "command has are read"))
    if not any(d == "set" for d, *_ in leaves):
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set",
                       help="any setting of this command, e.g. " + _example(cmd) + " (repeatable)")
    p.add_argument("--verbose", action="store_true", default=False,
                   help="show Ray's own logs and full tracebacks")
    p.set_defaults(_command=cmd)
    return p


def _example(cmd: Command) -> str:
    for f in dataclasses.fields(cmd.config):
        if dataclasses.is_dataclass(typing.get_type_hints(cmd.config)[f.name]):
            return f"{f.name}.{dataclasses.fields(f.default_factory())[0].name}=..."
    return f"{dataclasses.fields(cmd.config)[-1].name}=..."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dc3ray", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Dataset Condensation with Color Compensation (DC3) on Ray: keep a few "
                    "images per class, color-compensate them, and score them by distillation.",
        epilog=EPILOG)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, cmd in COMMANDS.items():
        _subparser(sub, name, cmd)
    return p


def command_parser(cmd: str | Command, prog: str) -> argparse.ArgumentParser:
    """The parser of one command alone (what a `jobs/` script takes): a name of COMMANDS, or a
    Command of the script's own."""
    return _subparser(None, prog, COMMANDS[cmd] if isinstance(cmd, str) else cmd, prog=prog)


def command_config(args: argparse.Namespace) -> Any:
    """The command's config from parsed arguments: preset, then flags, then --set (last wins)."""
    cmd = args._command
    values = vars(args)
    flags = C.nest_dotted({d: values[d] for d, *_ in _leaves(cmd) if d in values})
    if "set" in values and not any(d == "set" for d, *_ in _leaves(cmd)):
        flags = C.deep_merge(flags, C.parse_overrides(values["set"]))
    preset = values.get("config") if cmd.preset else None
    return C.load_config(cmd.config, preset, flags, sections_only=cmd.section_flags)


def parse_command(argv: list[str]) -> tuple[str, Any]:
    """(command name, its config) for a command line, without running it."""
    args = build_parser().parse_args(argv)
    return args.command, command_config(args)


def function_of(cmd: Command) -> Callable[..., int]:
    if callable(cmd.run):
        return cmd.run
    module, fn = cmd.run.split(":")
    return getattr(importlib.import_module(module), fn)


def run_parsed(args: argparse.Namespace, prog: str,
               before: Callable[[Any], None] | None = None,
               after: Callable[[Any], None] | None = None) -> int:
    """Build the config, call the command (between `before(cfg)` and `after(cfg)`); a UserError
    prints one line (+ hint) and returns 2. --verbose keeps the traceback."""
    from .logs import setup_console
    try:
        cfg = command_config(args)
        setup_console(verbose=args.verbose)
        if before is not None:
            before(cfg)
        rc = int(function_of(args._command)(cfg) or 0)
        if after is not None:
            after(cfg)
        return rc
    except UserError as e:
        if args.verbose:
            import traceback
            traceback.print_exc()
        print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
        if e.hint:
            print(f"  hint: {e.hint}", file=sys.stderr, flush=True)
        return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_parsed(args, f"dc3ray {args.command}")


if __name__ == "__main__":
    sys.exit(main())
