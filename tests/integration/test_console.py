"""What `dc3ray condense` prints: our stage lines and a table, Ray's own logs in the run folder."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import make_cifar_subset, save_random_teacher

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# Ray's log line prefixes: "2026-12-02 05:33:50,512\tINFO worker.py:2038 -- ...", core-worker
# "[2026-... E 32695 32695] core_worker.cc", forwarded worker output "(RayTrainWorker pid=...)".
RAY_LINE = re.compile(r"(\d\d:\d\d:\d\d[,.]\d+\s+(INFO|WARNING|ERROR)\s)|(core_worker\.cc)|"
                      r"(\((\w+) pid=\d+\))|RayDeprecationWarning")


def test_condense_console_holds_our_lines_and_ray_logs_go_to_the_run_folder(cifar_root,
                                                                            tmp_path):
    train = make_cifar_subset(cifar_root, tmp_path / "train", "train", 6)
    val = make_cifar_subset(cifar_root, tmp_path / "val", "val", 3)
    teacher = save_random_teacher(tmp_path / "teacher.pt")
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "DC3RAY_VERBOSE"}
    proc = subprocess.run(
        [sys.executable, "-m", "dc3ray.cli", "condense", "--config", "configs/cifar10.yaml",
         "--set", f"data={train}", "--set", f"val={val}", "--set", f"out={out}",
         "--set", f"teacher_path={teacher}", "--set", "select.ipc=1", "--set", "select.k=1",
         "--set", "eval.epochs=1", "--set", "eval.seeds=1", "--set", "eval.workers=1",
         "--set", "compare_random=false", "--set", "compare_selection_only=false",
         "--set", "num_cpus=2"],
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))), env=env,
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    ray_lines = [line for line in console.replace("\r", "\n").splitlines() if RAY_LINE.search(line)]
    assert not ray_lines, ray_lines[:5]
    assert "[features] done" in proc.stdout and "condensed set (IPC 1, 1 seed, 1 epochs)" in proc.stdout
    assert "eval convnet3 seed 0" in proc.stderr  # the training run's progress bar
    log = (out / "logs" / "ray.log").read_text()
    assert re.search(r"\sINFO\s", log), log[:2000]
    for name in ("samples.png", "samples_compare.png", "colors.png", "accuracy.png"):
        assert (out / name).is_file(), name
    assert "mlflow ui --backend-store-uri" not in console or "sqlite:///" in console
