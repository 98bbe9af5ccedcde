"""Every preset under configs/ parses into a valid CondenseConfig."""
from pathlib import Path

import pytest

from dc3ray.config import CondenseConfig, load_config

PRESETS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
NAMES = {"cifar10", "cifar100", "tiny-imagenet", "imagenette", "imagewoof", "imagenet1k"}


def test_all_dataset_presets_exist():
    assert NAMES <= {p.stem for p in PRESETS}


@pytest.mark.parametrize("preset", [p for p in PRESETS if p.stem in NAMES], ids=lambda p: p.stem)
def test_preset_parses_and_validates(preset):
    cfg = load_config(CondenseConfig, preset)
    assert cfg.select.ipc >= 1 and cfg.eval.image_size == cfg.teacher.image_size \
        or cfg.teacher_path is not None
