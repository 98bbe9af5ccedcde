"""`dc3ray sweep` on real CIFAR-10 images: a 2x2 grid (select.ipc x eval.workers) through Ray
Tune, two condenses (not four), four MLflow runs, a ranked CSV/PNG, and a rerun that resumes.

eval.workers [0, 1] covers both ways a trial trains its students: inside the trial (no Ray
Train; the trial holds the CPUs) and through a nested TorchTrainer (the trial holds none); the
in-trial ones skip a Ray Train start-up each, and both kinds must give the same numbers."""
from __future__ import annotations

import csv

import pytest

from conftest import make_cifar_subset

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(autouse=True)
def own_mlflow_store(monkeypatch):
    """MLflow writes MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_ID into os.environ when earlier tests
    log runs: clear them so this sweep uses its own store. (The fast Ray Train settings come from
    conftest; run_sweep forwards RAY_TRAIN_* to the trials.)"""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)


def tiny_sweep(train, val, teacher, out) -> dict:
    """Random selection and no compensation (no feature or Ray Data stage: both have their own
    tests), an untrained tiny teacher for KD, students 2 epochs, 1 seed: the time goes to the
    sweep's own machinery (2 condenses, 4 Tune trials, 2 of them with a TorchTrainer). Two
    trials at a time: each gets 1 of the 2 CPUs, and their MLflow runs share one SQLite store."""
    return {
        "name": "tiny",
        "out": str(out),
        "base": {"data": str(train), "val": str(val), "teacher_path": str(teacher),
                 "ingest": {"shard_rows": 64}},
        "overrides": {"select.method": "random", "select.k": 1, "compensate.compensator": "none",
                      "eval.epochs": 2, "eval.seeds": 1, "eval.eval_every": 1},
        "grid": {"select.ipc": [1, 2], "eval.workers": [0, 1]},
        "metric": "best_top1",
        "max_concurrent_trials": 2,
    }


def test_tiny_sweep_condenses_once_per_set_logs_four_trials_and_resumes(
        cifar_root, cifar_val_shards, tmp_path, ray_session):
    import mlflow
    from dc3ray.core.models import build_model, save_checkpoint
    from dc3ray.pipeline.sweep import run_sweep

    train = make_cifar_subset(cifar_root, tmp_path / "train", "train", per_class=10)
    teacher = save_checkpoint(tmp_path / "teacher.pt", build_model("convnet3", 10, width=16),
                              "convnet3", 10, 32, model_kwargs={"width": 16})
    out = tmp_path / "sweep"
    spec = tiny_sweep(train, cifar_val_shards, teacher, out)
    logs: list[str] = []
    res = run_sweep(spec, log=logs.append)

    # Two condensation points -> two condensed sets, each condensed (not four).
    assert len(res["sets"]) == 2 and not any(s["cached"] for s in res["sets"].values())
    assert sum("condensing ->" in line for line in logs) == 2
    assert sorted(s["num_images"] for s in res["sets"].values()) == [10, 20]
    assert {s["teacher"] for s in res["sets"].values()} == {str(teacher.resolve())}

    # Four trials, ranked by best top-1, each on its own point's set.
    rows = res["rows"]
    assert res["failed"] == [] and len(rows) == 4
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert [r["best_top1"] for r in rows] == sorted((r["best_top1"] for r in rows), reverse=True)
    assert {(r["select.ipc"], r["eval.workers"]) for r in rows} == {(1, 0), (1, 1), (2, 0), (2, 1)}
    for ipc in (1, 2):  # in the trial or in a TorchTrainer: the same student, the same curve
        [a, b] = [r for r in rows if r["select.ipc"] == ipc]
        assert (a["final_top1"], a["best_top1"]) == (b["final_top1"], b["best_top1"])
    for r in rows:
        assert 0 <= r["final_top1"] <= 100 and r["num_images"] == 10 * r["select.ipc"]
        assert res["sets"][r["set_id"]]["point"] == {"select.ipc": r["select.ipc"]}

    with open(res["csv"]) as f:
        table = list(csv.DictReader(f))
    assert [int(t["rank"]) for t in table] == [1, 2, 3, 4]
    assert [t["trial_id"] for t in table] == [r["trial_id"] for r in rows]
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert res["tracking_uri"] == f"sqlite:///{out.resolve()}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=res["tracking_uri"])
    exp = client.get_experiment_by_name("dc3ray-sweep-tiny")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 4 and all(run.info.status == "FINISHED" for run in runs)
    # The same store holds the two condense runs and the per-seed eval runs of the trials.
    assert len(client.search_runs([client.get_experiment_by_name("dc3ray-cifar10").experiment_id])) == 2
    assert len(client.search_runs([client.get_experiment_by_name("dc3ray-sweep-tiny-evals")
                                   .experiment_id])) == 4
    assert {(run.data.params["select.ipc"], run.data.params["eval.workers"]) for run in runs} == \
        {("1", "0"), ("1", "1"), ("2", "0"), ("2", "1")}
    for r in rows:  # the callback names each run after its trial
        [run] = [x for x in runs if x.data.tags["trial_name"].endswith(r["trial_id"])]
        assert run.data.metrics["best_top1"] == pytest.approx(r["best_top1"])

    # A trial rerun after a kill (Tune had not yet saved that it ended) reports its finished
    # eval.json instead of training again; other settings do not match it.
    from dc3ray.config import sweep_from_dict
    from dc3ray.pipeline.sweep import _finished_eval
    s = sweep_from_dict(spec)
    best = rows[0]
    point = {"select.ipc": best["select.ipc"], "eval.workers": best["eval.workers"]}
    info = res["sets"][best["set_id"]]
    done = _finished_eval(out / "trials" / best["trial_id"], s.config_for(point), info)
    assert done is not None and done["best_mean"] == best["best_top1"]
    assert _finished_eval(out / "trials" / best["trial_id"],
                          s.config_for({**point, "eval.lr": 0.5}), info) is None

    # A rerun on the same out restores the finished experiment: no condense, no training.
    evals = sorted(out.glob("trials/*/eval.json"))
    stamps = [p.stat().st_mtime_ns for p in evals]
    logs2: list[str] = []
    again = run_sweep(spec, log=logs2.append)
    assert again["restored"] and all(s["cached"] for s in again["sets"].values())
    assert not any("condensing ->" in line for line in logs2)
    assert [(r["trial_id"], r["best_top1"]) for r in again["rows"]] == \
        [(r["trial_id"], r["best_top1"]) for r in rows]
    assert [p.stat().st_mtime_ns for p in evals] == stamps
    assert len(client.search_runs([exp.experiment_id])) == 4

    # The same out with another grid is refused, naming what changed.
    other = {**spec, "grid": {"select.ipc": [1, 2], "eval.lr": [0.1]}}
    with pytest.raises(FileExistsError, match="grid.eval.lr"):
        run_sweep(other, log=logs2.append)
