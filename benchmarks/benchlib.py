"""What every benchmark shares: the machine it ran on and one JSON record per benchmark.

A record (benchmarks/results/<name>.json) holds the exact command, the machine (cores, CPU model,
GPU or none, memory), the date, the load average while it ran, and `result`. render.py turns the
records into docs/BENCHMARKS.md, so every figure there carries its command, machine and date.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import shlex
import sys
from importlib.metadata import PackageNotFoundError, version as _version
from pathlib import Path

from dc3ray.core.atomic import write_json

RESULTS = Path(__file__).resolve().parent / "results"
TESTS = Path(__file__).resolve().parents[1] / "tests"


def tiny_diffusion():
    """tests/tiny_diffusion.py: tiny random diffusers pipelines and the real CLIP tokenizer.
    Test support, not product code; the benchmarks that measure plumbing (not models) use it."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    import tiny_diffusion as module
    return module


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    """Cores, CPU model, GPU (name or None), memory: the facts a throughput figure depends on."""
    cpu = cpu_model()
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        mem_gb = None
    gpu = None
    try:
        import torch
        if torch.cuda.is_available():
            gpu = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    # Float results are bit-identical only for one CPU type and these versions (kernels differ).
    libs = {}
    for name, dist in (("torch", "torch"), ("numpy", "numpy"), ("pillow", "pillow")):
        try:
            libs[name] = _version(dist)
        except PackageNotFoundError:
            libs[name] = None
    return {"cores": os.cpu_count(), "cpu": cpu, "gpu": gpu, "memory_gb": mem_gb,
            "python": platform.python_version(), **libs}


def load() -> float | None:
    """1-minute load average: a figure taken under load is slower than the machine is."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory of this process (or its waited-for children) so far, in MiB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)  # Linux reports KiB


def command(argv: list[str] | None) -> str:
    """The command line that reproduces this record, from the repo root."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", shlex.quote(str(script))] + [shlex.quote(a) for a in args])


def save(name: str, result: dict, argv: list[str] | None = None, *, load_before: float | None = None,
         out_dir: str | Path | None = None) -> Path:
    """Write results/<name>.json (atomically) and return its path."""
    out = Path(out_dir) if out_dir else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    record = {"name": name, "command": command(argv), "machine": machine(), "date": utc_now(),
              "load_before": load_before, "load_after": load(), "result": result}
    path = out / f"{name}.json"
    # Insertion order: render.py lays out a record's tables in its key order (row, ipc first).
    write_json(path, record, sort_keys=False)
    print(f"wrote {path}")
    return path



def utc_now() -> str:
    """The date format of every record: minutes, UTC."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
