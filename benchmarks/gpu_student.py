"""Train the student seeds of accuracy cells exported with --export, on a GPU machine without Ray.

The accuracy benchmarks (accuracy_cifar10.py, accuracy_imagenette.py) train each seed as a Ray
Train run. A borrowed GPU machine may have torch but not Ray (Ray's wheel is larger than what
travels there), so `--export DIR` writes a bundle (the cells' sets, val, teacher and jobs.json)
and this script trains each seed with the very loop `dc3ray evaluate` runs on a Ray Train worker
(dc3ray.pipeline.student.student_loop, in process as `fit(workers=0)` runs it), several seeds at
once on one GPU (a small student leaves most of an H100/H200 idle). It writes gpu_seeds.json to
--out; `--import` that file on the machine that exported: it checks each cell's inputs key and
stores the seeds with the device they ran on.

  python benchmarks/accuracy_imagenette.py ... --rows random dc3_select --ipc 50 --export B
  python benchmarks/gpu_student.py B --out $OUT --parallel 6       # on the GPU machine
  python benchmarks/accuracy_imagenette.py ... --rows random dc3_select --ipc 50 \\
      --import $OUT/gpu_seeds.json

Needs torch, torchvision, numpy, pyarrow, pillow, pyyaml and, for an EfficientNet teacher,
efficientnet-lite-pytorch; not Ray, MLflow or diffusers. Run from the repository root (or with
it on PYTHONPATH). On a machine without CUDA it trains on CPU: with --epochs 2 a dry run of the
plumbing. Results under an override (--epochs, --image-size) name it and --import does not take
them: they are not the exported cell's protocol.
Seeds still running at --deadline are stopped; those finished are written.

Screen, then confirm, in one go (a bundle from `dc3ray sweep --export B --export-seeds 3
--export-hard-labels`, whose cells are t000, t001, ... and their hard-label twins t000-hard, ...):
  python benchmarks/gpu_student.py B --confirm 3 --keep 'baseline*' --screen-deadline 300
trains seed 0 of every KD cell first, then the other seeds of the 3 best by the sweep's metric
and every seed of their -hard twins, and of the cells --keep names (the comparison).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO)]
from benchlib import cpu_model  # noqa: E402
from dc3ray.pipeline.bundle import BUNDLE_JOBS, SEEDS_RESULT as RESULT  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", nargs="?", help="a folder written by an accuracy benchmark's --export")
    p.add_argument("--out", default=os.environ.get("OUT"),
                   help=f"where {RESULT} and the log go (default $OUT, else <bundle>/out)")
    p.add_argument("--parallel", type=int, default=6,
                   help="seeds trained at once, each its own process on the same device")
    p.add_argument("--cells", nargs="+",
                   help="only these cells; shell patterns ('t0*') allowed (default: every job)")
    p.add_argument("--seeds", nargs="+", type=int, help="only these seeds of each cell")
    p.add_argument("--confirm", type=int, metavar="K",
                   help="screen, then confirm: seed 0 of every cell not ending in -hard first, "
                        "then the other seeds of the K best of them (by the job's metric, mean "
                        "over what trained) and every seed of their -hard twins")
    p.add_argument("--keep", nargs="+", default=[],
                   help="with --confirm: cells (patterns) trained in full in the confirm phase "
                        "whatever the screen says, e.g. the selection-only baseline")
    p.add_argument("--screen-deadline", type=float, default=300.0,
                   help="with --confirm: seconds the screen may take (default 300)")
    p.add_argument("--epochs", type=int,
                   help="override the exported epoch budget (a dry run; --import ignores it)")
    p.add_argument("--image-size", type=int,
                   help="override the student's training resolution, e.g. 224 for the GPU "
                        "protocol (a different measurement: --import ignores it)")
    p.add_argument("--deadline", type=float, default=540.0,
                   help="seconds after which seeds still running are stopped (default 540, to fit a "
                        "borrowed GPU's 10-minute call; on CPU a 300-epoch seed takes about an "
                        "hour, so give e.g. 12000)")
    p.add_argument("--record-from", nargs=2, metavar=("SEEDS_JSON", "NAME"),
                   help=f"no training: turn a {RESULT} that ran under an override (which "
                        "--import does not take) into the benchmark record results/NAME.json that "
                        "render.py lays out, with --command as the command that made it")
    p.add_argument("--command", help="with --record-from: the command run on the GPU machine")
    p.add_argument("--one", nargs=2, metavar=("CELL", "SEED"), help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p


def device_label() -> str:
    """What a seed ran on, as the seed store's `cpu` field names it."""
    import torch
    if torch.cuda.is_available():
        return (f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}, torch "
                f"{torch.__version__}; gpu_student.py, in process)")
    return f"{cpu_model()} (gpu_student.py on CPU)"


def matching(jobs: list[dict], patterns: list[str], what: str = "--cells") -> list[dict]:
    """The jobs whose cell matches one of `patterns` (shell patterns); one that matches nothing
    is an error naming the cells there are."""
    names = [j["cell"] for j in jobs]
    unknown = [p for p in patterns if not fnmatch.filter(names, p)]
    if unknown:
        raise SystemExit(f"{what} {unknown}: no such cell (there are {names})")
    return [j for j in jobs if any(fnmatch.fnmatchcase(j["cell"], p) for p in patterns)]


def load_jobs(bundle: Path, cells: list[str] | None) -> list[dict]:
    f = bundle / BUNDLE_JOBS
    if not f.is_file():
        raise SystemExit(f"{bundle}: no {BUNDLE_JOBS} (write the bundle with --export)")
    jobs = json.loads(f.read_text())["jobs"]
    return matching(jobs, cells) if cells else jobs


def train_one(bundle: Path, job: dict, seed: int, overrides: dict) -> dict:
    """One seed of `job`, in this process, on CUDA when there is one."""
    import torch

    from dc3ray.pipeline.student import student_loop
    config = json.loads(json.dumps(job["config"]))  # a copy: paths and epochs change below
    for k in ("condensed_path", "val_path", "teacher_ckpt"):
        if config.get(k):
            config[k] = str(bundle / config[k])
    config["cfg"].update(overrides)
    config.update(seed=seed, print_every=25, in_process=True, use_gpu=torch.cuda.is_available())
    t0 = time.perf_counter()
    res = student_loop(config)
    res["wall_s"] = round(time.perf_counter() - t0, 2)
    res["device"] = device_label()
    res["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if overrides:
        res["overrides"] = overrides
    return res


def overrides(args) -> dict:
    """The eval settings this run changes from the exported ones."""
    return {k: v for k, v in (("epochs", args.epochs), ("image_size", args.image_size)) if v}


def run_seeds(args, bundle: Path, todo: list[tuple[str, int]], deadline: float) -> tuple:
    """Every (cell, seed) of `todo` as a child process, --parallel at a time, until `deadline`
    seconds have passed: ({key: result}, {key: why it failed}, [keys not started])."""
    todo = list(todo)
    tmp = Path(tempfile.mkdtemp(prefix="gpu_student_"))
    env = {**os.environ, "OMP_NUM_THREADS": str(omp_threads(args)),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    running, done, failed, t0 = {}, {}, {}, time.perf_counter()
    while (todo or running) and time.perf_counter() - t0 < deadline:
        while todo and len(running) < args.parallel:
            cell, seed = todo.pop(0)
            res, log = tmp / f"{cell}_seed{seed}.json", tmp / f"{cell}_seed{seed}.log"
            cmd = [sys.executable, __file__, str(bundle), "--one", cell, str(seed),
                   "--result", str(res)] + [a for k, v in overrides(args).items()
                                            for a in (f"--{k.replace('_', '-')}", str(v))]
            with open(log, "w") as f:  # the child holds its own handle
                proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
            running[(cell, seed)] = (proc, res, log)
        time.sleep(1)
        for key, (proc, res, log) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[key]
            if proc.returncode == 0 and res.is_file():
                done[key] = r = json.loads(res.read_text())
                print(f"[gpu] {key[0]} seed {key[1]}: final {r['top1_final']:.2f}%, best "
                      f"{r['top1_best']:.2f}% ({r['wall_s']:.0f} s)", flush=True)
            else:
                failed[key] = log.read_text()[-3000:]
                print(f"[gpu] {key[0]} seed {key[1]} FAILED (exit {proc.returncode}):\n"
                      f"{failed[key]}", flush=True)
    for key, (proc, _, log) in running.items():
        proc.kill()
        failed[key] = f"stopped at the deadline ({deadline:.0f} s)\n" + log.read_text()[-1500:]
        print(f"[gpu] {key[0]} seed {key[1]} stopped at the deadline", flush=True)
    return done, failed, todo


def omp_threads(args) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, args.parallel))


def screen_order(jobs: list[dict], done: dict, k: int) -> list[str]:
    """The cells of `jobs` that trained in `done`, best first by their job's metric (best_top1
    or final_top1, mean over their trained seeds); ties by cell name."""
    key = {"final_top1": "top1_final"}.get(jobs[0].get("metric") if jobs else None, "top1_best")
    scores = {}
    for j in jobs:
        vals = [r[key] for (c, _), r in done.items() if c == j["cell"]]
        if vals:
            scores[j["cell"]] = sum(vals) / len(vals)
    return sorted(scores, key=lambda c: (-scores[c], c))[:k]


def plan_phases(args, jobs: list[dict]) -> list[tuple[str, list[tuple[str, int]], float]]:
    """[(phase name, todo, deadline s)]: one phase, or with --confirm a screen and a confirm
    phase (the confirm phase's todo is filled in once the screen has run)."""
    def seeds_of(j):
        return [s for s in j["seeds"] if not args.seeds or s in args.seeds]
    if not args.confirm:
        return [("train", [(j["cell"], s) for j in jobs for s in seeds_of(j)], args.deadline)]
    kept = {j["cell"] for j in matching(jobs, args.keep, "--keep")} if args.keep else set()
    screen = [(j["cell"], seeds_of(j)[0]) for j in jobs
              if not j["cell"].endswith("-hard") and seeds_of(j)]
    # The comparison cells go first: without them the screen reads against nothing.
    screen.sort(key=lambda cs: cs[0] not in kept)
    return [("screen", screen, min(args.screen_deadline, args.deadline)),
            ("confirm", [], args.deadline)]


def write_record(args, out: Path, jobs: list[dict], phases: list, done: dict, failed: dict,
                 not_started: list, t0: float) -> dict:
    """gpu_seeds.json: the machine, the run's settings and each job with its finished seeds."""
    record = {"device": device_label(), "cpu": cpu_model(), "cores": os.cpu_count(),
              "parallel": args.parallel, "overrides": overrides(args),
              "omp_threads": omp_threads(args), "wall_s": round(time.perf_counter() - t0, 1),
              "phases": [p[0] for p in phases],
              "failed": {f"{c} seed {s}": v for (c, s), v in failed.items()},
              "not_started": [list(k) for k in not_started],
              "jobs": [{k: v for k, v in j.items() if k != "config"}
                       | {"results": [done[(j["cell"], s)] for s in j["seeds"]
                                      if (j["cell"], s) in done]} for j in jobs]}
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT).write_text(json.dumps(record, indent=1))
    return record


def run_all(args, bundle: Path, out: Path) -> dict:
    """Train the bundle's seeds (in phases with --confirm) and write gpu_seeds.json to `out`."""
    jobs = load_jobs(bundle, args.cells)
    by_cell = {j["cell"]: j for j in jobs}
    phases = plan_phases(args, jobs)
    done, failed, not_started, t0 = {}, {}, [], time.perf_counter()
    for name, todo, deadline in phases:
        if name == "confirm":
            screened = [j for j in jobs if not j["cell"].endswith("-hard")]
            kept = [j["cell"] for j in matching(jobs, args.keep, "--keep")] if args.keep else []
            best = [c for c in screen_order(screened, done, args.confirm + len(kept))
                    if c not in kept][:args.confirm]
            print(f"[gpu] confirming {best} beside {kept}", flush=True)
            cells = [c for b in best + kept for c in (b, b + "-hard") if c in by_cell]
            todo = [(c, s) for c in dict.fromkeys(cells) for s in by_cell[c]["seeds"]
                    if (not args.seeds or s in args.seeds) and (c, s) not in done]
        left = deadline - (time.perf_counter() - t0)
        print(f"[gpu] {name}: {len(todo)} seeds, {args.parallel} at a time, {left:.0f} s left",
              flush=True)
        d, f, n = run_seeds(args, bundle, todo, left)
        done.update(d), failed.update(f), not_started.extend(n)
        # Written after each phase: a run cut short still returns what finished.
        record = write_record(args, out, jobs, phases, done, failed, not_started, t0)
    print(f"[gpu] {len(done)} seeds done, {len(failed)} failed or stopped, {len(not_started)} not "
          f"started, {record['wall_s']} s; wrote {out / RESULT}", flush=True)
    return record


def record_from(seeds_json: Path, name: str, command: str | None,
                results: Path = REPO / "benchmarks" / "results") -> Path:
    """results/<name>.json in the benchmarks' record layout (one summary row per cell: final and
    best top-1 mean +- population std, per-seed finals, seconds a seed) from a gpu_seeds.json,
    which is kept beside it as results/<name>_seeds/gpu_seeds.json."""
    from dc3ray.core.training import summarize_seeds
    data = json.loads(Path(seeds_json).read_text())
    rows = []
    for job in data["jobs"]:
        res = job["results"]
        row = {"row": job.get("row", job["cell"]), "ipc": job["ipc"], "labels": "KD",
               **data["overrides"]}
        if not res:
            rows.append({**row, "status": "not measured: no seed finished"})
            continue
        m = {k: round(v, 2) for k, v in summarize_seeds(res).items()}
        rows.append({**row, "final_top1": f"{m['final_mean']:.2f} +- {m['final_std']:.2f}",
                     "best_top1": f"{m['best_mean']:.2f} +- {m['best_std']:.2f}", **m,
                     "seeds": len(res), "final_per_seed": [round(r["top1_final"], 2) for r in res],
                     "eval_s_per_seed": round(sum(r["wall_s"] for r in res) / len(res), 1),
                     "inputs_key": job["inputs_key"]})
    record = {"name": name, "command": command or "benchmarks/gpu_student.py (command not given)",
              "machine": {"gpu": data["device"], "cpu": data.get("cpu", "not recorded"),
                          "cores": data.get("cores")},
              "date": max((r["date"] for j in data["jobs"] for r in j["results"]), default=None),
              "result": {"summary": rows, "protocol": {
                  "runner": f"gpu_student.py, {data['parallel']} seeds at once on one device, "
                            f"{data.get('omp_threads')} CPU threads each",
                  "overrides": data["overrides"],
                  "note": "the exported cells' eval settings except the overrides; seeds and "
                          "curves in the gpu_seeds.json this was made from"}}}
    # The seeds and curves travel with the record, as the accuracy benchmarks' seed stores do.
    store = results / f"{name}_seeds"
    store.mkdir(parents=True, exist_ok=True)
    (store / RESULT).write_text(json.dumps(data, indent=1) + "\n")
    record["result"]["notes"] = [f"Seeds, curves and the device of each: results/{store.name}/{RESULT}; "
                                 f"re-render with gpu_student.py --record-from that file {name}."]
    out = results / f"{name}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out} and {store / RESULT}")
    return out


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.record_from:
        record_from(Path(args.record_from[0]), args.record_from[1], args.command)
        return 0
    if not args.bundle:
        raise SystemExit("give the bundle folder (or --record-from)")
    bundle = Path(args.bundle).resolve()
    if args.one:
        cell, seed = args.one[0], int(args.one[1])
        job = next(j for j in load_jobs(bundle, [cell]))
        res = train_one(bundle, job, seed, overrides(args))
        Path(args.result).write_text(json.dumps(res))
        return 0
    record = run_all(args, bundle, Path(args.out) if args.out else bundle / "out")
    return 0 if not record["failed"] and not record["not_started"] else 1


if __name__ == "__main__":
    sys.exit(main())
