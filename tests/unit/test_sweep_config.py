"""Sweep configs: YAML + overrides, grid validation that names the bad key, the split into
condensation and trial keys; the ranked table, CSV and PNG (no Ray)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from dc3ray.config import (ConfigError, SweepConfig, condensation_id, load_sweep_config,
                           sweep_from_dict)

PRESETS = Path(__file__).resolve().parents[2] / "configs"


def sweep(grid: dict, **extra) -> SweepConfig:
    return sweep_from_dict({"base": {"data": "train", "val": "val"}, "grid": grid, **extra})


def test_shipped_sweep_presets_parse_against_their_base():
    files = sorted(PRESETS.glob("sweep_*.yaml"))
    assert files, "configs/sweep_*.yaml missing"
    for f in files:
        s = load_sweep_config(f)
        assert len(s.points()) >= 2, f.name


def test_yaml_base_path_overrides_and_set_items(tmp_path):
    (tmp_path / "base.yaml").write_text("name: c10\ndata: d/train\nval: d/val\n"
                                        "select: {ipc: 10, k: 10}\n")
    f = tmp_path / "sweep_x.yaml"
    f.write_text("name: x\nbase: base.yaml\noverrides: {select.k: 2, eval: {epochs: 5}}\n"
                 "grid:\n  select.ipc: [1, 2]\n  eval: {lr: [0.001, 0.01]}\n")
    s = load_sweep_config(f, ["eval.seeds=1", "out=runs/x", "metric=final_top1",
                              "grid.compensate.blend=[gradient, grid]", "base.name=other"])
    assert (s.name, s.out, s.metric) == ("x", "runs/x", "final_top1")
    assert (s.base.name, s.base.data, s.base.select.k) == ("other", "d/train", 2)
    assert (s.base.eval.epochs, s.base.eval.seeds) == (5, 1)
    assert s.grid == {"select.ipc": [1, 2], "eval.lr": [0.001, 0.01],
                      "compensate.blend": ["gradient", "grid"]}
    assert s.condensation_keys == ["select.ipc", "compensate.blend"]
    assert s.trial_keys == ["eval.lr"]
    assert len(s.points()) == 8 and len(s.points(s.condensation_keys)) == 4


def test_points_differing_only_in_eval_share_one_condensed_set():
    s = sweep({"select.ipc": [1, 2], "eval.student": ["convnet3", "resnet18_cifar"]})
    ids = {}
    for p in s.points():
        cfg = s.config_for(p)
        assert (cfg.select.ipc, cfg.eval.student) == (p["select.ipc"], p["eval.student"])
        ids.setdefault(condensation_id(cfg), set()).add(p["eval.student"])
    assert len(ids) == 2 and all(v == {"convnet3", "resnet18_cifar"} for v in ids.values())


def test_list_valued_settings_sweep_as_whole_lists():
    s = sweep({"compensate.warm": [["sunny"], ["sepia", "daylight"]]})
    assert [s.config_for(p).compensate.warm for p in s.points()] == [("sunny",),
                                                                     ("sepia", "daylight")]


@pytest.mark.parametrize("grid, needle", [
    ({"select.ipcc": [1]}, "grid key 'select.ipcc' is not a setting"),
    ({"select": [1]}, "'select' is a whole section"),
    ({"select.ipc.x": [1]}, "select.ipc has no sub-settings"),
    ({"select.ipc": []}, "grid.select.ipc must be a non-empty list"),
    ({"select.ipc": 10}, "grid.select.ipc must be a non-empty list"),
    ({"select.ipc": [1, 1]}, "grid.select.ipc lists a value twice"),
    ({"select.ipc": [0, 1]}, r"grid point \{'select.ipc': 0\}: select.ipc must be >= 1"),
    ({"out": ["a", "b"]}, "grid key 'out' cannot be swept"),
    ({"data": ["a", "b"]}, "grid key 'data' cannot be swept"),
    ({}, "grid must map at least one setting"),
])
def test_bad_grids_name_the_key(grid, needle):
    with pytest.raises(ConfigError, match=needle):
        sweep(grid)


@pytest.mark.parametrize("extra, needle", [
    ({"metric": "loss"}, "metric='loss' is unknown"),
    ({"max_concurrent_trials": 0}, "max_concurrent_trials must be >= 1"),
    ({"name": "a/b"}, "sweep name 'a/b'"),
    ({"gird": {}}, "unknown sweep setting.*gird"),
])
def test_bad_sweep_settings_name_the_setting(extra, needle):
    with pytest.raises(ConfigError, match=needle):
        sweep({"select.ipc": [1, 2]}, **extra)


def test_bad_base_settings_and_missing_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="base: unknown setting.*select.ipcc"):
        sweep_from_dict({"base": {"select": {"ipcc": 1}}, "grid": {"select.ipc": [1]}})
    with pytest.raises(ConfigError, match="base.val must name a held-out split"):
        sweep_from_dict({"base": {"val": None, "evaluate": False}, "grid": {"select.ipc": [1]}})
    with pytest.raises(ConfigError, match="base preset nowhere.yaml not found"):
        sweep_from_dict({"base": "nowhere.yaml", "grid": {"select.ipc": [1]}}, tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep_config(tmp_path / "missing.yaml")


def test_identity_ignores_out_and_concurrency_but_not_the_grid():
    a = sweep({"select.ipc": [1, 2]})
    assert a.identity() == sweep({"select.ipc": [1, 2]}, out="elsewhere",
                                 max_concurrent_trials=4).identity()
    assert a.identity() != sweep({"select.ipc": [1, 3]}).identity()
    assert a.identity() != sweep_from_dict({"base": {"data": "train", "val": "val"},
                                            "overrides": {"eval.epochs": 7},
                                            "grid": {"select.ipc": [1, 2]}}).identity()


def test_results_are_ranked_best_first_with_failed_trials_last(tmp_path):
    from dc3ray.pipeline.sweep import format_table, rank_rows, write_results
    rows = [
        {"trial_id": "t0", "status": "TERMINATED", "select.ipc": 1, "eval.lr": 0.001,
         "final_top1": 20.0, "final_std": 1.0, "best_top1": 25.0, "best_std": 0.5},
        {"trial_id": "t1", "status": "ERROR", "select.ipc": 1, "eval.lr": 0.01,
         "final_top1": None, "best_top1": None, "error": "boom"},
        {"trial_id": "t2", "status": "TERMINATED", "select.ipc": 2, "eval.lr": 0.001,
         "final_top1": 30.0, "final_std": 0.0, "best_top1": 31.0, "best_std": 0.0},
    ]
    ranked = rank_rows(rows, "best_top1")
    assert [(r["rank"], r["trial_id"]) for r in ranked] == [(1, "t2"), (2, "t0"), (3, "t1")]
    assert [r["trial_id"] for r in rank_rows(rows, "final_top1")] == ["t2", "t0", "t1"]

    text = format_table(ranked, ["select.ipc", "eval.lr"], "best_top1")
    lines = text.splitlines()
    assert lines[1].split() == ["rank", "select.ipc", "eval.lr", "final_top1", "best_top1",
                                "status"]
    assert lines[3].split()[:4] == ["1", "2", "0.001", "30.00"]  # grid values as written
    assert "25.00 ±0.50" in lines[4] and lines[5].split()[-1] == "ERROR"

    csv_path, png_path = write_results(ranked, ["select.ipc", "eval.lr"], "best_top1", tmp_path)
    with open(csv_path) as f:
        table = list(csv.DictReader(f))
    assert [(t["rank"], t["trial_id"], t["best_top1"]) for t in table] == \
        [("1", "t2", "31.0"), ("2", "t0", "25.0"), ("3", "t1", "")]
    assert table[2]["error"] == "boom" and table[0]["eval.lr"] == "0.001"
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert table[0]["hue_entropy"] == ""  # set columns exist, empty where unknown

    # Set columns are shown where some trial has them.
    ranked[0].update(hue_entropy=4.21, teacher_top1=98.0, teacher_p_true=0.859, acceptance_rate=1.0)
    head = format_table(ranked, ["select.ipc"], "best_top1").splitlines()
    assert head[1].split() == ["rank", "select.ipc", "final_top1", "best_top1", "hue_entropy",
                               "teacher_top1", "teacher_p_true", "acceptance_rate", "status"]
    assert head[3].split()[6:10] == ["4.210", "98.000", "0.859", "1.000"]
