"""The accuracy table's collector (partial, measured, not-measured cells) and the renderer that
turns benchmark records into docs/BENCHMARKS.md: figures always travel with command and machine."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import accuracy_cifar10 as acc  # noqa: E402
import render  # noqa: E402


def fake_seed(work: Path, cell: str, seed: int, final: float, best: float,
              epochs: int = 300) -> None:
    d = work / "eval" / cell / "seeds"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed{seed}.json").write_text(json.dumps({"inputs_key": "k", "result": {
        "seed": seed, "top1_final": final, "top1_best": best, "wall_s": 100.0 + seed,
        "history": [[epochs // 2, best], [epochs, final]]}}))


def test_rows_parse_and_unknown_rows_are_refused_by_name():
    assert acc.parse_row("dc3_classical/hard") == ("dc3_classical", True)
    assert acc.cell_name("random/hard", 10) == "random_hard_ipc10"
    with pytest.raises(SystemExit, match="unknown row 'dc4'"):
        acc.parse_row("dc4")


def test_collect_reports_measured_partial_and_unmeasured_cells(tmp_path):
    work = tmp_path / "acc"
    for s, (f, b) in enumerate([(50.0, 51.0), (52.0, 52.0), (54.0, 56.0)]):
        fake_seed(work, "random_ipc10", s, f, b)
    fake_seed(work, "random_ipc50", 0, 60.0, 61.0)
    fake_seed(work, "random_ipc50", 1, 10.0, 10.0, epochs=30)  # another budget: not counted
    acc._record_timing(work, "random_ipc10", 2.5)
    ns = type("A", (), {"seeds": 3, "epochs": 300, "diffusion_model": None})()
    cells = acc.collect(ns, work, ["random", "dc3_diffusion"], [10, 50])
    by = {(c["row"], c["ipc"]): c for c in cells}
    full = by[("random", 10)]
    assert full["status"] == "measured" and full["seeds"] == 3
    assert full["final_mean"] == 52.0 and full["final_top1"] == "52.00 +- 1.63"
    assert full["best_mean"] == pytest.approx(53.0) and full["condense_s"] == 2.5
    assert full["eval_s_per_seed"] == 101.0
    assert by[("random", 50)]["status"] == "partial: 1/3 seeds"
    assert by[("random", 50)]["condense_s"] is None  # no timing was recorded for that set
    assert by[("dc3_diffusion", 10)]["status"].startswith("not measured: no InstructPix2Pix")
    assert "final_mean" not in by[("dc3_diffusion", 10)]


def test_render_writes_every_record_with_its_command_machine_and_plots(tmp_path):
    results, docs = tmp_path / "results", tmp_path / "docs"
    sys.argv = ["benchmarks/x.py"]
    from benchlib import save
    save("accuracy_cifar10", {"summary": [
        {"row": "random", "ipc": 10, "labels": "KD", "best_top1": "53.00 +- 1.00",
         "best_mean": 53.0, "best_std": 1.0, "status": "measured"},
        {"row": "dc3_diffusion", "ipc": 10, "labels": "KD", "status": "not measured: no GPU"}],
        "protocol": {"epochs": 300}}, ["--rows", "random"], out_dir=results)
    save("bench_graphcut", {"summary": [{"n": 1300, "speedup": 40.0}],
                            "notes": ["a note | with a pipe"]}, [], out_dir=results)
    (results / "bench_graphcut.notes.md").write_text("Read by hand: fast.\n")
    md = render.render(results, docs).read_text()
    assert "Notes (written by hand after the run" in md and "Read by hand: fast." in md
    assert md.index("Accuracy on real CIFAR-10") < md.index("Selection: vectorised GraphCut")
    assert "`python benchmarks/x.py --rows random`" in md
    assert md.count("- machine: ") == 2 and "- date: " in md
    assert "| random | 10 | KD | 53.00 +- 1.00 | measured |" in md  # *_mean/_std kept out
    assert "not measured: no GPU" in md and "a note \\| with a pipe" not in md
    assert "- a note | with a pipe" in md
    assert (docs / "bench_accuracy.png").stat().st_size > 1000
    assert (docs / "bench_throughput.png").stat().st_size > 1000
