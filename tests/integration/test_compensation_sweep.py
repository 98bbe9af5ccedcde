"""Compensation control on local Ray (issue 26): the stage with the diverse assignment and a
fidelity gate, and a tiny compensation sweep (2 grid points: gate off / on with the run's
teacher) through condense, Tune and MLflow, on real CIFAR-10 images."""
from __future__ import annotations

import json

import pytest

from conftest import make_cifar_subset, save_random_teacher
from dc3ray.config import CompensateConfig
from dc3ray.core import schema
from dc3ray.core.shards import read_shards, write_shards_atomic

pytestmark = pytest.mark.ray


@pytest.fixture(autouse=True)
def own_mlflow_store(monkeypatch):
    """Earlier tests' MLflow runs leave MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_ID in os.environ."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)


def tiny_spec(name, cifar_root, val, teacher, tmp_path, overrides: dict, grid: dict,
              metric: str = "best_top1", max_concurrent_trials: int = 1) -> dict:
    """A compensation sweep over 10 real train images (one per class), one 1-epoch seed a trial."""
    train = make_cifar_subset(cifar_root, tmp_path / "train", "train", per_class=5)
    return {
        "name": name, "out": str(tmp_path / "sweep"),
        "base": {"data": str(train), "val": str(val), "teacher_path": str(teacher),
                 "ingest": {"shard_rows": 64}},
        "overrides": {"select.method": "random", "select.ipc": 1, "select.k": 1,
                      "compensate.compensator": "classical", "eval.epochs": 1, "eval.seeds": 1,
                      "eval.eval_every": 1, "eval.workers": 0, **overrides},
        "grid": grid, "metric": metric, "max_concurrent_trials": max_concurrent_trials,
    }


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return save_random_teacher(tmp_path_factory.mktemp("teacher") / "teacher.pt")


@pytest.fixture(scope="module")
def shards20(cifar_small_shards, tmp_path_factory):
    """20 real rows of the shared shards, with the class map."""
    table = read_shards(cifar_small_shards).slice(0, 20)
    out = tmp_path_factory.mktemp("comp20") / "selected"
    class_map = json.loads((cifar_small_shards / schema.CLASS_MAP_FILE).read_text())
    return write_shards_atomic(table, out, shard_rows=8, extra_files={schema.CLASS_MAP_FILE: class_map})


def test_the_stage_assigns_diverse_words_and_a_rejecting_gate_keeps_every_source(
        ray_session, shards20, teacher, tmp_path):
    from dc3ray.core.editing import assign_diverse, fill_template
    from dc3ray.core.imageio import decode_rgb
    from dc3ray.pipeline.compensate import compensate_dataset

    cfg = CompensateConfig(assignment="diverse", strength=0.5, batch_size=8)
    info = compensate_dataset(str(shards20), cfg, str(tmp_path / "diverse"))
    assert (info["acceptance_rate"], info["accepted"], info["mean_strength"]) == (1.0, 20, 0.5)
    src = read_shards(shards20).sort_by(schema.KEY)
    keys = src.column(schema.KEY).to_pylist()
    words = assign_diverse([decode_rgb(b) for b in src.column(schema.IMAGE).to_pylist()], keys, cfg)
    out = read_shards(tmp_path / "diverse")
    assert out.column("warm_prompt").to_pylist() == [fill_template(cfg.template, words[k][0]) for k in keys]
    assert out.column("cold_prompt").to_pylist() == [fill_template(cfg.template, words[k][1]) for k in keys]

    gated = CompensateConfig(gate_threshold=1e6, gate_model=str(teacher), gate_tries=2,
                             keep_originals=True)
    info = compensate_dataset(str(shards20), gated, str(tmp_path / "gated"))
    assert (info["acceptance_rate"], info["kept_source"], info["rows"]) == (0.0, 20, 40)
    out = read_shards(tmp_path / "gated").to_pylist()
    by_key = dict(zip(keys, src.column(schema.IMAGE).to_pylist()))
    edits = [r for r in out if r["variant"] != "original"]
    assert len(edits) == 20 and {r["variant"] for r in edits} == {"source"}
    assert all(r[schema.IMAGE] == by_key[r["source_key"]] and r["tries"] == 2 for r in edits)


@pytest.mark.slow
def test_a_tiny_compensation_sweep_runs_the_gate_with_the_runs_teacher_and_logs_its_rate(
        cifar_root, cifar_val_shards, teacher, tmp_path, ray_session):
    import mlflow
    from dc3ray.pipeline.sweep import run_sweep

    spec = tiny_spec("tiny-comp", cifar_root, cifar_val_shards, teacher, tmp_path,
                     {"compensate.strength": 0.5, "compensate.assignment": "diverse",
                      "compensate.gate_model": "auto"},
                     {"compensate.gate_threshold": [0.0, 0.5]}, max_concurrent_trials=2)
    res = run_sweep(spec, log=lambda *_: None)
    assert res["failed"] == [] and len(res["rows"]) == 2 and len(res["sets"]) == 2
    assert {r["compensate.gate_threshold"] for r in res["rows"]} == {0.0, 0.5}

    for s in res["sets"].values():
        manifest = json.loads((tmp_path / "sweep" / "sets" / s["id"] / "manifest.json").read_text())
        stage = manifest["stages"]["compensate"]
        assert 0.0 <= stage["acceptance_rate"] <= 1.0 and stage["accepted"] + stage["kept_source"] == 10
        assert all(im["outcome"] in ("accepted", "kept_source") and "strength" in im and "tries" in im
                   for im in manifest["images"])
        if s["point"]["compensate.gate_threshold"] == 0.0:
            assert stage["acceptance_rate"] == 1.0 and stage["mean_tries"] == 1.0

        # The ranked table's set columns come from the set's manifest and its teacher reading.
        row = next(r for r in res["rows"] if r["set_id"] == s["id"])
        assert row["acceptance_rate"] == stage["acceptance_rate"]
        colors = {c["name"]: c for c in manifest["color"]}
        assert row["hue_entropy"] == pytest.approx(colors["condensed"]["hue_entropy"])
        assert 0 <= row["teacher_top1"] <= 100 and 0 < row["teacher_p_true"] < 1

    client = mlflow.MlflowClient(tracking_uri=res["tracking_uri"])
    trial_runs = client.search_runs([client.get_experiment_by_name("dc3ray-sweep-tiny-comp").experiment_id])
    assert sorted(r.data.params["compensate.gate_threshold"] for r in trial_runs) == ["0.0", "0.5"]
    assert all({"hue_entropy", "teacher_p_true", "acceptance_rate"} <= set(r.data.metrics)
               for r in trial_runs)  # one MLflow run per trial carries the set's columns too
    condense_runs = client.search_runs([client.get_experiment_by_name("dc3ray-cifar10").experiment_id])
    assert len(condense_runs) == 2
    rates = sorted(r.data.metrics["compensate.acceptance_rate"] for r in condense_runs)
    assert rates[-1] == 1.0 and 0.0 <= rates[0] <= 1.0


@pytest.mark.slow
def test_a_sweep_exported_to_a_machine_without_ray_screens_confirms_and_imports_back(
        cifar_root, cifar_val_shards, teacher, tmp_path, ray_session):
    """dc3ray sweep --export (sets condensed here, no Tune) -> dc3ray evaluate --export of the
    selection-only baseline into the same bundle -> gpu_student.py --confirm (the real student
    loop in child processes, CPU here) -> the sweep and the evaluation rerun with the seeds
    imported: nothing retrains, each trial names the device its seeds ran on."""
    import sys
    from pathlib import Path

    import mlflow
    from dc3ray.config import EvalConfig
    from dc3ray.pipeline.bundle import read_jobs
    from dc3ray.pipeline.evaluate import evaluate_condensed, export_evaluation
    from dc3ray.pipeline.sweep import run_sweep
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import gpu_student

    spec = tiny_spec("tiny-export", cifar_root, cifar_val_shards, teacher, tmp_path, {},
                     {"compensate.strength": [0.25, 1.0]}, metric="final_top1")
    bundle = tmp_path / "bundle"
    exp = run_sweep(spec, log=lambda *_: None, export=bundle, export_seeds=2,
                    export_hard_labels=True)
    assert [j["cell"] for j in exp["jobs"]] == ["t000", "t000-hard", "t001", "t001-hard"]
    assert all(j["seeds"] == [0, 1] for j in exp["jobs"])
    assert not (tmp_path / "sweep" / "tune").exists()  # exported, not run
    assert len(list((bundle / "sets").iterdir())) == 2  # a set once, however many jobs use it

    base_set = next((tmp_path / "sweep" / "condense" / "stages").glob("select-*")) / "subset"
    cfg = EvalConfig(epochs=1, seeds=2, eval_every=1, workers=0)
    hard = EvalConfig(epochs=1, seeds=2, eval_every=1, workers=0, hard_labels=True)
    for c, cell in ((cfg, "base"), (hard, "base-hard")):
        export_evaluation(c, base_set, cifar_val_shards, teacher, bundle, cell, ipc=1,
                          log=lambda *_: None)
    assert len(read_jobs(bundle)["jobs"]) == 6

    out = tmp_path / "gpu"
    gpu_student.main([str(bundle), "--out", str(out), "--parallel", "3", "--confirm", "1",
                      "--keep", "base*"])
    record = json.loads((out / gpu_student.RESULT).read_text())
    trained = {j["cell"]: sorted(r["seed"] for r in j["results"]) for j in record["jobs"]}
    assert record["phases"] == ["screen", "confirm"] and record["failed"] == {}
    assert trained["base"] == trained["base-hard"] == [0, 1]
    best = [c for c in ("t000", "t001") if trained[c] == [0, 1]]
    other = ({"t000", "t001"} - set(best)).pop()
    assert len(best) == 1 and trained[other] == [0] and trained[other + "-hard"] == []
    assert trained[best[0] + "-hard"] == [0, 1]
    seeds_json = out / gpu_student.RESULT

    said: list[str] = []
    res = run_sweep(spec, log=said.append, imported=seeds_json)
    assert res["failed"] == [] and len(res["rows"]) == 2
    assert any("2 of 2 trials find all their seeds there" in s for s in said)
    assert all("gpu_student.py" in r["device"] for r in res["rows"])
    for r in res["rows"]:
        job = next(j for j in record["jobs"] if j["cell"] == f"t00{[0.25, 1.0].index(r['compensate.strength'])}")
        assert r["final_top1"] == pytest.approx(job["results"][0]["top1_final"])
    client = mlflow.MlflowClient(tracking_uri=res["tracking_uri"])
    runs = client.search_runs([client.get_experiment_by_name("dc3ray-sweep-tiny-export").experiment_id])
    assert len(runs) == 2

    # A teacher given to a hard-label evaluation is no input of its seeds: still imported.
    summary = evaluate_condensed(hard, base_set, cifar_val_shards, teacher, tmp_path / "base_hard",
                                 ipc=1, imported=seeds_json, log=lambda *_: None)
    want = next(j for j in record["jobs"] if j["cell"] == "base-hard")["results"]
    assert [s["top1_final"] for s in summary["seeds"]] == [r["top1_final"] for r in want]
    assert all("gpu_student.py" in s["device"] for s in summary["seeds"])
