"""Render benchmarks/results/*.json into docs/BENCHMARKS.md and its plots.

Every section names the command that produced its figures, the machine (cores, CPU, GPU or
none) and the date, straight from the record; nothing here is typed by hand.

    python benchmarks/render.py [--results benchmarks/results] [--docs docs]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["accuracy_cifar10", "accuracy_imagenette", "accuracy_imagenette_224px", "bench_embed",
         "bench_graphcut", "bench_compensate", "bench_diffusion_cost", "bench_scaling"]
TITLES = {
    "accuracy_cifar10": "Accuracy on real CIFAR-10 (ConvNet-3 teacher and student, KD protocol)",
    "accuracy_imagenette": "Accuracy on Imagenette (EfficientNet-Lite0 subset teacher, ResNet-18 "
                           "student at 128 px, KD protocol)",
    "accuracy_imagenette_224px": "Accuracy on Imagenette at 224 px (the same IPC 50 sets and "
                                 "protocol, the student at the paper's resolution; on an H200)",
    "bench_embed": "Embedding stage: Ray Data actor pool vs a plain DataLoader loop",
    "bench_graphcut": "Selection: vectorised GraphCut vs reference greedy; factored vs materialised similarity",
    "bench_compensate": "Compensation: batched vs one image per call",
    "bench_diffusion_cost": "Compensation cost: full-size InstructPix2Pix (random weights), per image",
    "bench_scaling": "Selection scaling: synthetic ImageNet-1K-shaped workload, 1 vs 2 workers",
}


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v).replace("|", "\\|")


def table(rows: list[dict], skip: tuple[str, ...] = ()) -> str:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols and k not in skip]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def machine_line(rec: dict) -> str:
    m = rec.get("machine", {})
    gpu = m.get("gpu") or "no GPU"
    libs = "".join(f", {k} {m[k]}" for k in ("torch", "numpy", "pillow") if m.get(k))
    load = ""
    if rec.get("load_before") is not None:
        load = f"; load average {rec['load_before']} before, {rec.get('load_after')} after"
    head = f"{m.get('cores')} cores ({m.get('cpu')})" if m.get("cores") else f"CPU {m.get('cpu')}"
    tail = "".join(f", {v}" for v in (m.get("memory_gb") and f"{m['memory_gb']} GiB",
                                       m.get("python") and f"Python {m['python']}") if v)
    return f"{head}, {gpu}{tail}{libs}{load}"


def plot_accuracy(rec: dict, path: Path) -> bool:
    rows = [r for r in rec["result"]["summary"] if "best_mean" in r]
    if not rows:
        return False
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    ipcs = sorted({r["ipc"] for r in rows})
    names = list(dict.fromkeys(r["row"] for r in rows))
    # Width grows with the groups (rows), not rows x IPCs: 9 rows x 3 IPCs was 32 inches wide.
    fig = Figure(figsize=(max(6, 0.5 + len(names) * (0.3 + 0.35 * len(ipcs))), 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / len(ipcs)
    for j, ipc in enumerate(ipcs):
        xs, ys, es = [], [], []
        for i, n in enumerate(names):
            r = next((r for r in rows if r["row"] == n and r["ipc"] == ipc), None)
            if r:
                xs.append(i + j * width)
                ys.append(r["best_mean"])
                es.append(r["best_std"])
        ax.bar(xs, ys, width, yerr=es, capsize=3, label=f"IPC {ipc}")
    ax.set_xticks([i + width * (len(ipcs) - 1) / 2 for i in range(len(names))], names,
                  rotation=20, ha="right")
    ax.set_ylabel("best top-1 on val (%), mean +- std over seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def plot_ratios(records: list[dict], path: Path) -> bool:
    """One bar per summary row that carries a speed ratio (key 'ratio' or 'speedup')."""
    bars = []
    for rec in records:
        for r in rec["result"].get("summary", []):
            v = r.get("ratio", r.get("speedup"))
            if isinstance(v, (int, float)):
                words = [str(x) for x in r.values() if isinstance(x, str)][:3]
                k0 = next(iter(r))  # the row's first column names it when it is a number
                label = " ".join(words) if words else f"{k0}={r[k0]}"
                bars.append((f"{rec['name']}: {label}", float(v)))
    if not bars:
        return False
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(10, 0.45 * len(bars) + 1.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.barh([b[0] for b in bars], [b[1] for b in bars])
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("speed ratio vs the plain way (log scale; > 1 is faster)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def render(results: Path, docs: Path) -> Path:
    records = {}
    for f in sorted(results.glob("*.json")):  # <name>.notes.md files hold the hand-written notes
        rec = json.loads(f.read_text())
        records[rec.get("name", f.stem)] = rec
    names = [n for n in ORDER if n in records] + sorted(n for n in records if n not in ORDER)
    docs.mkdir(parents=True, exist_ok=True)
    out = ["# Benchmarks", "",
           "Generated by `python benchmarks/render.py` from the JSON records in "
           "`benchmarks/results/`. Each section gives the command that produced it, the machine "
           "and the date. Rerun one with `make bench-<name>` (see the Makefile), then render.",
           ""]
    if "accuracy_cifar10" in records and plot_accuracy(records["accuracy_cifar10"],
                                                       docs / "bench_accuracy.png"):
        out += ["![accuracy](bench_accuracy.png)", ""]
    others = [records[n] for n in names if not n.startswith("accuracy_")]
    if plot_ratios(others, docs / "bench_throughput.png"):
        out += ["![throughput ratios](bench_throughput.png)", ""]
    for n in names:
        rec = records[n]
        res = rec["result"]
        out += [f"## {TITLES.get(n, n)}", "",
                f"- command: `{rec['command']}`",
                f"- machine: {machine_line(rec)}",
                f"- date: {rec['date']}", ""]
        if res.get("summary"):
            out += [table(res["summary"], skip=("final_mean", "final_std", "best_mean",
                                                "best_std")), ""]
        ref = res.get("reference")  # figures from elsewhere: a table of their own, marked so
        if ref:
            out += [f"Reference ({ref['note']}): {ref['source']}", "", table(ref["rows"]), ""]
        # The first accuracy table's plot heads the page; the others' go in their sections.
        if n.startswith("accuracy_") and n != "accuracy_cifar10" and \
                plot_accuracy(rec, docs / f"bench_{n}.png"):
            out += [f"![{n}](bench_{n}.png)", ""]
        for key in ("notes", "note"):
            if res.get(key):
                notes = res[key] if isinstance(res[key], list) else [res[key]]
                out += [f"- {x}" for x in notes] + [""]
        hand = results / f"{n}.notes.md"  # reading of the figures, written after the run
        if hand.is_file():
            out += ["Notes (written by hand after the run; the figures above are the record's):",
                    "", hand.read_text().strip(), ""]
        if isinstance(res.get("protocol"), dict):
            out += ["Protocol: " + ", ".join(f"{k}={v}" for k, v in res["protocol"].items()), ""]
    path = docs / "BENCHMARKS.md"
    path.write_text("\n".join(out).rstrip() + "\n")
    print(f"wrote {path}")
    return path


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(HERE / "results"))
    p.add_argument("--docs", default=str(HERE.parent / "docs"))
    a = p.parse_args(argv)
    return render(Path(a.results), Path(a.docs))


if __name__ == "__main__":
    main()
