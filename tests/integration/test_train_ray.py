"""Ray Train on real CIFAR-10 samples: a 2-worker teacher that is interrupted and resumed, and a
KD evaluation of a tiny condensed set with MLflow logging."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from dc3ray.config import EvalConfig, TeacherConfig
from dc3ray.core.atomic import write_json
from dc3ray.core.models import build_model, load_model_checkpoint, save_checkpoint

pytestmark = pytest.mark.ray


def image_folder(root: Path, out: Path, per_class: int) -> Path:
    """Symlink the first `per_class` train images of each class into an ImageFolder tree."""
    for cls in sorted(d for d in (root / "train").iterdir() if d.is_dir()):
        (out / cls.name).mkdir(parents=True)
        for f in sorted(cls.iterdir())[:per_class]:
            (out / cls.name / f.name).symlink_to(f)
    return out


def test_teacher_on_two_workers_checkpoints_every_epoch_and_resumes(
        ray_session, cifar_small_shards, cifar_val_shards, tmp_path):
    from dc3ray.pipeline.teacher import train_teacher

    cfg = TeacherConfig(arch="convnet3", epochs=2, batch_size=50, lr=0.05, workers=2, seed=0)
    out = tmp_path / "teacher"
    # "Interrupted" after one epoch: the run stays resumable.
    first = train_teacher(cfg, cifar_small_shards, cifar_val_shards, out, stop_after=1,
                          model_kwargs={"width": 32})
    assert first["epochs_done"] == 1 and not first["complete"]
    assert first["resumed_from_epoch"] == 0 and first["epochs_this_call"] == 1
    assert (out / "teacher.pt").is_file()

    second = train_teacher(cfg, cifar_small_shards, cifar_val_shards, out,
                           model_kwargs={"width": 32})
    assert second["resumed_from_epoch"] == 1 and second["epochs_this_call"] == 1
    assert second["epochs_done"] == 2 and second["complete"]
    assert [h["epoch"] for h in second["history"]] == [1, 2]
    assert second["history"][0] == first["history"][0]  # epoch 1 came from the checkpoint

    saved = json.loads((out / "teacher.json").read_text())
    assert saved["val_top1"] == second["val_top1"] and 0.0 <= saved["val_top1"] <= 100.0
    model, meta = load_model_checkpoint(out / "teacher.pt")
    assert meta["arch"] == "convnet3" and meta["num_classes"] == 10
    assert meta["extra"]["epoch"] == 2
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)

    # A finished run is not retrained; changed settings are refused before any worker starts.
    third = train_teacher(cfg, cifar_small_shards, cifar_val_shards, out,
                          model_kwargs={"width": 32})
    assert third["epochs_this_call"] == 0 and third["val_top1"] == second["val_top1"]
    with pytest.raises(ValueError, match="teacher.epochs: 2 -> 3"):
        train_teacher(TeacherConfig(arch="convnet3", epochs=3, batch_size=50, lr=0.05, workers=2),
                      cifar_small_shards, cifar_val_shards, out, model_kwargs={"width": 32})


def test_evaluate_condensed_trains_students_per_seed_and_logs_to_mlflow(
        ray_session, cifar_root, cifar_val_shards, tmp_path):
    import mlflow
    from dc3ray.pipeline.evaluate import evaluate_condensed

    condensed = image_folder(cifar_root, tmp_path / "condensed", per_class=2)
    teacher_path = save_checkpoint(tmp_path / "teacher.pt", build_model("convnet3", 10, width=16),
                                   "convnet3", 10, 32, model_kwargs={"width": 16})
    # One seed keeps this test to one Ray Train start (~15 s here); summarize_seeds (the
    # mean / std over seeds) is unit-tested.
    cfg = EvalConfig(student="convnet3", epochs=3, seeds=1, eval_every=2, workers=1)
    out = tmp_path / "eval"
    summary = evaluate_condensed(cfg, condensed, cifar_val_shards, teacher_path, out,
                                 model_kwargs={"width": 16})

    assert summary["ipc"] == 2 and summary["num_images"] == 20 and summary["batch_size"] == 20
    [seed] = summary["seeds"]
    assert seed["seed"] == 0 and seed["wall_s"] > 0
    assert [h[0] for h in seed["history"]] == [2, 3]  # every 2 epochs and at the end
    assert seed["top1_final"] == seed["history"][-1][1]
    assert seed["top1_best"] == max(h[1] for h in seed["history"])
    assert summary["final_mean"] == seed["top1_final"] and summary["final_std"] == 0
    assert json.loads((out / "eval.json").read_text())["seeds"] == summary["seeds"]

    client = mlflow.MlflowClient(tracking_uri=summary["mlflow"]["tracking_uri"])
    run = client.get_run(summary["mlflow"]["run_id"])
    assert run.data.params["eval.student"] == "convnet3"
    assert run.data.metrics["final_mean"] == pytest.approx(summary["final_mean"])
    curve = client.get_metric_history(run.info.run_id, "seed0_val_top1")
    assert [m.step for m in curve] == [2, 3]

    # A rerun (say after an interruption between seeds) reuses the finished seed, untrained.
    lines: list[str] = []
    again = evaluate_condensed(cfg, condensed, cifar_val_shards, teacher_path, out,
                               model_kwargs={"width": 16}, log=lines.append)
    assert again["seeds"] == summary["seeds"]
    assert any("seed 0: done earlier" in line for line in lines), lines
    # Seeds kept elsewhere (the accuracy benchmark's committed store) are written into a new
    # out folder as seed files with the plan's inputs key before the call: taken, not trained.
    from dc3ray.pipeline.evaluate import evaluation_plan, seed_file
    plan = evaluation_plan(cfg, condensed, cifar_val_shards, teacher_path,
                           model_kwargs={"width": 16})
    write_json(seed_file(tmp_path / "kept", 0), {"inputs_key": plan["inputs_key"], "result": seed})
    lines.clear()
    kept = evaluate_condensed(cfg, condensed, cifar_val_shards, teacher_path, tmp_path / "kept",
                              model_kwargs={"width": 16}, log=lines.append)
    assert kept["seeds"] == summary["seeds"]
    assert any("seed 0: done earlier" in line for line in lines), lines
    # The key covers everything a seed depends on except the seed count.
    def key(c, teacher=teacher_path):
        return evaluation_plan(c, condensed, cifar_val_shards, teacher,
                               model_kwargs={"width": 16})["inputs_key"]
    assert key(dataclasses.replace(cfg, seeds=5)) == plan["inputs_key"]
    assert key(dataclasses.replace(cfg, epochs=4)) != plan["inputs_key"]
    assert key(dataclasses.replace(cfg, hard_labels=True), None) != plan["inputs_key"]

    # eval.workers=0 trains the same student in this process, without Ray Train: the same
    # curve, no worker start-up. (A kept seed of another epoch budget is refused and trained.)
    local_out, local_cfg = tmp_path / "eval_local", dataclasses.replace(cfg, workers=0)
    write_json(seed_file(local_out, 0), {"inputs_key": key(local_cfg),
                                         "result": dict(seed, history=[[2, 99.0]])})
    lines.clear()
    local = evaluate_condensed(local_cfg, condensed, cifar_val_shards,
                               teacher_path, local_out, model_kwargs={"width": 16},
                               log=lines.append)
    assert [s["history"] for s in local["seeds"]] == [s["history"] for s in summary["seeds"]]
    assert local["seeds"][0]["wall_s"] < seed["wall_s"]
    assert not any("done earlier" in line for line in lines), lines
    # first_seed: a second process trains only the later seeds in the same folder; the full
    # call after both reuses every seed.
    two = dataclasses.replace(local_cfg, seeds=2)
    late = evaluate_condensed(two, condensed, cifar_val_shards, teacher_path, local_out,
                              model_kwargs={"width": 16}, first_seed=1)
    assert [s["seed"] for s in late["seeds"]] == [1]
    lines.clear()
    both = evaluate_condensed(two, condensed, cifar_val_shards, teacher_path, local_out,
                              model_kwargs={"width": 16}, log=lines.append)
    assert both["seeds"] == local["seeds"] + late["seeds"]
    assert sum("done earlier" in line for line in lines) == 2, lines


def test_evaluate_condensed_without_a_teacher_asks_for_one_or_hard_labels(cifar_val_shards,
                                                                           tmp_path):
    from dc3ray.pipeline.evaluate import evaluate_condensed

    with pytest.raises(ValueError, match="hard_labels"):
        evaluate_condensed(EvalConfig(epochs=1, seeds=1), cifar_val_shards, cifar_val_shards,
                           None, tmp_path / "eval")
    with pytest.raises(ValueError, match=r"first_seed=1 must be in \[0, eval.seeds=1\)"):
        evaluate_condensed(EvalConfig(epochs=1, seeds=1, hard_labels=True), cifar_val_shards,
                           cifar_val_shards, None, tmp_path / "eval", first_seed=1)


def test_local_instance_quiets_the_placement_group_cleaner_in_detached_actors(ray_session):
    """Without a dashboard, Ray Train's detached PlacementGroupCleaner logs a State API warning
    every second; init_ray's setup hook must reach such an actor (and only that logger)."""
    import logging

    import ray
    from dc3ray.pipeline.resources import _NOISY_WITHOUT_DASHBOARD

    @ray.remote(num_cpus=0)
    class Probe:
        def levels(self):
            return (logging.getLogger(_NOISY_WITHOUT_DASHBOARD).getEffectiveLevel(),
                    logging.getLogger("ray.train").getEffectiveLevel())

    probe = Probe.options(lifetime="detached").remote()
    try:
        cleaner, train = ray.get(probe.levels.remote(), timeout=120)
    finally:
        ray.kill(probe)
    assert cleaner == logging.ERROR
    assert train < logging.ERROR


def test_local_instance_runs_ray_train_without_a_preemption_watcher(ray_session, monkeypatch):
    """A local instance never drains nodes: its workers (Tune trials build TorchTrainers there)
    inherit RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0; a user's own setting wins."""
    import os

    import ray
    from dc3ray.pipeline.resources import local_train_defaults

    @ray.remote(num_cpus=0)
    def env():
        return os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER")

    assert ray.get(env.remote(), timeout=120) == "0"
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "1")
    local_train_defaults()
    assert os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "1"
