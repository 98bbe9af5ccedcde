"""Seeds trained on another machine (dc3ray.pipeline.bundle, gpu_student.py's phases): a bundle
holds each input once and refuses a second source under one name; an import takes only the
seeds of the very inputs, and none trained under an override; --confirm ranks the screen."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from dc3ray.config import EvalConfig
from dc3ray.errors import ConfigError
from dc3ray.pipeline.bundle import SOURCES, add_job, imported_seeds, read_jobs

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gpu_student  # noqa: E402
import sweep_table  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _plan(tmp_path: Path, key: str, set_name: str = "a", val: str = "val") -> dict:
    for d in (set_name, val):
        (tmp_path / "src" / d).mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / d / "part.parquet").write_bytes(d.encode())
    (tmp_path / "src" / "teacher.pt").write_bytes(b"t")
    return {"condensed_path": str(tmp_path / "src" / set_name), "val_path": str(tmp_path / "src" / val),
            "teacher_ckpt": str(tmp_path / "src" / "teacher.pt"), "inputs_key": key,
            "num_classes": 10, "batch_size": 100, "norm": "cifar", "model_kwargs": {}}


def test_a_bundle_copies_each_input_once_and_refuses_another_under_the_same_name(tmp_path):
    b = tmp_path / "bundle"
    cfg = EvalConfig(seeds=2)
    add_job(b, "t000", cfg, _plan(tmp_path, "k0"), [0, 1], "a", point={"x": 1})
    add_job(b, "t000-hard", EvalConfig(hard_labels=True), {**_plan(tmp_path, "k1"), "teacher_ckpt": None},
            [0], "a")
    jobs = read_jobs(b)["jobs"]
    assert [j["cell"] for j in jobs] == ["t000", "t000-hard"] and jobs[0]["point"] == {"x": 1}
    assert jobs[0]["config"]["condensed_path"] == "sets/a" and jobs[1]["config"]["teacher_ckpt"] is None
    assert sorted(json.loads((b / SOURCES).read_text())) == ["sets/a", "teacher.pt", "val"]
    # The same cell on the same inputs is replaced (a re-export), on other inputs refused.
    add_job(b, "t000", cfg, _plan(tmp_path, "k0"), [0, 1, 2], "a")
    assert [j["seeds"] for j in read_jobs(b)["jobs"]] == [[0, 1, 2], [0]]
    with pytest.raises(ConfigError, match="t000 is there already with other inputs"):
        add_job(b, "t000", cfg, _plan(tmp_path, "other"), [0], "a")
    with pytest.raises(ConfigError, match="val split came from"):
        add_job(b, "t001", cfg, _plan(tmp_path, "k2", "b", val="val2"), [0], "b")


def test_an_import_takes_the_seeds_of_its_inputs_key_and_none_under_an_override(tmp_path):
    seeds = tmp_path / "gpu_seeds.json"
    res = lambda s, **kw: {"seed": s, "top1_final": 50.0 + s, "top1_best": 51.0, **kw}  # noqa: E731
    seeds.write_text(json.dumps({"jobs": [
        {"cell": "a", "inputs_key": "k", "results": [res(0), res(1, overrides={"epochs": 2})]},
        {"cell": "b", "inputs_key": "other", "results": [res(2)]}]}))
    said: list[str] = []
    assert imported_seeds(seeds, "k", said.append) == {0: res(0)}
    assert "a seed 1 ran with {'epochs': 2}" in said[0]
    assert imported_seeds(seeds, "missing", said.append) == {}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="bad.json: not a readable"):
        imported_seeds(tmp_path / "bad.json", "k")


def test_confirm_screens_kd_cells_first_with_the_baseline_and_ranks_by_the_jobs_metric():
    jobs = [{"cell": c, "seeds": [0, 1, 2], "metric": "final_top1"}
            for c in ("t000", "t000-hard", "t001", "t001-hard", "base", "base-hard")]
    args = SimpleNamespace(confirm=1, keep=["base*"], seeds=None, screen_deadline=100.0, deadline=500.0)
    (name, screen, limit), (name2, todo, _) = gpu_student.plan_phases(args, jobs)
    assert (name, name2, limit) == ("screen", "confirm", 100.0) and todo == []
    assert screen == [("base", 0), ("t000", 0), ("t001", 0)]  # the comparison first, no -hard
    done = {("t000", 0): {"top1_final": 40.0, "top1_best": 60.0},
            ("t001", 0): {"top1_final": 45.0, "top1_best": 50.0}}
    assert gpu_student.screen_order(jobs, done, 2) == ["t001", "t000"]  # final_top1, not best
    with pytest.raises(SystemExit, match="no such cell"):
        gpu_student.matching(jobs, ["nope*"], "--keep")


@pytest.mark.parametrize("dataset, files", [
    ("cifar10", ["gpu_seeds.json"]),  # screen and confirmation in one H200 run
    ("imagenette", ["screen_seeds.json", "confirm_seeds.json", "hard_seeds.json"]),  # 3 CPU runs
])
def test_the_committed_compensation_sweep_tables_re_derive_from_their_committed_seeds(
        dataset, files, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    seeds = [f"benchmarks/results/sweep_compensation_{dataset}_seeds/{f}" for f in files]
    sweep_table.main(seeds + ["--out", str(tmp_path)])
    docs = REPO / "docs" / "sweeps" / f"compensation_{dataset}"
    for name in ("README.md", "results.csv"):
        assert (tmp_path / name).read_text() == (docs / name).read_text(), name


def test_a_sweep_table_merges_a_screen_and_a_later_confirmation_and_refuses_a_seed_twice(tmp_path):
    res = lambda s, v: {"seed": s, "top1_final": v, "top1_best": v + 1, "wall_s": 10.0,  # noqa: E731
                        "device": "cpu"}
    def run(name, parallel, cells):
        path = tmp_path / name
        path.write_text(json.dumps({"device": "cpu", "parallel": parallel, "wall_s": 5.0, "jobs": [
            {"cell": c, "point": {"s": 0.25} if c != "baseline" else None, "metric": "best_top1",
             "results": [res(s, v) for s, v in seeds]} for c, seeds in cells.items()]}))
        return str(path)
    screen = run("screen.json", 3, {"baseline": [(0, 40.0)], "t000": [(0, 42.0)]})
    confirm = run("confirm.json", 4, {"baseline": [(1, 44.0), (2, 42.0)], "t000": [(1, 43.0)]})
    sweep_table.main([screen, confirm, "--out", str(tmp_path / "out")])
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "screen.json: 3 seeds at once" in readme and "confirm.json: 4 seeds at once" in readme
    assert "| baseline | - | 42.00 +- 1.63 (3) | - |" in readme  # all three seeds, in one cell
    assert "| t000 | 0.25 | 42.50 +- 0.50 (2) | - |" in readme
    # The screen ranks seed 0 only, whatever the confirmation added.
    assert "| 1 | t000 | 0.25 | 42.00 |" in readme
    with pytest.raises(SystemExit, match="t000 seed 0 is also in .*screen.json"):
        sweep_table.main([screen, run("again.json", 1, {"t000": [(0, 41.0)]}), "--out", str(tmp_path)])
    # One file with no cell past one seed says it holds a screen only.
    sweep_table.main([screen, "--out", str(tmp_path / "one")])
    assert "a screen only" in (tmp_path / "one" / "README.md").read_text()
