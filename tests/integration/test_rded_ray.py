"""select.method=rded end to end: condense stitches patches of each class's own real images."""
from __future__ import annotations

import json

import pytest

from conftest import save_random_teacher
from dc3ray.config import CondenseConfig, load_config
from dc3ray.core import schema
from dc3ray.core.shards import read_shards

pytestmark = pytest.mark.ray


def test_condense_with_rded_writes_stitched_images_whose_patches_come_from_their_class(
        ray_session, cifar_small_shards, cifar_val_shards, tmp_path):
    from dc3ray.pipeline.condense import condense
    teacher = save_random_teacher(tmp_path / "teacher.pt")
    out = tmp_path / "run"
    cfg = load_config(CondenseConfig, None, [
        f"data={cifar_small_shards}", f"val={cifar_val_shards}", f"out={out}",
        f"teacher_path={teacher}", "select.method=rded", "select.ipc=2", "select.rded_crops=2",
        "select.rded_candidates=4", "compensate.compensator=none", "evaluate=false",
        "grad.backbone=teacher", "grad.model_path=auto", "grad.image_size=32"])
    manifest = condense(cfg, log=lambda *_: None)
    assert "features" not in manifest["stages"]
    table = read_shards(out / "condensed", required=None)
    assert table.num_rows == 20 and set(table.column(schema.HEIGHT).to_pylist()) == {32}
    rded = json.loads((next((out / "stages").glob("select-*")) / "subset" / "rded.json").read_text())
    for key in table.column(schema.KEY).to_pylist():
        cls = key.split("/")[1]
        assert len(rded["patches"][key]) == 4
        assert all(src.split("/")[0] == cls for src in rded["patches"][key]), (key, rded["patches"][key])
    by_class = {}
    for key, srcs in rded["patches"].items():
        by_class.setdefault(key.split("/")[1], set()).update(srcs)
    assert all(len(srcs) <= 4 for srcs in by_class.values())  # only the 4 drawn images compete
    again = condense(load_config(CondenseConfig, None, [
        f"data={cifar_small_shards}", f"val={cifar_val_shards}", f"out={tmp_path / 'run2'}",
        f"teacher_path={teacher}", "select.method=rded", "select.ipc=2", "select.rded_crops=2",
        "select.rded_candidates=4", "compensate.compensator=none", "evaluate=false",
        "grad.backbone=teacher", "grad.model_path=auto", "grad.image_size=32"]),
        log=lambda *_: None)
    assert [im["key"] for im in again["images"]] == [im["key"] for im in manifest["images"]]
    assert read_shards(tmp_path / "run2" / "condensed", required=None).column(schema.IMAGE) \
        .to_pylist() == table.column(schema.IMAGE).to_pylist()
