"""The ranked table, plot and confirmation table of a sweep trained through gpu_student.py, from
the gpu_seeds.json it wrote (committed under benchmarks/results/, so docs re-derive from it).

A sweep exported with `dc3ray sweep --export B --export-seeds 3 --export-hard-labels` (cells
t000, t001, ... and their -hard twins) plus `dc3ray evaluate --export B` comparison cells
(e.g. `baseline`, `baseline-hard`), trained with `gpu_student.py B --confirm K --keep
'baseline*'`, holds seed 0 of every KD cell (the screen) and all seeds of the confirmed ones.

  python benchmarks/sweep_table.py benchmarks/results/sweep_compensation_cifar10_seeds/gpu_seeds.json \\
      --out docs/sweeps/compensation_cifar10

writes there results.csv and results.png (the layout `dc3ray sweep` writes: one row per trial,
ranked by the sweep's metric over the screen seeds) and README.md (the ranked table and the
confirmation: every cell with more than one seed, KD beside hard labels, mean +- population std).
The same numbers land in the sweep's own MLflow runs and results.csv when it is rerun with
--import-seeds on the machine that exported it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dc3ray.core.training import summarize_seeds  # noqa: E402
from dc3ray.pipeline.sweep import SET_COLUMNS, rank_rows, write_results  # noqa: E402


def merged(sources: list[str]) -> dict:
    """One record of several gpu_seeds.json of the same bundle (a screen, then a confirmation
    run later): each cell's results in file order, `runs` naming every file. A seed of a cell
    in two files is refused: which one counts would be a guess."""
    runs, jobs, seen = [], {}, {}
    for src in sources:
        data = json.loads(Path(src).read_text())
        runs.append({"source": src, **{k: data.get(k) for k in ("device", "parallel", "wall_s")}})
        for j in data["jobs"]:
            cell = jobs.setdefault(j["cell"], {**j, "results": []})
            for r in j["results"]:
                if (j["cell"], r["seed"]) in seen:
                    raise SystemExit(f"{src}: {j['cell']} seed {r['seed']} is also in "
                                     f"{seen[(j['cell'], r['seed'])]}; give each seed once")
                seen[(j["cell"], r["seed"])] = src
                cell["results"].append(r)
    return {"runs": runs, "jobs": list(jobs.values())}


def screen_rows(data: dict, screen_seeds: int) -> tuple[list[dict], list[str], str]:
    """(ranked rows, grid keys, metric): one row per KD cell over its seeds < screen_seeds."""
    jobs = [j for j in data["jobs"] if not j["cell"].endswith("-hard")]
    keys = list(dict.fromkeys(k for j in jobs for k in (j.get("point") or {})))
    metric = next((j["metric"] for j in jobs if j.get("metric")), "best_top1")
    rows = []
    for j in jobs:
        res = [r for r in j["results"] if r["seed"] < screen_seeds]
        row = {"trial_id": j["cell"], **{k: (j.get("point") or {}).get(k) for k in keys},
               **{c: (j.get("stats") or {}).get(c) for c in SET_COLUMNS},
               "set_id": j.get("set_id"), "error": None,
               "status": "TERMINATED" if res else "NOT TRAINED"}
        if res:
            m = summarize_seeds(res)
            row.update(final_top1=m["final_mean"], final_std=m["final_std"],
                       best_top1=m["best_mean"], best_std=m["best_std"],
                       eval_s=round(sum(r["wall_s"] for r in res) / len(res), 1),
                       device="; ".join(sorted({r["device"] for r in res})))
        rows.append(row)
    return rank_rows(rows, metric), keys, metric


def _cell(res: list[dict]) -> str:
    if not res:
        return "-"
    m = summarize_seeds(res)
    return f"{m['final_mean']:.2f} +- {m['final_std']:.2f} ({len(res)})"


def _short(v) -> str:
    return v[0] + ", ..." if isinstance(v, list) else ("-" if v is None else str(v))


def markdown(data: dict, rows: list[dict], keys: list[str], metric: str, source: str) -> str:
    by_cell = {j["cell"]: j for j in data["jobs"]}
    runs = data["runs"]
    if len(runs) == 1:
        held = (f"the seeds that file holds ({runs[0]['parallel']} seeds at once, "
                f"{runs[0]['wall_s']} s in all)")
    else:
        held = "the seeds those files hold (" + "; ".join(
            f"{r['source']}: {r['parallel']} seeds at once, {r['wall_s']} s" for r in runs) + ")"
    devices = " and ".join(dict.fromkeys(r["device"] for r in runs))
    lines = [f"# Sweep trained on {devices}", "",
             f"Made by `python benchmarks/sweep_table.py {source} --out <this folder>` from "
             f"{held}. Word lists are named by their first word.", "",
             "## Confirmation: final top-1, mean +- population std (seeds)", "",
             "| cell | " + " | ".join(keys) + " | KD | hard labels |",
             "|---" * (len(keys) + 3) + "|"]
    for j in data["jobs"]:
        if j["cell"].endswith("-hard") or len(j["results"]) < 2:
            continue
        hard = by_cell.get(j["cell"] + "-hard", {}).get("results", [])
        point = j.get("point") or {}
        lines.append(f"| {j['cell']} | " + " | ".join(_short(point.get(k)) for k in keys)
                     + f" | {_cell(j['results'])} | {_cell(hard)} |")
    if not any(len(j["results"]) > 1 for j in data["jobs"]):
        lines[-2:] = ["No cell was trained at more than one seed: a screen only."]
    lines += ["", f"## Screen: ranked by {metric} over the screen seeds", "",
              "| rank | cell | " + " | ".join(keys) + " | final top-1 | "
              + " | ".join(SET_COLUMNS) + " |", "|---" * (len(keys) + 3 + len(SET_COLUMNS)) + "|"]
    for r in rows:
        fin = "-" if r.get("final_top1") is None else f"{r['final_top1']:.2f}"
        stats = ["-" if r.get(c) is None else f"{r[c]:.3g}" for c in SET_COLUMNS]
        lines.append(f"| {r['rank']} | {r['trial_id']} | "
                     + " | ".join(_short(r.get(k)) for k in keys) + f" | {fin} | "
                     + " | ".join(stats) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("seeds_json", nargs="+",
                   help="the gpu_seeds.json of a sweep bundle; several (runs of the same "
                        "bundle, e.g. a screen and a later confirmation) are merged")
    p.add_argument("--out", required=True, help="folder for results.csv, results.png, README.md")
    p.add_argument("--screen-seeds", type=int, default=1,
                   help="seeds 0..N-1 of each cell make its screen figure (default 1, the sweep's)")
    p.add_argument("--title", default="compensation sweep", help="the plot's title")
    args = p.parse_args(argv)
    data = merged(args.seeds_json)
    rows, keys, metric = screen_rows(data, args.screen_seeds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = write_results(rows, keys, metric, out, title=args.title)
    (out / "README.md").write_text(markdown(data, rows, keys, metric, " ".join(args.seeds_json)))
    print(f"wrote {csv_path}, {png_path}, {out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
