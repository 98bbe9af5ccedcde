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
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JOBS = "jobs.json"
RESULT = "gpu_seeds.json"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", nargs="?", help="a folder written by an accuracy benchmark's --export")
    p.add_argument("--out", default=os.environ.get("OUT"),
                   help=f"where {RESULT} and the log go (default $OUT, else <bundle>/out)")
    p.add_argument("--parallel", type=int, default=6,
                   help="seeds trained at once, each its own process on the same device")
    p.add_argument("--cells", nargs="+", help="only these cells (default: every job)")
    p.add_argument("--epochs", type=int,
                   help="override the exported epoch budget (a dry run; --import ignores it)")
    p.add_argument("--image-size", type=int,
                   help="override the student's training resolution, e.g. 224 for the GPU "
                        "protocol (a different measurement: --import ignores it)")
    p.add_argument("--deadline", type=float, default=540.0,
                   help="seconds after which seeds still running are stopped (default 540)")
    p.add_argument("--record-from", nargs=2, metavar=("SEEDS_JSON", "NAME"),
                   help=f"no training: turn a {RESULT} that ran under an override (which "
                        "--import does not take) into the benchmark record results/NAME.json that "
                        "render.py lays out, with --command as the command that made it")
    p.add_argument("--command", help="with --record-from: the command run on the GPU machine")
    p.add_argument("--one", nargs=2, metavar=("CELL", "SEED"), help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def device_label() -> str:
    """What a seed ran on, as the seed store's `cpu` field names it."""
    import torch
    if torch.cuda.is_available():
        return (f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}, torch "
                f"{torch.__version__}; gpu_student.py, in process)")
    return f"{cpu_model()} (gpu_student.py on CPU)"


def load_jobs(bundle: Path, cells: list[str] | None) -> list[dict]:
    f = bundle / JOBS
    if not f.is_file():
        raise SystemExit(f"{bundle}: no {JOBS} (write the bundle with an accuracy benchmark's --export)")
    jobs = json.loads(f.read_text())["jobs"]
    if cells:
        unknown = sorted(set(cells) - {j["cell"] for j in jobs})
        if unknown:
            raise SystemExit(f"--cells {unknown}: not in {f} (it has {[j['cell'] for j in jobs]})")
        jobs = [j for j in jobs if j["cell"] in cells]
    return jobs


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


def run_all(args, bundle: Path, out: Path) -> dict:
    """Every (cell, seed) as a child process, --parallel at a time, until --deadline."""
    jobs = load_jobs(bundle, args.cells)
    todo = [(j["cell"], s) for j in jobs for s in j["seeds"]]
    tmp = Path(tempfile.mkdtemp(prefix="gpu_student_"))
    threads = max(1, (os.cpu_count() or 1) // max(1, args.parallel))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    running, done, failed, t0 = {}, {}, {}, time.perf_counter()
    print(f"[gpu] {len(todo)} seeds of {len(jobs)} cells, {args.parallel} at a time", flush=True)
    while (todo or running) and time.perf_counter() - t0 < args.deadline:
        while todo and len(running) < args.parallel:
            cell, seed = todo.pop(0)
            res, log = tmp / f"{cell}_seed{seed}.json", tmp / f"{cell}_seed{seed}.log"
            cmd = [sys.executable, __file__, str(bundle), "--one", cell, str(seed),
                   "--result", str(res)] + [a for k, v in overrides(args).items()
                                            for a in (f"--{k.replace('_', '-')}", str(v))]
            running[(cell, seed)] = (subprocess.Popen(cmd, env=env, stdout=open(log, "w"),
                                                      stderr=subprocess.STDOUT), res, log)
        time.sleep(2)
        for key, (proc, res, log) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[key]
            if proc.returncode == 0 and res.is_file():
                done[key] = json.loads(res.read_text())
                r = done[key]
                print(f"[gpu] {key[0]} seed {key[1]}: final {r['top1_final']:.2f}%, best "
                      f"{r['top1_best']:.2f}% ({r['wall_s']:.0f} s)", flush=True)
            else:
                failed[key] = log.read_text()[-3000:]
                print(f"[gpu] {key[0]} seed {key[1]} FAILED (exit {proc.returncode}):\n"
                      f"{failed[key]}", flush=True)
    for key, (proc, _, log) in running.items():
        proc.kill()
        failed[key] = f"stopped at --deadline {args.deadline:.0f} s\n" + log.read_text()[-1500:]
        print(f"[gpu] {key[0]} seed {key[1]} stopped at the deadline", flush=True)
    not_started = [list(k) for k in todo]
    record = {"device": device_label(), "cpu": cpu_model(), "cores": os.cpu_count(),
              "parallel": args.parallel, "overrides": overrides(args),
              "omp_threads": threads, "wall_s": round(time.perf_counter() - t0, 1),
              "failed": {f"{c} seed {s}": v for (c, s), v in failed.items()},
              "not_started": not_started,
              "jobs": [{k: j[k] for k in ("cell", "row", "ipc", "inputs_key")}
                       | {"results": [done[(j["cell"], s)] for s in j["seeds"]
                                      if (j["cell"], s) in done]} for j in jobs]}
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT).write_text(json.dumps(record, indent=1))
    print(f"[gpu] {len(done)} seeds done, {len(failed)} failed or stopped, {len(not_started)} not "
          f"started, {record['wall_s']} s; wrote {out / RESULT}", flush=True)
    return record


def record_from(seeds_json: Path, name: str, command: str | None,
                results: Path = REPO / "benchmarks" / "results") -> Path:
    """results/<name>.json in the benchmarks' record layout (one summary row per cell: final and
    best top-1 mean +- population std, per-seed finals, seconds a seed) from a gpu_seeds.json,
    which is kept beside it as results/<name>_seeds/gpu_seeds.json."""
    import numpy as np
    data = json.loads(Path(seeds_json).read_text())
    rows = []
    for job in data["jobs"]:
        res = job["results"]
        row = {"row": job["row"], "ipc": job["ipc"], "labels": "KD", **data["overrides"]}
        if not res:
            rows.append({**row, "status": "not measured: no seed finished"})
            continue
        fin = np.array([r["top1_final"] for r in res])
        best = np.array([r["top1_best"] for r in res])
        rows.append({**row, "final_top1": f"{fin.mean():.2f} +- {fin.std():.2f}",
                     "best_top1": f"{best.mean():.2f} +- {best.std():.2f}",
                     "final_mean": round(float(fin.mean()), 2), "final_std": round(float(fin.std()), 2),
                     "best_mean": round(float(best.mean()), 2), "best_std": round(float(best.std()), 2),
                     "seeds": len(res), "final_per_seed": [round(float(f), 2) for f in fin],
                     "eval_s_per_seed": round(float(np.mean([r["wall_s"] for r in res])), 1),
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
