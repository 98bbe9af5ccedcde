"""The accuracy table's collector (partial, measured, not-measured cells) and the renderer that
turns benchmark records into docs/BENCHMARKS.md: figures always travel with command and machine."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import accuracy_cifar10 as acc  # noqa: E402
import render  # noqa: E402
from benchlib import machine  # noqa: E402
from conftest import save_random_teacher  # noqa: E402


def fake_seed(work: Path, cell: str, seed: int, final: float, best: float,
              epochs: int = 300) -> None:
    d = work / "eval" / cell / "seeds"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed{seed}.json").write_text(json.dumps({"inputs_key": "k", "result": {
        "seed": seed, "top1_final": final, "top1_best": best, "wall_s": 100.0 + seed,
        "history": [[epochs // 2, best], [epochs, final]]}}))


def bench_args(tmp_path: Path, val: Path, teacher: Path):
    return type("A", (), {"seeds": 3, "epochs": 300, "eval_every": 25, "diffusion_model": None,
                          "val": str(val), "teacher": str(teacher),
                          "out_dir": str(tmp_path / "results")})()


def test_rows_parse_and_unknown_rows_are_refused_by_name():
    assert acc.parse_row("dc3_classical/hard") == ("dc3_classical", True)
    assert acc.cell_name("random/hard", 10) == "random_hard_ipc10"
    with pytest.raises(SystemExit, match="unknown row 'dc4'"):
        acc.parse_row("dc4")


def test_collect_reports_measured_partial_and_unmeasured_cells(tmp_path, cifar_small_shards,
                                                              cifar_val_shards):
    work = tmp_path / "acc"
    for name in ("random_ipc10", "random_ipc50"):  # the sets the seeds were trained on
        (work / "sets").mkdir(parents=True, exist_ok=True)
        (work / "sets" / name).symlink_to(cifar_small_shards)
    for s, (f, b) in enumerate([(50.0, 51.0), (52.0, 52.0), (54.0, 56.0)]):
        fake_seed(work, "random_ipc10", s, f, b)
    fake_seed(work, "random_ipc50", 0, 60.0, 61.0)
    fake_seed(work, "random_ipc50", 1, 10.0, 10.0, epochs=30)  # another budget: not counted
    acc._record_timing(work, "random_ipc10", 2.5)
    ns = bench_args(tmp_path, cifar_val_shards, save_random_teacher(tmp_path / "teacher.pt"))
    cells = acc.collect(ns, work, ["random", "dc3_diffusion"], [10, 50])
    by = {(c["row"], c["ipc"]): c for c in cells}
    full = by[("random", 10)]
    assert full["status"] == "measured" and full["seeds"] == 3
    assert full["final_mean"] == 52.0 and full["final_top1"] == "52.00 +- 1.63"
    assert full["best_mean"] == pytest.approx(53.0) and full["condense_s"] == 2.5
    assert full["eval_s_per_seed"] == 101.0 and full["final_per_seed"] == [50.0, 52.0, 54.0]
    assert by[("random", 50)]["status"] == "partial: 1/3 seeds"
    assert by[("random", 50)]["condense_s"] is None  # no timing was recorded for that set
    assert by[("dc3_diffusion", 10)]["status"].startswith("not measured: no InstructPix2Pix")
    assert "final_mean" not in by[("dc3_diffusion", 10)]

    # The finished seeds went to the committed store: the table survives losing the work dir.
    [group] = (tmp_path / "results" / acc.STORE / "random_ipc10").iterdir()
    assert group.name == acc.inputs_digest(ns, cifar_small_shards, hard=False, ipc=10)
    assert sorted(f.name for f in group.iterdir()) == ["seed0.json", "seed1.json", "seed2.json"]
    assert full["cpu"] == machine()["cpu"]
    assert full["teacher"] == acc.teacher_label(ns.teacher) and "(val top-1 None%)" in full["teacher"]
    shutil.rmtree(work)
    assert acc.collect(ns, work, ["random", "dc3_diffusion"], [10, 50]) == cells


def test_stored_seeds_are_keyed_on_set_val_teacher_weights_and_eval_config(
        tmp_path, cifar_small_shards, cifar_val_shards):
    import torch
    from dc3ray.core.models import load_model_checkpoint, save_checkpoint
    teacher = save_random_teacher(tmp_path / "teacher.pt")
    ns = bench_args(tmp_path, cifar_val_shards, teacher)
    key = acc.inputs_digest(ns, cifar_small_shards, hard=False, ipc=10)
    # The same weights saved again (a retrained teacher, a copied file) give the same key.
    model, meta = load_model_checkpoint(teacher)
    again = save_checkpoint(tmp_path / "again.pt", model, meta["arch"], 10, 32,
                            extra={"wall_s": 1.0})
    assert acc.inputs_digest(bench_args(tmp_path, cifar_val_shards, again), cifar_small_shards,
                             False, 10) == key
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    other = save_checkpoint(tmp_path / "other.pt", model, meta["arch"], 10, 32)
    assert acc.inputs_digest(bench_args(tmp_path, cifar_val_shards, other), cifar_small_shards,
                             False, 10) != key
    assert acc.inputs_digest(ns, cifar_val_shards, False, 10) != key  # another set
    assert acc.inputs_digest(ns, cifar_small_shards, False, 50) != key
    assert acc.inputs_digest(ns, cifar_small_shards, True, 10) != key  # hard labels: no teacher
    ns.epochs = 30
    assert acc.inputs_digest(ns, cifar_small_shards, False, 10) != key
    ns.epochs = 300

    # Seeds of other inputs (another machine's teacher, say) stay stored; a cell reports the
    # inputs with the most seeds.
    work = tmp_path / "acc"
    (work / "sets").mkdir(parents=True)
    (work / "sets" / "random_ipc10").symlink_to(cifar_small_shards)
    other = tmp_path / "results" / acc.STORE / "random_ipc10" / "other"
    other.mkdir(parents=True)
    for seed in (0, 1):
        other.joinpath(f"seed{seed}.json").write_text(json.dumps({"inputs": "other", "result": {
            "seed": seed, "top1_final": 40.0, "top1_best": 41.0, "wall_s": 1.0,
            "history": [[300, 40.0]]}}))
    fake_seed(work, "random_ipc10", 0, 50.0, 51.0)
    assert acc.export_seeds(ns, work, "random", 10) == 1
    assert acc.export_seeds(ns, work, "random", 10) == 0  # already stored
    assert set(acc._stored_seeds(ns, "random_ipc10", key)) == {0}
    [cell] = acc.collect(ns, work, ["random"], [10])
    assert cell["final_mean"] == 40.0 and cell["seeds"] == 2
    for seed in (1, 2):
        fake_seed(work, "random_ipc10", seed, 50.0, 51.0)
    [cell] = acc.collect(ns, work, ["random"], [10])
    assert cell["final_mean"] == 50.0 and cell["status"] == "measured"


def test_cells_of_the_previous_record_without_seed_files_are_carried_with_its_date(tmp_path):
    previous = {"date": "2026-11-29 10:11 UTC", "machine": {"cpu": "AMD EPYC"}, "result": {"summary": [
        {"row": "herding", "ipc": 10, "labels": "KD", "final_mean": 51.71, "status": "measured"},
        {"row": "kcenter", "ipc": 10, "labels": "KD", "status": "not measured yet"}]}}
    ns = bench_args(tmp_path, tmp_path, tmp_path)
    cells = acc.collect(ns, tmp_path / "acc", ["herding", "kcenter"], [10], previous)
    assert cells[0] == dict(previous["result"]["summary"][0],
                            from_record="2026-11-29 10:11 UTC, AMD EPYC")
    assert cells[1]["status"] == "not measured yet" and "from_record" not in cells[1]


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


def test_the_committed_teacher_loads_and_matches_its_run_record():
    from dc3ray.core.models import load_model_checkpoint
    model, meta = load_model_checkpoint(BENCH / "results" / "teacher_c3.pt")
    record = json.loads((BENCH / "results" / "teacher_c3.json").read_text())
    assert (meta["arch"], meta["num_classes"], meta["image_size"]) == ("convnet3", 10, 32)
    assert meta["extra"]["val_top1"] == record["val_top1"] and record["complete"]
    assert acc.teacher_label(BENCH / "results" / "teacher_c3.pt").endswith(
        f"(val top-1 {record['val_top1']}%)")
