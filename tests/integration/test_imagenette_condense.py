"""`condense` with the imagenette preset on real Imagenette photos: the ImageNet path end to end
(class table -> no-training subset teacher -> ImageNet gradient head -> KD evaluation)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, make_cifar_subset
from dc3ray.config import CondenseConfig, load_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_condense_imagenette_with_the_pretrained_subset_teacher(imagenette_root, tmp_path,
                                                                ray_session):
    from dc3ray.core.models import ImageNetSubset, load_model_checkpoint
    from dc3ray.pipeline.condense import condense
    from dc3ray.pipeline.features import list_column, read_features
    train = make_cifar_subset(imagenette_root, tmp_path / "train", "train", 6)
    val = make_cifar_subset(imagenette_root, tmp_path / "val", "val", 5)
    overrides = {
        "data": str(train), "val": str(val), "out": str(tmp_path / "run"),
        "class_map": str(imagenette_root / "classes.tsv"),
        "ingest.shard_rows": 64, "select.ipc": 1, "select.k": 1,
        # The preset's backbones and heads, at 128 px instead of 224 to keep the test short.
        "embed.image_size": 128, "grad.image_size": 128, "embed.batch_size": 32,
        "grad.batch_size": 32,
        "compare_random": False, "compare_selection_only": False,
        # Plumbing only: a tiny student, in this process, one epoch.
        "eval.student": "convnet3", "eval.image_size": 32, "eval.epochs": 1, "eval.seeds": 1,
        "eval.workers": 0, "eval.use_gpu": False,
    }
    cfg = load_config(CondenseConfig, REPO / "configs" / "imagenette.yaml",
                      [f"{k}={v}" for k, v in overrides.items()])
    assert (cfg.teacher.kind, cfg.grad.head) == ("imagenet_subset", "imagenet")
    manifest = condense(cfg, log=lambda *_: None)

    assert manifest["counts"] == {str(label): 1 for label in range(10)}
    teacher = manifest["stages"]["teacher"]
    assert teacher["epochs"] == 0 and teacher["val_top1"] > 80  # 50 real val photos
    model, meta = load_model_checkpoint(manifest["teacher"])
    assert isinstance(model, ImageNetSubset) and meta["extra"]["norm"] == "symmetric"
    (features,) = Path(cfg.out, "stages").glob("features-*/features")
    assert json.loads((features / "features.json").read_text())["grad"]["head"] == "imagenet"
    assert list_column(read_features(features), "e").shape == (60, 1000)  # the real ImageNet head
    assert manifest["eval"]["dc3"]["final_mean"] is not None
