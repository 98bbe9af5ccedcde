"""Accuracy table on real CIFAR-10 (issue 9, part 1): condense from train, score on val.

Every row is a condensed set built by dc3ray's own pipeline functions, scored by the KD protocol
(ConvNet-3 student, 300 epochs, 3 seeds by default) against a ConvNet-3 teacher trained by
`dc3ray teacher`. Rows:

  random, herding, kcenter, facility     selection baselines (no compensation)
  dc3_select                             DC3 selection only
  dc3_classical, random_classical        + the classical color compensator
  dc3_diffusion                          + InstructPix2Pix (only with --diffusion-model and a GPU;
                                         otherwise recorded as "not measured" with the reason)
  <row>/hard                             the same set trained with hard labels (CE, no teacher)

The run is resumable at every level and accumulates across invocations: teacher features are
computed once (work/features), each set once (work/sets/<set>), each evaluation keeps its
finished seeds (work/eval/<row>_ipc<k>/seeds/). A later call with other --rows/--ipc adds to
the same table. The record (results/accuracy_cifar10.json) lists every requested cell, measured
or not, so a missing cell is visible, never silently absent.

  python benchmarks/accuracy_cifar10.py --train runs/cifar10/train --val runs/cifar10/val \\
      --teacher runs/bench/teacher_c3/teacher.pt --work runs/bench/acc --rows random --ipc 10 50
  python benchmarks/accuracy_cifar10.py --work runs/bench/acc --report-only   # re-collect

CPU cost on the 2-core sandbox with nothing else running: a ConvNet-3 seed at 300 epochs is
~3.5 min at IPC 1, ~8.5 min at IPC 10 and ~29 min at IPC 50 (measured, docs/BENCHMARKS.md), so
the full table (8 rows x 3 IPCs x 3 seeds + hard labels) is about a day of CPU; on a GPU it is
an afternoon. Run it row by row.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load, save  # noqa: E402

ROWS = {  # row -> (selection method, compensator or None)
    "random": ("random", None),
    "herding": ("herding", None),
    "kcenter": ("kcenter", None),
    "facility": ("facility", None),
    "dc3_select": ("dc3", None),
    "dc3_classical": ("dc3", "classical"),
    "random_classical": ("random", "classical"),
    "dc3_diffusion": ("dc3", "instructpix2pix"),
}
HARD_SUFFIX = "/hard"
DEFAULT_ROWS = list(ROWS) + ["random/hard", "dc3_select/hard", "dc3_classical/hard"]
MODEL_FREE = ("random",)


def parse_row(row: str) -> tuple[str, bool]:
    base, hard = (row[:-len(HARD_SUFFIX)], True) if row.endswith(HARD_SUFFIX) else (row, False)
    if base not in ROWS:
        raise SystemExit(f"--rows: unknown row {row!r}; choose from {DEFAULT_ROWS} "
                         f"(any row + '{HARD_SUFFIX}' for hard labels)")
    return base, hard


def _timing_file(work: Path) -> Path:
    return work / "timings.json"


def _record_timing(work: Path, name: str, seconds: float) -> None:
    f = _timing_file(work)
    data = json.loads(f.read_text()) if f.is_file() else {}
    data[name] = round(seconds, 2)
    f.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _timing(work: Path, name: str) -> float | None:
    f = _timing_file(work)
    return json.loads(f.read_text()).get(name) if f.is_file() else None


def _features(args, work: Path) -> Path:
    """Teacher-backbone embeddings and gradient factors of the whole train split, once."""
    from dc3ray.config import EmbedConfig, GradConfig
    from dc3ray.pipeline.select import compute_features
    out = work / "features"
    if (out / "features.json").is_file():
        return out
    emb = EmbedConfig(backbone="teacher", model_path=str(Path(args.teacher).resolve()),
                      image_size=32, batch_size=256)
    grad = GradConfig(backbone="teacher", model_path=str(Path(args.teacher).resolve()),
                      image_size=32, batch_size=256)
    print(f"[acc] features of {args.train} with teacher {args.teacher} ...", flush=True)
    t0 = time.perf_counter()
    compute_features(args.train, emb, grad, out)
    _record_timing(work, "features", time.perf_counter() - t0)
    return out


def _once(work: Path, name: str, build) -> Path:
    """work/sets/<name>, built by build(out) unless it exists (builders commit atomically)."""
    out = work / "sets" / name
    if not out.is_dir():
        t0 = time.perf_counter()
        build(out)
        _record_timing(work, name, time.perf_counter() - t0)
    return out


def _selection(args, work: Path, method: str, ipc: int) -> Path:
    from dc3ray.config import SelectConfig
    from dc3ray.pipeline.select import key_label_table, materialise_subset, select_per_class
    name = f"{method}_ipc{ipc}"

    def build(out: Path) -> None:
        if method in MODEL_FREE:
            feats = work / "keys"
            if not feats.is_dir():
                key_label_table(args.train, feats)
        else:
            feats = _features(args, work)
        sel = SelectConfig(method=method, ipc=ipc, seed=args.select_seed)
        manifest = select_per_class(feats, sel, work / "selection" / name, show_progress=False)
        materialise_subset(args.train, manifest, out)
    return _once(work, name, build)


def _compensated(args, work: Path, source: Path, compensator: str) -> Path:
    from dc3ray.config import CompensateConfig
    from dc3ray.pipeline.compensate import compensate_dataset
    kw = {"model_path": args.diffusion_model} if compensator != "classical" else {}
    cfg = CompensateConfig(compensator=compensator, seed=args.comp_seed, **kw)
    return _once(work, f"{source.name}+{compensator}",
                 lambda out: compensate_dataset(source, cfg, out))


def _not_measured(base: str, args) -> str | None:
    method, comp = ROWS[base]
    if comp == "instructpix2pix":
        import torch
        if not args.diffusion_model:
            return "no InstructPix2Pix weights given (--diffusion-model); none exist offline here"
        if not torch.cuda.is_available():
            return "no GPU on this machine: 100-step diffusion on CPU is hours per class"
    return None


def run_cell(args, work: Path, row: str, ipc: int) -> None:
    from dc3ray.config import EvalConfig
    from dc3ray.pipeline.train import evaluate_condensed
    base, hard = parse_row(row)
    if _not_measured(base, args):
        return
    method, comp = ROWS[base]
    condensed = _selection(args, work, method, ipc)
    if comp:
        condensed = _compensated(args, work, condensed, comp)
    cfg = EvalConfig(student="convnet3", epochs=args.epochs, seeds=args.seeds,
                     eval_every=args.eval_every, hard_labels=hard)
    evaluate_condensed(cfg, condensed, args.val, None if hard else args.teacher,
                       work / "eval" / cell_name(row, ipc), ipc=ipc)


def cell_name(row: str, ipc: int) -> str:
    base, hard = parse_row(row)
    return f"{base}{'_hard' if hard else ''}_ipc{ipc}"


def collect(args, work: Path, rows: list[str], ipcs: list[int]) -> list[dict]:
    """One summary row per (row, ipc): measured figures, partial seeds, or why not measured."""
    import numpy as np
    out = []
    for row in rows:
        base, hard = parse_row(row)
        method, comp = ROWS[base]
        for ipc in ipcs:
            cell = {"row": row, "ipc": ipc, "labels": "hard" if hard else "KD"}
            reason = _not_measured(base, args)
            ev = work / "eval" / cell_name(row, ipc)
            seeds = []
            for f in sorted((ev / "seeds").glob("seed*.json")):
                res = json.loads(f.read_text())["result"]
                # A seed from another epoch budget is stale (evaluate_condensed would retrain it).
                if res["history"] and res["history"][-1][0] == args.epochs:
                    seeds.append(res)
            set_name = f"{method}_ipc{ipc}" + (f"+{comp}" if comp else "")
            cond = [_timing(work, f"{method}_ipc{ipc}"),
                    _timing(work, set_name) if comp else 0.0]
            if seeds:
                fin = np.array([s["top1_final"] for s in seeds])
                best = np.array([s["top1_best"] for s in seeds])
                cell.update({
                    "final_top1": f"{fin.mean():.2f} +- {fin.std():.2f}",
                    "best_top1": f"{best.mean():.2f} +- {best.std():.2f}",
                    "final_mean": round(float(fin.mean()), 2), "final_std": round(float(fin.std()), 2),
                    "best_mean": round(float(best.mean()), 2), "best_std": round(float(best.std()), 2),
                    "seeds": len(seeds),
                    "condense_s": round(sum(cond), 1) if None not in cond else None,
                    "eval_s_per_seed": round(float(np.mean([s["wall_s"] for s in seeds])), 1),
                    "status": "measured" if len(seeds) >= args.seeds
                    else f"partial: {len(seeds)}/{args.seeds} seeds"})
            else:
                cell["status"] = f"not measured: {reason}" if reason else "not measured yet"
            out.append(cell)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", default="runs/cifar10/train", help="ingested train shards")
    p.add_argument("--val", default="runs/cifar10/val", help="ingested val shards (scoring)")
    p.add_argument("--teacher", default="runs/bench/teacher_c3/teacher.pt",
                   help="ConvNet-3 teacher from `dc3ray teacher` (KD and selection features)")
    p.add_argument("--work", default="runs/bench/acc", help="sets, features, evaluations (resumable)")
    p.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, help=f"default: {DEFAULT_ROWS}")
    p.add_argument("--ipc", nargs="+", type=int, default=[1, 10, 50])
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--select-seed", type=int, default=0)
    p.add_argument("--comp-seed", type=int, default=0)
    p.add_argument("--diffusion-model", help="local InstructPix2Pix folder (dc3_diffusion row)")
    p.add_argument("--report-only", action="store_true", help="collect what exists, run nothing")
    p.add_argument("--out-dir", help="where the JSON record goes (default benchmarks/results)")
    args = p.parse_args(argv)
    for r in args.rows:
        parse_row(r)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    load_before = load()
    if not args.report_only:
        from dc3ray.pipeline.resources import configure_data_context, init_ray
        init_ray()
        configure_data_context()
        for ipc in args.ipc:
            for row in args.rows:
                print(f"[acc] {row} ipc {ipc}", flush=True)
                run_cell(args, work, row, ipc)
    summary = collect(args, work, args.rows, args.ipc)
    features_s = _timing(work, "features")
    result = {"summary": summary, "features_s": features_s, "protocol": {
        "student": "convnet3", "epochs": args.epochs, "seeds": args.seeds,
        "eval_every": args.eval_every, "teacher": args.teacher, "train": args.train,
        "val": args.val, "select_seed": args.select_seed,
        "note": "condense_s excludes the one-off teacher feature pass (features_s), shared by "
                "every model-based row"}}
    for c in summary:
        print(json.dumps(c))
    save("accuracy_cifar10", result, argv, load_before=load_before, out_dir=args.out_dir)
    return result


if __name__ == "__main__":
    main()
