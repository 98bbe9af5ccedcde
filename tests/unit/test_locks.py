"""One driver per output folder: dc3ray.pipeline.outputs.output_lock, and the commands that take
it (condense, evaluate, sweep) refusing a folder another driver holds. No Ray: the refusals come
before any work."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dc3ray.errors import OutputError
from dc3ray.pipeline.outputs import LOCK_FILE, output_lock

HOLD = """
import sys, time
from dc3ray.pipeline.outputs import output_lock
with output_lock(sys.argv[1], "condense"):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def other_driver(tmp_path):
    """start(out): a second process that takes out's lock and keeps it until killed."""
    procs = []

    def start(out: Path) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                             text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        return p
    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_a_second_driver_is_refused_at_once_naming_host_pid_and_start(tmp_path, other_driver):
    holder = other_driver(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(OutputError) as e:
        with output_lock(tmp_path, "condense"):
            pass
    assert time.perf_counter() - t0 < 2
    msg = str(e.value)
    since = json.loads((tmp_path / LOCK_FILE).read_text())["since"]
    assert f"pid {holder.pid} on {socket.gethostname()}" in msg and since in msg
    assert "in use by another dc3ray driver" in msg and "another out" in e.value.hint


def test_a_killed_drivers_lock_is_taken_over_with_a_line_saying_so(tmp_path, other_driver):
    holder = other_driver(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)  # no cleanup runs: the record stays, flock goes
    holder.wait()
    lines = []
    with output_lock(tmp_path, "evaluate", log=lines.append):
        record = json.loads((tmp_path / LOCK_FILE).read_text())
    assert record["pid"] == os.getpid() and record["what"] == "evaluate"
    assert len(lines) == 1 and "taking over" in lines[0] and f"pid {holder.pid}" in lines[0]
    assert not (tmp_path / LOCK_FILE).exists()  # released on exit


def test_a_lock_left_on_another_host_is_not_taken_over(tmp_path):
    lock = tmp_path / LOCK_FILE
    lock.write_text(json.dumps({"host": "node-7", "pid": 4242, "what": "sweep",
                                "since": "2026-01-01T00:00:00+00:00", "command": "dc3ray sweep"}))
    with pytest.raises(OutputError, match="pid 4242 on node-7.*another machine") as e:
        with output_lock(tmp_path, "condense"):
            pass
    assert str(lock) in e.value.hint and "delete" in e.value.hint
    assert json.loads(lock.read_text())["host"] == "node-7"  # left as it was


def test_nested_use_in_one_process_does_not_deadlock_and_releases_at_the_outer_end(tmp_path):
    with output_lock(tmp_path, "sweep") as lock:
        with output_lock(tmp_path, "condense"):
            with output_lock(tmp_path / ".", "evaluate"):  # same folder, other spelling
                assert json.loads(lock.read_text())["what"] == "sweep"
        assert lock.exists()
    assert not lock.exists()
    with output_lock(tmp_path, "condense"):  # free again
        pass


def test_an_unreadable_record_of_a_dead_driver_is_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text('{"host": "')  # killed while writing its record
    with output_lock(tmp_path, "condense"):
        pass


def test_condense_and_evaluate_refuse_a_folder_another_driver_holds(tmp_path, other_driver):
    from dc3ray.config import CondenseConfig, EvalConfig, EvaluateCommand
    from dc3ray.pipeline.condense import condense
    from dc3ray.pipeline.evaluate import evaluate_command
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "out"
    other_driver(out)
    with pytest.raises(OutputError, match="in use by another dc3ray driver"):
        condense(CondenseConfig(data=str(data), evaluate=False, out=str(out)), log=lambda _: None)
    with pytest.raises(OutputError, match="in use by another dc3ray driver"):
        evaluate_command(EvaluateCommand(condensed=str(data), val=str(data), out=str(out),
                                         eval=EvalConfig(hard_labels=True)), log=lambda _: None)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing else was written


def test_sweep_refuses_a_folder_another_driver_holds(tmp_path, other_driver):
    from dc3ray.pipeline.sweep import run_sweep
    out = tmp_path / "sweep"
    other_driver(out)
    with pytest.raises(OutputError, match="in use by another dc3ray driver"):
        run_sweep({"name": "s", "base": {"data": str(tmp_path), "val": str(tmp_path)},
                   "grid": {"select.ipc": [1, 2]}}, out, log=lambda _: None)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
