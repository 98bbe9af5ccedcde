"""Helpers shared by the Ray Job entry scripts: run a dc3ray command as a job, and say where the
driver runs and where outputs went.

No pipeline logic lives here (that is `dc3ray.pipeline`); flags come from the same config
dataclasses as the `dc3ray` command line (`dc3ray.cli`).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

# `python jobs/x.py` puts jobs/ on sys.path, not the repo: import dc3ray from the checkout this
# script belongs to (the uploaded --working-dir), not from whatever the image has installed.
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(1, str(REPO))

# The Ray Jobs supervisor sets this (and RAY_ADDRESS) in the driver's environment.
_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"

EPILOG = """\
Inside a Ray Job, RAY_ADDRESS is set by the job supervisor and the driver joins that cluster;
run by hand without RAY_ADDRESS it starts a local Ray instance. Output folders (and inputs that
are not part of the repo) must be absolute paths on storage that every node sees: a relative
path lands in the job's temporary working dir on the head node.
"""


def in_ray_job() -> bool:
    """True when this process is the driver of a submitted Ray Job."""
    return _JOB_ENV in os.environ


def check_paths(**paths: str | None) -> None:
    """Warn about relative output paths inside a Ray Job.

    `ray job submit --working-dir .` runs the driver in a temporary copy of the repo on the head
    node: a relative `out` lands there and is deleted with it. Inputs may stay relative (they
    resolve inside the copy) only when they are part of the repo.
    """
    if not in_ray_job():
        if not os.environ.get("RAY_ADDRESS"):
            print("[job] RAY_ADDRESS is not set: starting a local Ray instance "
                  "(submit with `ray job submit` to run on a cluster)", flush=True)
        return
    for name, value in paths.items():
        if value and not Path(value).is_absolute() and "://" not in value:
            print(f"[job] warning: {name}={value} is relative: inside a Ray Job it resolves in the "
                  f"job's temporary working dir ({os.getcwd()}); use an absolute path on storage "
                  "every node sees", file=sys.stderr, flush=True)


def describe_cluster() -> str:
    """One line: the Ray job id, the cluster address, nodes and their CPUs/GPUs (Ray must be up)."""
    import ray
    ctx = ray.get_runtime_context()
    nodes = [n for n in ray.nodes() if n["Alive"]]
    cpus = sum(n["Resources"].get("CPU", 0) for n in nodes)
    gpus = sum(n["Resources"].get("GPU", 0) for n in nodes)
    return (f"ray job {ctx.get_job_id()} on {ctx.gcs_address}: {len(nodes)} node(s), {cpus:g} CPU, "
            f"{gpus:g} GPU")


def print_outputs(title: str, outputs: dict[str, str | None]) -> None:
    """Print the absolute location of every output, one per line, for the job's log."""
    print(f"[{title}] outputs:", flush=True)
    width = max(len(k) for k in outputs)
    for key, value in outputs.items():
        if value is None:
            continue
        shown = value if "://" in value else str(Path(value).resolve())
        print(f"  {key:<{width}}  {shown}", flush=True)


def run_job(command: Any, argv: list[str] | None, prog: str,
            paths: Callable[[Any], dict[str, str | None]],
            outputs: Callable[[Any], dict[str, str | None]], epilog: str = "") -> int:
    """Parse `argv` with `command`'s flags (a dc3ray command name, or a cli.Command of the
    script's own), warn about relative `paths(cfg)`, run it, then print the cluster and
    `outputs(cfg)`. User errors print one line and return 2."""
    from dc3ray.cli import command_parser, run_parsed

    parser = command_parser(command, prog)
    parser.epilog = EPILOG + ("\n" + epilog if epilog else "")
    args = parser.parse_args(argv)  # first: --help needs no heavy import

    def after(cfg) -> None:
        print(describe_cluster(), flush=True)
        print_outputs(Path(prog).stem, outputs(cfg))

    return run_parsed(args, prog, before=lambda cfg: check_paths(**paths(cfg)), after=after)
