"""`make demo`: the cifar10 preset at IPC 10 on real CIFAR-10, with a short evaluation budget.

Prints random vs DC3 selection (top-1 on val); with `--set compensate.compensator=classical`
also DC3 + compensation (the preset leaves compensation opt-in, issue 26). The epoch counts are
reduced so the first run (teacher included) fits in 15 minutes on 2 cores; the full protocol is
`dc3ray condense --config configs/cifar10.yaml`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..config import CondenseConfig, DemoCommand, load_config
from ..errors import DataError

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "configs" / "cifar10.yaml"

# Reduced budgets for a 15-minute first run on a 2-core laptop (README says so).
DEMO_OVERRIDES = [
    "select.ipc=10",
    "teacher.epochs=1",
    "eval.epochs=30", "eval.seeds=1", "eval.eval_every=30",
    # One feature actor with two threads; one extra logical CPU keeps the Parquet read tasks
    # schedulable beside it (Ray sets an actor's torch threads from its num_cpus).
    "embed.num_cpus_per_actor=2", "grad.num_cpus_per_actor=2",
]


def _local_cpus() -> list[str]:
    return [] if os.environ.get("RAY_ADDRESS") else [f"num_cpus={(os.cpu_count() or 1) + 1}"]


def find_cifar10(data: str | None, out: Path, log=print) -> tuple[str, str]:
    """(train, val) folders: `data`, $DC3RAY_DATA, ../shared/data/cifar10, or a torchvision download."""
    explicit = data or os.environ.get("DC3RAY_DATA")
    # A folder the user named must be used (or fail loudly), never silently replaced.
    candidates = [explicit] if explicit else [str(REPO.parent / "shared" / "data" / "cifar10")]
    for c in candidates:
        if (Path(c) / "train").is_dir() and (Path(c) / "val").is_dir():
            return str(Path(c) / "train"), str(Path(c) / "val")
    if explicit:
        raise DataError(f"CIFAR-10 folder {explicit} does not hold train/ and val/ class folders",
                        hint="pass a folder with train/<class>/*.jpg and val/<class>/*.jpg "
                             "(make demo DATA=/path, or $DC3RAY_DATA)")
    log("[demo] no local CIFAR-10 found; trying torchvision's download (needs internet)")
    import torchvision
    root = out / "download"
    try:
        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
    except OSError as e:  # URLError, socket errors: no internet here
        raise DataError(f"no CIFAR-10 found locally ({candidates[0]}) and the download failed "
                        f"({type(e).__name__}: {getattr(e, 'reason', e)})",
                        hint="make demo DATA=/path/with/train_and_val (or set $DC3RAY_DATA)") from None
    from .ingest import ingest
    batches = root / "cifar-10-batches-py"
    # The official test batch is the held-out split here.
    train, val = out / "data" / "train", out / "data" / "val"
    ingest(batches, train, log=log)
    ingest(batches, val, split="test", log=log)
    return str(train), str(val)


def demo_config(data: str | None, out: str, overrides: list[str] | None = None,
                log=print) -> CondenseConfig:
    train, val = find_cifar10(data, Path(out), log)
    return load_config(CondenseConfig, PRESET,
                       [f"data={train}", f"val={val}", f"out={out}"] + DEMO_OVERRIDES
                       + _local_cpus() + list(overrides or []))


def format_table(evals: dict, ipc: int, seeds: int, epochs: int, compensated: bool = True) -> str:
    """Accuracy per condition; mean ± std over seeds, a bare number when there is one seed
    (a ±0.00 from one seed would read as certainty). Without compensation the condensed set
    ("dc3") is the DC3 selection itself."""
    names = {"random": "random selection", "selection_only": "DC3 selection only",
             "dc3": "DC3 + color compensation" if compensated else "DC3 selection (no compensation)"}
    head = f"condensed set (IPC {ipc}, {seeds} seed{'s' if seeds > 1 else ''}, {epochs} epochs)"
    lines = [f"{head:<44} {'final top-1':>13} {'best top-1':>13}"]

    def cell(mean: float, std: float) -> str:
        return f"{mean:6.2f} ±{std:<5.2f}" if seeds > 1 else f"{mean:6.2f}       "
    for key in ("random", "selection_only", "dc3"):
        if key in evals:
            e = evals[key]
            lines.append(f"{names[key]:<44} {cell(e['final_mean'], e['final_std']):>13} "
                         f"{cell(e['best_mean'], e['best_std']):>13}")
    return "\n".join(lines)


def run_demo(data: str | None, out: str, overrides: list[str] | None = None, log=print) -> dict:
    import time

    from .condense import condense
    t0 = time.perf_counter()
    cfg = demo_config(data, out, overrides, log)
    manifest = condense(cfg, log=log)
    log("")
    log(format_table(manifest["eval"], ipc=cfg.select.ipc, seeds=cfg.eval.seeds,
                     epochs=cfg.eval.epochs, compensated=cfg.compensate.edits))
    log(f"\n[demo] a smoke test ({time.perf_counter() - t0:.0f} s wall): reduced budgets, not the "
        "paper protocol. The full protocol (300 epochs, 3 seeds: about 1 h of student training per "
        "condition at IPC 10 on 2 cores, docs/FINDINGS.md): "
        "dc3ray condense --config configs/cifar10.yaml")
    log(f"[demo] outputs in {out} (manifest.json, samples.png, colors.png, eval.json, images/); "
        f"browse runs: mlflow ui --backend-store-uri sqlite:///{Path(out).resolve()}/mlflow.db")
    return manifest


def demo_command(cmd: DemoCommand, log: Callable[[str], None] = print) -> int:
    """`dc3ray demo` (what `make demo` runs)."""
    run_demo(cmd.data, cmd.out, list(cmd.set), log=log)
    return 0
