"""`dc3ray condense` end to end on real CIFAR-10 images with the tiny diffusion pipeline."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_cifar_subset, save_random_teacher
from dc3ray.config import CondenseConfig, load_config
from dc3ray.core.shards import read_shards

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def subset30(cifar_root, tmp_path_factory) -> Path:
    """10 classes x 30 real train images, as an ImageFolder (condense ingests it itself)."""
    return make_cifar_subset(cifar_root, tmp_path_factory.mktemp("c30") / "train", "train", 30)


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory) -> Path:
    """A random ConvNet-3 (condense's own teacher stage is tested in
    tests/reliability/test_resume_and_determinism.py)."""
    return save_random_teacher(tmp_path_factory.mktemp("teacher") / "teacher.pt")


@pytest.fixture(scope="module")
def tiny_ip2p(tmp_path_factory) -> Path:
    from tiny_diffusion import build_tiny_instruct_pix2pix
    return build_tiny_instruct_pix2pix(tmp_path_factory.mktemp("ip2p") / "pipe")


def _overrides(subset30, val, teacher, out, **extra) -> list[str]:
    base = {
        "data": str(subset30), "val": str(val), "out": str(out), "teacher_path": str(teacher) if teacher else "null",
        "ingest.shard_rows": 64, "select.ipc": 2, "select.k": 2,
        "embed.batch_size": 64, "grad.batch_size": 64,
        "eval.epochs": 2, "eval.seeds": 1, "eval.eval_every": 1,
        # Students train in this process: three conditions would cost three Ray Train
        # start-ups (most of this test's time); evaluation on workers: test_train_ray.py.
        "eval.workers": 0,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def test_full_condense_with_tiny_diffusion_writes_every_output(
        subset30, cifar_val_shards, tiny_teacher, tiny_ip2p, tmp_path, ray_session):
    from dc3ray.pipeline.condense import condense
    out = tmp_path / "run"
    cfg = load_config(CondenseConfig, None, _overrides(
        subset30, cifar_val_shards, tiny_teacher, out, **{
            "compensate.compensator": "instructpix2pix", "compensate.model_path": str(tiny_ip2p),
            "compensate.steps": 2, "compensate.size": 32, "compensate.batch_size": 4}))
    logs: list[str] = []
    manifest = condense(cfg, log=logs.append)

    table = read_shards(out / "condensed", required=None)
    assert table.num_rows == 20
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:05d}" for i in range(10)]
    assert all(len(list((out / "images" / f"{i:05d}").iterdir())) == 2 for i in range(10))
    for name in ("manifest.json", "samples.png", "colors.png", "eval.json"):
        assert (out / name).is_file(), name
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["config"]["compensate"]["compensator"] == "instructpix2pix"
    assert len(on_disk["images"]) == 20 and all(len(im["prompts"]) == 2 for im in on_disk["images"])
    assert {im["source_key"].split("/")[0] for im in on_disk["images"]} == \
        {p.name for p in subset30.iterdir()}
    assert set(manifest["eval"]) == {"dc3", "selection_only", "random"}
    assert all(0 <= v["final_mean"] <= 100 for v in manifest["eval"].values())
    assert {"ingest_train", "features", "select", "compensate", "eval_dc3"} <= set(on_disk["stages"])
    assert any(line.startswith("[select] done") and "rows/s" in line for line in logs)

    import mlflow
    # A client, not mlflow.set_tracking_uri: that one also sets MLFLOW_TRACKING_URI in
    # os.environ, which would send every later test's runs to this store.
    client = mlflow.MlflowClient(f"sqlite:///{out.resolve()}/mlflow.db")
    exp = client.get_experiment_by_name("dc3ray-cifar10")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["select.ipc"] == "2"
    assert "acc.dc3.final_mean" in run.data.metrics and "time.select_s" in run.data.metrics
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"manifest.json", "samples.png", "colors.png"} <= arts
    # Each evaluation's MLflow run is recorded in the run's own store, not in the stage's temp
    # folder (renamed away when the stage commits).
    evals = json.loads((out / "eval.json").read_text())
    for label, ev in evals.items():
        assert ev["mlflow"]["tracking_uri"] == f"sqlite:///{out.resolve()}/mlflow.db", label
        assert mlflow.MlflowClient(ev["mlflow"]["tracking_uri"]).get_run(ev["mlflow"]["run_id"])


def test_changing_only_the_blend_mode_reruns_only_compensation(
        subset30, cifar_val_shards, tiny_teacher, tmp_path, ray_session):
    from dc3ray.pipeline.condense import condense
    out = tmp_path / "run"
    quiet = lambda *_: None
    # A given teacher: condense's own teacher stage, its caching and resume are covered by
    # tests/reliability/test_resume_and_determinism.py; here it would add a Ray Train run.
    ov = _overrides(subset30, cifar_val_shards, tiny_teacher, out, evaluate="false")
    first = condense(load_config(CondenseConfig, None, ov), log=quiet)
    assert not any(s["cached"] for s in first["stages"].values())
    second = condense(load_config(CondenseConfig, None, ov + ["compensate.blend=grid"]), log=quiet)
    cached = {k: v["cached"] for k, v in second["stages"].items()}
    # val is already a shard folder here, so it has no ingest stage.
    assert cached == {"ingest_train": True, "features": True, "select": True, "compensate": False}
    assert Path(second["teacher"]).resolve() == tiny_teacher.resolve()
    assert first["config"]["compensate"]["blend"] != "grid"  # the rerun changed only the blend
