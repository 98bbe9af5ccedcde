"""The command line is generated from the config dataclasses: flags, defaults, --set, errors."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing

import pytest

from dc3ray import cli
from dc3ray.config import TeacherConfig, field_docs, from_dict


def test_teacher_set_of_a_bare_or_foreign_key_is_refused_by_name(capsys):
    # Once silently ignored: the teacher trained its default 30 epochs.
    assert cli.main(["teacher", "d", "--val", "v", "--out", "o", "--set", "epochs=5"]) == 2
    err = capsys.readouterr().err
    assert "unknown setting(s) epochs" in err and "teacher.epochs" in err
    assert cli.main(["teacher", "d", "--val", "v", "--out", "o", "--set", "eval.epochs=9"]) == 2
    assert "unknown setting(s) eval" in capsys.readouterr().err


def test_teacher_settings_reach_the_config_by_flag_or_set():
    _, cfg = cli.parse_command(["teacher", "d", "--val", "v", "--out", "o", "--epochs", "5"])
    assert cfg.teacher.epochs == 5 and (cfg.data, cfg.val, cfg.out) == ("d", "v", "o")
    _, cfg = cli.parse_command(["teacher", "d", "--val", "v", "--out", "o",
                                "--set", "teacher.epochs=7", "--set", "teacher.use_gpu=true"])
    assert (cfg.teacher.epochs, cfg.teacher.use_gpu) == (7, True)
    _, cfg = cli.parse_command(["teacher", "d", "--val", "v", "--out", "o"])
    assert cfg.teacher == TeacherConfig()


def test_a_setting_shared_by_two_sections_gets_a_dotted_flag():
    _, cfg = cli.parse_command(["select", "d", "--out", "o", "--embed.backbone", "teacher",
                                "--embed.model-path", "t.pt", "--ipc", "3"])
    assert (cfg.embed.backbone, cfg.embed.model_path, cfg.select.ipc) == ("teacher", "t.pt", 3)
    assert cfg.grad.backbone == "efficientnet_lite0"


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_setting_has_a_flag_whose_help_shows_the_dataclass_default(name, capsys):
    cmd = cli.COMMANDS[name]
    with pytest.raises(SystemExit):
        cli.main([name, "--help"])
    def squash(text: str) -> str:  # argparse wraps lines, at spaces and after hyphens
        return "".join(text.split())
    text = squash(capsys.readouterr().out)
    for dest, f, tp, default, owner in cli._leaves(cmd):
        assert squash(field_docs(owner)[f.name]) in text, (name, dest)
        if default is not dataclasses.MISSING and default is not None and dest != "set":
            shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
            assert squash(f"(default: {shown})") in text, (name, dest)


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_a_command_with_only_its_required_arguments_gets_the_dataclass_defaults(name):
    cmd = cli.COMMANDS[name]
    required = {f.name for f in dataclasses.fields(cmd.config)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    values = {n: ["x"] if typing.get_origin(typing.get_type_hints(cmd.config)[n]) is tuple
              else "x" for n in required}
    argv = [name]
    for n in cmd.positional:
        argv += values[n] if isinstance(values[n], list) else [values[n]]
    for n in sorted(required - set(cmd.positional)):
        argv += [cli._flag(n, [n]), values[n]]
    if cmd.config.__name__ == "EvaluateCommand":
        argv += ["--teacher", "t.pt"]
        values["teacher"] = "t.pt"
    got = cli.parse_command(argv)[1]
    assert got == from_dict(cmd.config, {k: list(v) if isinstance(v, list) else v
                                         for k, v in values.items()})


def test_user_errors_from_any_command_exit_2_with_one_line_and_no_traceback(tmp_path, capsys):
    # A ConfigError from a command config's validation (finetune), a DataError from a stage.
    assert cli.main(["finetune-diffusion", "c", "--base", "b", "--out", "o",
                     "--batch-size", "1", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "batch_size=1 < workers=2" in err and "Traceback" not in err
    assert cli.main(["fid", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err


def test_help_needs_no_heavy_import():
    code = ("import sys; from dc3ray import cli\n"
            "try:\n    cli.main(['condense', '--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_condense_table_names_its_ipc_seeds_and_epochs_and_shows_no_spread_for_one_seed():
    from dc3ray.pipeline.demo import format_table
    evals = {"dc3": {"final_mean": 50.0, "final_std": 1.5, "best_mean": 51.0, "best_std": 0.5}}
    three = format_table(evals, ipc=50, seeds=3, epochs=300)
    assert "IPC 50, 3 seeds, 300 epochs" in three and "±1.50" in three
    one = format_table(evals, ipc=1, seeds=1, epochs=30)
    assert "IPC 1, 1 seed, 30 epochs" in one and "±" not in one


def test_without_compensation_the_condensed_set_is_not_called_compensated():
    from dc3ray.core.charts import condition_names
    from dc3ray.pipeline.demo import format_table
    evals = {"dc3": {"final_mean": 50.0, "final_std": 0.0, "best_mean": 51.0, "best_std": 0.0}}
    assert "compensation" in format_table(evals, ipc=10, seeds=1, epochs=30)
    plain = format_table(evals, ipc=10, seeds=1, epochs=30, compensated=False)
    assert "DC3 selection (no compensation)" in plain and "color compensation" not in plain
    assert condition_names(False)["dc3"] == "DC3 selection" != condition_names(True)["dc3"]


def _readme_commands() -> list[list[str]]:
    import re
    import shlex
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    text = text.replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        m = re.search(r"(?:\.venv/bin/)?dc3ray (\w[\w-]*\b.*)", line)
        if m and m.group(1).split()[0] in cli.COMMANDS and "<" not in m.group(1):
            cmd = m.group(1).split("#")[0].split("`")[0]
            found.append(shlex.split(cmd))
    return found


def test_every_command_line_in_the_readme_parses_into_a_valid_config():
    commands = _readme_commands()
    assert len(commands) >= 8
    for argv in commands:
        if argv[0] in ("demo",) or "--help" in argv:
            continue
        name, cfg = cli.parse_command(argv)
        assert name == argv[0] and cfg is not None, argv
