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
import accuracy_imagenette as inet  # noqa: E402
import render  # noqa: E402
from benchlib import machine  # noqa: E402
from conftest import save_random_teacher  # noqa: E402


def fake_result(seed: int, final: float, best: float, epochs: int = 300) -> dict:
    return {"seed": seed, "top1_final": final, "top1_best": best, "best_epoch": epochs,
            "wall_s": 100.0 + seed, "history": [[epochs // 2, best], [epochs, final]]}


def bench_args(tmp_path: Path, val: Path, teacher: Path, **kw):
    fields = {"seeds": 3, "epochs": 300, "eval_every": 25, "diffusion_model": None, "screen": None,
              "seed_from": None, "import_seeds": None,
              "val": str(val), "teacher": str(teacher), "out_dir": str(tmp_path / "results")}
    return type("A", (), {**fields, **kw})()


def fake_evaluate(calls: list, stop_after: int | None = None):
    """Stands in for evaluate_condensed, as it behaves: a seed whose seed file read_seed accepts
    is reused, every other one is 'trained' and its seed file written as soon as it is done.
    Appends the seeds it reused to `calls`; with `stop_after`, is interrupted after training
    that many seeds (the evaluation never returns)."""
    from dc3ray.core.atomic import write_json
    from dc3ray.pipeline.evaluate import evaluation_plan, read_seed, seed_file

    def evaluate(cfg, condensed, val, teacher, out, ipc=None, first_seed=0, **kw):
        key = evaluation_plan(cfg, condensed, val, teacher, ipc, **kw)["inputs_key"]
        reused, seeds, trained = [], [], 0
        for seed in range(first_seed, cfg.seeds):
            res = read_seed(seed_file(out, seed), key, seed, cfg.epochs)
            if res is not None:
                reused.append(seed)
            else:
                if trained == stop_after:
                    raise KeyboardInterrupt
                res = fake_result(seed, 50.0 + 2 * seed, 51.0 + 2 * seed, epochs=cfg.epochs)
                write_json(seed_file(out, seed), {"inputs_key": key, "result": res})
                trained += 1
            seeds.append(res)
        calls.append(reused)
        return {"seeds": seeds}
    return evaluate


def test_rows_parse_and_unknown_rows_are_refused_by_name():
    assert acc.parse_row("dc3_classical/hard") == ("dc3_classical", True)
    assert acc.cell_name("random/hard", 10) == "random_hard_ipc10"
    with pytest.raises(SystemExit, match="unknown row 'dc4'"):
        acc.parse_row("dc4")


def link_set(work: Path, shards: Path) -> None:
    """The set exists, so run_cell goes straight to evaluation."""
    if not (work / "sets").is_dir():
        (work / "sets").mkdir(parents=True)
        (work / "sets" / "random_ipc10").symlink_to(shards)
        acc._record_timing(work, "random_ipc10", 2.5)


def test_seeds_go_to_the_store_and_a_lost_work_dir_reuses_them(
        tmp_path, monkeypatch, cifar_small_shards, cifar_val_shards):
    import dc3ray.pipeline.evaluate as evaluate
    calls: list = []
    monkeypatch.setattr(evaluate, "evaluate_condensed", fake_evaluate(calls))
    ns = bench_args(tmp_path, cifar_val_shards, save_random_teacher(tmp_path / "teacher.pt"))

    def run(work: Path) -> None:
        link_set(work, cifar_small_shards)
        acc.run_cell(ns, work, "random", 10)

    run(tmp_path / "acc")
    [group] = (tmp_path / "results" / acc.STORE / "random_ipc10").iterdir()
    assert group.name == acc.inputs_digest(ns, cifar_small_shards, hard=False, ipc=10)
    entry = json.loads((group / "seed2.json").read_text())
    assert entry["result"]["top1_final"] == 54.0 and entry["cpu"] == machine()["cpu"]
    assert entry["teacher"] == acc.teacher_label(ns.teacher) and entry["condense_s"] == 2.5
    assert entry["inputs"] == group.name and entry["parts"]["eval"] == acc._eval_key(ns, False)
    run(tmp_path / "fresh")  # the work dir is gone: nothing is retrained
    assert calls == [[], [0, 1, 2]]
    assert json.loads((group / "seed2.json").read_text()) == entry  # a reuse changes nothing

    [cell] = acc.collect(ns, ["random"], [10])
    assert cell["status"] == "measured" and cell["seeds"] == 3
    assert cell["final_mean"] == 52.0 and cell["final_top1"] == "52.00 +- 1.63"
    assert cell["best_mean"] == pytest.approx(53.0) and cell["condense_s"] == 2.5
    assert cell["eval_s_per_seed"] == 101.0 and cell["final_per_seed"] == [50.0, 52.0, 54.0]
    assert cell["cpu"] == machine()["cpu"] and cell["teacher"] == entry["teacher"]

    # Another epoch budget: neither the stored seeds nor the work dir's are reused.
    short = bench_args(tmp_path, cifar_val_shards, ns.teacher, epochs=30)
    link_set(tmp_path / "acc", cifar_small_shards)
    acc.run_cell(short, tmp_path / "acc", "random", 10)
    assert calls[-1] == []
    groups = sorted(d.name for d in (tmp_path / "results" / acc.STORE / "random_ipc10").iterdir())
    assert groups == sorted([group.name, acc.inputs_digest(short, cifar_small_shards, False, 10)])
    assert json.loads((group / "seed2.json").read_text()) == entry
    [cell] = acc.collect(short, ["random"], [10])
    assert cell["seeds"] == 3 and all(s["history"][-1][0] == 30 for s in (
        e["result"] for e in acc._stored_seeds(short, "random_ipc10", False).values()))


def test_seeds_of_an_interrupted_evaluation_are_taken_into_the_store_by_the_next_run(
        tmp_path, monkeypatch, cifar_small_shards, cifar_val_shards):
    import dc3ray.pipeline.evaluate as evaluate
    calls: list = []
    ns = bench_args(tmp_path, cifar_val_shards, save_random_teacher(tmp_path / "teacher.pt"))
    work = tmp_path / "acc"
    link_set(work, cifar_small_shards)
    monkeypatch.setattr(evaluate, "evaluate_condensed", fake_evaluate(calls, stop_after=2))
    with pytest.raises(KeyboardInterrupt):
        acc.run_cell(ns, work, "random", 10)
    assert acc._stored_seeds(ns, "random_ipc10", False) == {}  # stored when evaluate returns
    # Interrupted again before training anything: seeds 0 and 1 reach the store all the same.
    monkeypatch.setattr(evaluate, "evaluate_condensed", fake_evaluate(calls, stop_after=0))
    with pytest.raises(KeyboardInterrupt):
        acc.run_cell(ns, work, "random", 10)
    stored = acc._stored_seeds(ns, "random_ipc10", False)
    assert sorted(stored) == [0, 1] and stored[1]["result"]["top1_final"] == 52.0
    assert all(e["cpu"] == machine()["cpu"] and e["condense_s"] == 2.5
               and e["teacher"] == acc.teacher_label(ns.teacher) for e in stored.values())
    assert stored[0]["date"].endswith(" UTC") and len(stored[0]["date"]) == len(acc.utc_now())
    monkeypatch.setattr(evaluate, "evaluate_condensed", fake_evaluate(calls))
    acc.run_cell(ns, work, "random", 10)
    assert calls == [[0, 1]]  # only seed 2 was trained again
    assert sorted(acc._stored_seeds(ns, "random_ipc10", False)) == [0, 1, 2]


def store_seed(tmp_path: Path, cell: str, group: str, seed: int, result: dict, ns,
               hard: bool = False, date: str = "2026-11-29 12:00 UTC") -> None:
    d = tmp_path / "results" / acc.STORE / cell / group
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed{seed}.json").write_text(json.dumps({
        "inputs": group, "parts": {"eval": acc._eval_key(ns, hard)}, "cpu": "X", "date": date,
        "teacher": None, "condense_s": None, "result": result}))


def test_collect_counts_only_seeds_of_this_protocol_and_reports_the_fullest_inputs(tmp_path):
    ns = bench_args(tmp_path, tmp_path, tmp_path)
    store_seed(tmp_path, "random_ipc50", "a", 0, fake_result(0, 60.0, 61.0), ns)
    store_seed(tmp_path, "random_ipc50", "a", 1, fake_result(1, 10.0, 10.0, epochs=30), ns)
    store_seed(tmp_path, "random_ipc50", "a", 3, fake_result(3, 10.0, 10.0), ns)  # seed >= --seeds
    other = bench_args(tmp_path, tmp_path, tmp_path, eval_every=10)
    store_seed(tmp_path, "random_ipc50", "b", 1, fake_result(1, 10.0, 10.0), other)
    (tmp_path / "results" / acc.STORE / "random_ipc50" / "a" / "seed2.json").write_text("{cut")
    cells = acc.collect(ns, ["random", "dc3_diffusion"], [50])
    by = {c["row"]: c for c in cells}
    assert by["random"]["status"] == "partial: 1/3 seeds" and by["random"]["final_mean"] == 60.0
    assert by["random"]["teacher"] is None and by["random"]["cpu"] == "X"
    assert by["dc3_diffusion"]["status"].startswith("not measured: no InstructPix2Pix")
    assert "final_mean" not in by["dc3_diffusion"]
    # Two usable seeds under other inputs (another teacher, say) outnumber a's one: reported.
    for seed in (0, 1):
        store_seed(tmp_path, "random_ipc50", "c", seed, fake_result(seed, 40.0, 41.0), ns)
    [cell] = acc.collect(ns, ["random"], [50])
    assert cell["final_mean"] == 40.0 and cell["seeds"] == 2


def test_stored_seeds_are_keyed_on_set_val_teacher_weights_and_eval_config(
        tmp_path, cifar_small_shards, cifar_val_shards):
    import torch
    from dc3ray.core.models import load_model_checkpoint, save_checkpoint
    teacher = save_random_teacher(tmp_path / "teacher.pt")
    ns = bench_args(tmp_path, cifar_val_shards, teacher)
    key = acc.inputs_digest(ns, cifar_small_shards, hard=False, ipc=10)
    # The same weights saved again (a copied or re-saved file) give the same key.
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
    assert acc.inputs_digest(bench_args(tmp_path, cifar_val_shards, teacher, epochs=30),
                             cifar_small_shards, False, 10) != key
    assert acc.inputs_digest(bench_args(tmp_path, cifar_val_shards, teacher, seeds=5),
                             cifar_small_shards, False, 10) == key  # more seeds: same inputs


def test_cells_of_the_previous_record_without_seed_files_are_carried_with_its_date(tmp_path):
    previous = {"date": "2026-11-29 10:11 UTC", "machine": {"cpu": "AMD EPYC"}, "result": {
        "protocol": {"epochs": 300, "seeds": 3, "eval_every": 25}, "summary": [
            {"row": "herding", "ipc": 10, "labels": "KD", "final_mean": 51.71, "status": "measured"},
            {"row": "random/hard", "ipc": 10, "labels": "hard", "final_mean": 30.95},
            {"row": "kcenter", "ipc": 10, "labels": "KD", "status": "not measured yet"}]}}
    ns = bench_args(tmp_path, tmp_path, tmp_path)
    cells = acc.collect(ns, ["herding", "random/hard", "kcenter"], [10], previous)
    assert cells[0] == dict(previous["result"]["summary"][0], teacher="not recorded (the "
                            "previous record's)", from_record="2026-11-29 10:11 UTC, AMD EPYC")
    assert "teacher" not in cells[1] and cells[1]["final_mean"] == 30.95  # no teacher involved
    assert cells[2]["status"] == "not measured yet" and "from_record" not in cells[2]
    # A record made under another protocol is not carried into this one.
    longer = bench_args(tmp_path, tmp_path, tmp_path, epochs=1000)
    assert all("final_mean" not in c for c in acc.collect(longer, ["herding"], [10], previous))
    # --drop-carried: the figures go, the status names where they came from; once dropped,
    # a later plain collect has nothing left to carry.
    dropped = acc.collect(ns, ["herding", "random/hard", "kcenter"], [10], previous,
                          drop_carried=True)
    assert [("final_mean" in c) for c in dropped] == [False, False, False]
    assert dropped[0]["status"] == ("not measured: the figure carried from 2026-11-29 10:11 UTC, "
                                    "AMD EPYC was dropped (no stored seed; its inputs are lost)")
    assert dropped[2]["status"] == "not measured yet"
    after = dict(previous, result=dict(previous["result"], summary=dropped))
    assert all("final_mean" not in c for c in acc.collect(ns, ["herding", "random/hard"], [10],
                                                         after))


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
    model, meta = load_model_checkpoint(acc.TEACHER)
    record = json.loads(acc.TEACHER.with_name("teacher.json").read_text())
    assert (meta["arch"], meta["num_classes"], meta["image_size"]) == ("convnet3", 10, 32)
    assert meta["extra"]["val_top1"] == record["val_top1"] and record["complete"]
    assert acc.TEACHER.parent == BENCH / "teacher_c3" and acc.teacher_label(acc.TEACHER).endswith(
        f"(val top-1 {record['val_top1']}%)")


def test_every_row_builds_valid_settings_and_ablation_rows_differ_from_dc3_in_settings_only():
    from dataclasses import replace

    from dc3ray.config import EmbedConfig, GradConfig, SelectConfig
    assert set(acc.DEFAULT_ROWS) >= set(acc.ROWS)
    for row in acc.ROWS.values():
        emb, grad, faithful = acc.FEATURES[row.features]
        replace(EmbedConfig(backbone="teacher", model_path="t.pt"), **emb)  # validates
        replace(GradConfig(backbone="teacher", model_path="t.pt"), **grad)
        SelectConfig(method=row.method, ipc=10, faithful=faithful, **dict(row.select))
    # Rows without a compensator are distinct selections: each has its own set (and timing).
    plain = [r.selection for r in acc.ROWS.values() if r.comp is None]
    assert len(plain) == len(set(plain))
    dc3 = acc.ROWS["dc3_select"]
    for name in ("dc3_gradrandom", "dc3_effnet", "dc3_gradzero", "dc3_effbins", "dc3_proportional"):
        row = acc.ROWS[name]
        assert row.method == dc3.method and row.comp is None
        assert row.selection != dc3.selection  # its own set, timings and store cell
    assert acc.FEATURES["effnet"][2] and acc.FEATURES["effnet"][1]["head"] == "random"
    assert acc.FEATURES["gradzero"][1] == {"head": "zero"}
    assert acc.ROWS["dc3_proportional"].select == (("budget", "proportional"),)


def test_screen_trains_the_first_seeds_and_the_cell_stays_partial_with_the_teachers_reading(
        tmp_path, monkeypatch, cifar_small_shards, cifar_val_shards):
    import dc3ray.pipeline.evaluate as evaluate
    calls: list = []
    monkeypatch.setattr(evaluate, "evaluate_condensed", fake_evaluate(calls))
    ns = bench_args(tmp_path, cifar_val_shards, save_random_teacher(tmp_path / "teacher.pt"),
                    screen=1)
    work = tmp_path / "acc"
    link_set(work, cifar_small_shards)
    acc.run_cell(ns, work, "random", 10)
    assert sorted(acc._stored_seeds(ns, "random_ipc10", False)) == [0]
    [cell] = acc.collect(ns, ["random"], [10])
    assert cell["status"] == "partial: 1/3 seeds"
    top1, p_true = cell["teacher_on_set"].split("% / ")
    assert 0 <= float(top1) <= 100 and 0 < float(p_true) < 1
    ns.screen = None  # the full run keeps seed 0 and trains the other two
    acc.run_cell(ns, work, "random", 10)
    assert calls == [[], [0]]
    assert acc.collect(ns, ["random"], [10])[0]["status"] == "measured"


def test_two_processes_split_a_cells_seeds_with_screen_and_seed_from(
        tmp_path, monkeypatch, cifar_small_shards, cifar_val_shards):
    import dc3ray.pipeline.evaluate as evaluate
    calls: list = []
    monkeypatch.setattr(evaluate, "evaluate_condensed", fake_evaluate(calls))
    teacher = save_random_teacher(tmp_path / "teacher.pt")
    work = tmp_path / "acc"
    link_set(work, cifar_small_shards)
    late = bench_args(tmp_path, cifar_val_shards, teacher, seed_from=2)
    acc.run_cell(late, work, "random", 10)  # seed 2 only
    assert sorted(acc._stored_seeds(late, "random_ipc10", False)) == [2]
    early = bench_args(tmp_path, cifar_val_shards, teacher, screen=2)
    acc.run_cell(early, work, "random", 10)  # seeds 0 and 1
    assert acc.collect(early, ["random"], [10])[0]["status"] == "measured"
    acc.run_cell(bench_args(tmp_path, cifar_val_shards, teacher), work, "random", 10)
    assert calls == [[], [], [0, 1, 2]]  # the plain run trains nothing
    with pytest.raises(SystemExit, match="--seed-from 2 leaves no seed"):
        acc.run_cell(bench_args(tmp_path, cifar_val_shards, teacher, screen=2, seed_from=2),
                     work, "random", 10)


# CIFAR-10's committed seed store is keyed on these: a change would orphan hours of seeds.
CIFAR_EVAL_KEY = {"student": "convnet3", "epochs": 300, "batch_size": 0, "batch_rule": 100,
                  "lr": 0.001, "weight_decay": 0.01, "temperature": 20.0, "patch_factor": 2,
                  "rrc_min_scale": 0.5, "image_size": 32, "hard_labels": False, "workers": 1,
                  "use_gpu": False, "eval_every": 25}


def test_the_cifar_eval_key_and_the_committed_seed_store_digests_are_pinned(tmp_path):
    from dc3ray.core.fingerprint import json_digest
    ns = bench_args(tmp_path, tmp_path, tmp_path)
    assert acc._eval_key(ns, False) == CIFAR_EVAL_KEY
    assert acc._eval_key(ns, True) == {**CIFAR_EVAL_KEY, "hard_labels": True}
    assert [json_digest(acc._eval_key(ns, h)) for h in (False, True)] == ["a3c32370ebdc314a",
                                                                          "c45f95a9d9c2c4a5"]
    # Every committed seed is under the digest of its parts, and its eval part is what the
    # benchmark computes now for that budget.
    entries = sorted((BENCH / "results" / acc.STORE).glob("*/*/seed*.json"))
    assert entries
    for f in entries:
        e = json.loads(f.read_text())
        parts, ev = e["parts"], e["parts"]["eval"]
        assert sorted(parts) == ["eval", "ipc", "set", "teacher", "val"]
        assert json_digest(parts) == f.parent.name == e["inputs"]
        args = bench_args(tmp_path, tmp_path, tmp_path, epochs=ev["epochs"],
                          eval_every=ev["eval_every"])
        assert ev == acc._eval_key(args, ev["hard_labels"]), f
    rows = [*acc.ROWS, *(f"{r}/hard" for r in acc.ROWS)]
    names = {acc.cell_name(r, ipc) for r in rows for ipc in (1, 10, 50)}
    assert {f.parent.parent.name for f in entries} <= names
    assert acc.cell_name("dc3_classical/hard", 50) == "dc3_classical_hard_ipc50"



def inet_args(tmp_path: Path, val: Path | None = None, **kw):
    return bench_args(tmp_path, val or tmp_path, tmp_path / "teacher.pt", profile=inet.IMAGENETTE,
                      select_seed=42, features=None, train=str(tmp_path / "train"), **kw)


def test_the_imagenette_profile_follows_the_preset_and_its_rows_build_valid_settings(tmp_path):
    from dc3ray.config import SelectConfig
    from dc3ray.pipeline.features import shares_backbone
    prof = inet.IMAGENETTE
    assert set(inet.CELLS) == {(r, i) for r in ("random", "herding", "dc3_select", "dc3_classical")
                               for i in (1, 10)} | {("random/hard", 10), ("dc3_select/hard", 10),
                                                    ("random", 50), ("dc3_select", 50)}
    assert {r for r, _ in prof.cells} == set(prof.default_rows)
    ns = inet_args(tmp_path)
    for name, row in prof.rows.items():
        assert acc.ROWS[name] == row and row.features == acc.BASE
        emb, grad, faithful = acc._feature_configs(ns, row.features)
        SelectConfig(method=row.method, ipc=10, faithful=faithful, **dict(row.select))
    emb, grad, faithful = acc._feature_configs(ns, acc.BASE)
    assert (emb.backbone, emb.image_size, grad.backbone, grad.image_size, grad.head) == (
        "efficientnet_lite0", 224, "efficientnet_lite0", 224, "imagenet")
    assert shares_backbone(emb, grad) and not faithful  # one forward for bins and gradients
    ev = acc._eval_cfg(ns, hard=False)
    assert (ev.student, ev.image_size, ev.batch_rule, ev.epochs, ev.seeds, ev.eval_every,
            ev.hard_labels) == ("resnet18", 128, 100, 300, 3, 25, False)
    assert acc._eval_cfg(ns, hard=True).hard_labels
    assert acc.cell_name("dc3_select/hard", 10, prof) == "dc3_select_hard_ipc10"
    with pytest.raises(SystemExit, match="unknown row 'dc3_effnet'"):
        acc.parse_row("dc3_effnet", prof)  # CIFAR-10's ablations are not Imagenette rows
    args = acc.parser(prof, None).parse_args([])
    assert (args.train, args.val, args.teacher, args.epochs, args.select_seed) == (
        "runs/imagenette/train", "runs/imagenette/val", None, 300, 42)
    # Without both --rows and --ipc, the default table's cells among them run.
    ns.rows, ns.ipc = prof.default_rows, [1]
    assert acc.requested_cells(ns, explicit=False) == [(r, 1) for r in inet.KD_ROWS]
    ns.rows, ns.ipc = ["herding"], [1, 10, 50]
    assert acc.requested_cells(ns, explicit=False) == [("herding", 1), ("herding", 10)]
    assert acc.requested_cells(ns, explicit=True)[-1] == ("herding", 50)
    # The record: the table's cells and any other run or recorded, row by row.
    rows, ipcs, only = acc.record_table(prof, [("herding", 50)], [{"row": "kcenter", "ipc": 1}])
    assert rows == [*prof.default_rows, "kcenter"] and ipcs == [1, 10, 50]
    assert only == set(inet.CELLS) | {("herding", 50), ("kcenter", 1)}


def features_folder(path: Path, dataset: Path, **grad) -> Path:
    from dc3ray.config import to_dict
    path.mkdir(parents=True)
    (path / "features.json").write_text(json.dumps({
        "dataset": str(dataset), "embed": to_dict(inet.CFG.embed),
        "grad": {**to_dict(inet.CFG.grad), "batch_size": 7, **grad}, "faithful": False}))
    return path


def test_features_are_reused_only_with_the_benchmarks_settings_and_train_images(tmp_path):
    ns = inet_args(tmp_path)
    for d, fp in ((tmp_path / "train", "abc"), (tmp_path / "ingested", "abc"),
                  (tmp_path / "other", "xyz")):
        d.mkdir()
        (d / "dataset.json").write_text(json.dumps({"fingerprint": fp}))
    # A condense run's stage folder holds features/; batch size does not change features.
    stage = tmp_path / "features-0a75"
    features_folder(stage / "features", tmp_path / "ingested")
    assert acc.checked_features(ns, str(stage)) == stage / "features"
    bad = features_folder(tmp_path / "headrandom", tmp_path / "ingested", head="random")
    with pytest.raises(SystemExit, match="grad.head is 'random' there, 'imagenet' here"):
        acc.checked_features(ns, str(bad))
    other = features_folder(tmp_path / "otherdata", tmp_path / "other")
    with pytest.raises(SystemExit, match="not from --train .* \\(abc\\)"):
        acc.checked_features(ns, str(other))
    with pytest.raises(SystemExit, match="no features.json"):
        acc.checked_features(ns, str(tmp_path))


def test_imagenette_report_lists_every_cell_and_the_paper_figures_as_not_measured_here(tmp_path):
    sys.argv = ["benchmarks/accuracy_imagenette.py"]
    res = inet.main(["--report-only", "--work", str(tmp_path / "w"),
                     "--out-dir", str(tmp_path / "results")])
    assert sorted((c["row"], c["ipc"]) for c in res["summary"]) == sorted(inet.CELLS)
    assert all(c["status"] == "not measured yet" for c in res["summary"])
    ref = res["reference"]
    assert ref["note"] == "paper, not measured here"
    assert [(r["ipc"], r["top1"], r["status"]) for r in ref["rows"]] == [
        (1, 37.6, ref["note"]), (10, 84.8, ref["note"]), (50, 89.8, ref["note"])]
    proto = res["protocol"]
    assert (proto["student"], proto["image_size"], proto["select_seed"]) == ("resnet18", 128, 42)
    assert proto["teacher"] == str(tmp_path / "w" / "teacher" / "teacher.pt")
    assert not Path(proto["teacher"]).exists()  # --report-only builds nothing
    assert not (tmp_path / "results" / acc.STORE).exists()
    md = render.render(tmp_path / "results", tmp_path / "docs").read_text()
    assert "## Accuracy on Imagenette" in md
    assert "Reference (paper, not measured here):" in md
    assert "| DC3 (paper) | 1 | 37.6 | paper, not measured here |" in md


def test_imagenette_seeds_go_to_their_own_store_under_its_eval_config(
        tmp_path, monkeypatch, cifar_small_shards, cifar_val_shards):
    import dc3ray.pipeline.evaluate as evaluate
    calls: list = []
    monkeypatch.setattr(evaluate, "evaluate_condensed", fake_evaluate(calls))
    ns = inet_args(tmp_path, cifar_val_shards)
    ns.teacher = str(save_random_teacher(tmp_path / "teacher.pt"))  # read for teacher_on_set
    work = tmp_path / "acc"
    link_set(work, cifar_small_shards)
    acc.run_cell(ns, work, "random/hard", 10)
    [group] = (tmp_path / "results" / "accuracy_imagenette_seeds" / "random_hard_ipc10").iterdir()
    entry = json.loads((group / "seed0.json").read_text())
    assert entry["parts"]["eval"]["student"] == "resnet18"
    assert entry["parts"]["eval"]["image_size"] == 128 and entry["teacher"] is None
    assert not (tmp_path / "results" / acc.STORE).exists()
    [cell] = acc.collect(ns, ["random/hard"], [10])
    assert cell["status"] == "measured" and cell["labels"] == "hard"


def test_a_cell_whose_inputs_equal_another_cells_takes_its_seeds_without_training(
        tmp_path, monkeypatch, cifar_small_shards, cifar_val_shards):
    """Two settings that select the very same images have one inputs digest: one computation."""
    import dc3ray.pipeline.evaluate as evaluate
    calls: list = []
    monkeypatch.setattr(evaluate, "evaluate_condensed", fake_evaluate(calls))
    ns = bench_args(tmp_path, cifar_val_shards, save_random_teacher(tmp_path / "teacher.pt"))
    work = tmp_path / "acc"
    (work / "sets").mkdir(parents=True)
    for name in ("dc3-gradrandom_ipc10", "dc3-gradzero_ipc10"):
        (work / "sets" / name).symlink_to(cifar_small_shards)
    acc.run_cell(ns, work, "dc3_gradrandom", 10)
    acc.run_cell(ns, work, "dc3_gradzero", 10)
    assert calls == [[], [0, 1, 2]]  # the second cell trained nothing
    zero = acc._stored_seeds(ns, "dc3_gradzero_ipc10", False)
    rand = acc._stored_seeds(ns, "dc3_gradrandom_ipc10", False)
    assert {s: e["result"] for s, e in zero.items()} == {s: e["result"] for s, e in rand.items()}
    assert all(e["same_inputs_as"] == "dc3_gradrandom_ipc10" and e["cpu"] == rand[s]["cpu"]
               for s, e in zero.items())
    [cell] = acc.collect(ns, ["dc3_gradzero"], [10])
    assert cell["status"] == "measured" and cell["same_inputs_as"] == "dc3_gradrandom_ipc10"


@pytest.mark.slow
def test_exported_seeds_train_without_ray_and_import_into_the_store_with_their_device(
        tmp_path, monkeypatch, cifar_small_shards, cifar_val_shards):
    """--export -> gpu_student.py (the real student loop, in child processes, here on CPU) ->
    --import: the seeds become the cell's, stored with the device they ran on, not retrained;
    a bundle trained on other inputs is refused by cell name."""
    import dc3ray.pipeline.evaluate as evaluate
    import gpu_student
    from dc3ray.pipeline.bundle import read_jobs
    teacher = save_random_teacher(tmp_path / "teacher.pt")
    ns = bench_args(tmp_path, cifar_val_shards, teacher, seeds=2, epochs=2, eval_every=1)
    work, bundle, out = tmp_path / "acc", tmp_path / "bundle", tmp_path / "out"
    link_set(work, cifar_small_shards)
    job = acc.export_cell(ns, work, "random", 10, bundle)
    assert job["seeds"] == [0, 1] and (bundle / "teacher.pt").is_file()
    assert [j["cell"] for j in read_jobs(bundle)["jobs"]] == ["random_ipc10"]

    assert gpu_student.main([str(bundle), "--out", str(out), "--parallel", "2"]) == 0
    record = json.loads((out / gpu_student.RESULT).read_text())
    results = record["jobs"][0]["results"]
    assert [r["seed"] for r in results] == [0, 1] and not record["failed"]
    assert all(r["history"][-1][0] == 2 and "gpu_student.py" in r["device"] for r in results)

    calls: list = []
    monkeypatch.setattr(evaluate, "evaluate_condensed", fake_evaluate(calls))
    ns.import_seeds = str(out / gpu_student.RESULT)
    acc.run_cell(ns, work, "random", 10)
    assert calls == [[0, 1]]  # both seeds came from the bundle: nothing trained here
    stored = acc._stored_seeds(ns, "random_ipc10", False)
    assert {s: e["result"]["top1_final"] for s, e in stored.items()} == \
        {r["seed"]: r["top1_final"] for r in results}
    assert all(e["cpu"] == r["device"] for e, r in zip(stored.values(), results))
    [cell] = acc.collect(ns, ["random"], [10])
    assert cell["status"] == "measured" and "gpu_student.py" in cell["cpu"]

    # The record render.py lays out, with the seeds kept beside it.
    rec = json.loads(gpu_student.record_from(out / gpu_student.RESULT, "accuracy_x", "cmd",
                                             results=tmp_path / "res").read_text())
    [row] = rec["result"]["summary"]
    assert row["final_per_seed"] == [round(r["top1_final"], 2) for r in results]
    assert (tmp_path / "res" / "accuracy_x_seeds" / gpu_student.RESULT).is_file()

    # Seeds trained under an override (another resolution) are not this cell's: not imported.
    data = json.loads((out / gpu_student.RESULT).read_text())
    for r in data["jobs"][0]["results"]:
        r["overrides"] = {"image_size": 64}
    (tmp_path / "over.json").write_text(json.dumps(data))
    from types import SimpleNamespace
    acc._place_imported(str(tmp_path / "over.json"),
                        SimpleNamespace(cell="random_ipc10", key=data["jobs"][0]["inputs_key"]),
                        tmp_path / "eval_over")
    assert not (tmp_path / "eval_over").exists()

    # Another teacher: the cell's inputs key differs from the bundle's, so the import is refused.
    other = bench_args(tmp_path, cifar_val_shards, save_random_teacher(tmp_path / "t2.pt"),
                       seeds=2, epochs=2, eval_every=1, import_seeds=ns.import_seeds)
    link_set(tmp_path / "acc2", cifar_small_shards)
    with pytest.raises(SystemExit, match="random_ipc10 was trained on other inputs"):
        acc.run_cell(other, tmp_path / "acc2", "random", 10)
