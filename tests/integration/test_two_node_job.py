"""A real two-node Ray cluster on this machine runs `jobs/condense.py` submitted as a Ray Job.

Head and worker are separate `ray start --block` processes (own temp dirs, own resources
node_a / node_b, 2 logical CPUs each), so every stage must share two raylets the way it would on a
cluster. The test submits a tiny condense, waits for SUCCEEDED, checks the outputs, and reads
the GCS task events to prove that tasks of that job ran on both nodes. It stops only the
processes it started: each `ray start` runs in its own session, and teardown signals exactly
the members of those two sessions (never `ray stop`, which would stop every Ray on the machine).

Job submission goes through the public JobSubmissionClient over the head's dashboard (the Jobs
HTTP API, what `ray job submit` uses); the package depends on ray[default] for it.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from conftest import REPO, make_cifar_subset, save_random_teacher

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = str(Path(sys.executable).parent / "ray")
JOB_TIMEOUT_S = 360  # about 1 min on an idle 2-core machine (estimate); CI may be loaded

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_members(sids: set[int]) -> list[int]:
    """Pids of live processes whose session id is in `sids` (from /proc/<pid>/stat)."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp session ...
        if fields[0] != "Z" and int(fields[3]) in sids:
            pids.append(int(p.name))
    return pids


def _own_raylets() -> set[int]:
    """Raylets of this test process's own local Ray (`ray_session`), i.e. its children: other
    raylets in the session (e.g. of a driver another test SIGKILLed) exit on their own timing."""
    out = set()
    for pid in _session_members({os.getsid(0)}):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet" and \
                    int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                out.add(pid)
        except (OSError, ValueError, IndexError):  # exited meanwhile
            pass
    return out


@dataclass
class Cluster:
    gcs: str                  # host:port of the head's GCS
    dashboard: str            # http://host:port of the Jobs HTTP API
    head_logs: Path           # the head node's session logs
    env: dict                 # environment the nodes run with
    # `ray start` processes (head, then workers), each the leader of its node's session.
    procs: list = field(default_factory=list)
    # start_worker(name) adds a worker node with resource {name: 1}; returns its `ray start`.
    start_worker: Callable[[str], subprocess.Popen] | None = None


def _start_node(argv, log: Path, what: str, env: dict, procs: list) -> None:
    """Run `ray start ... --block` in its own session and wait for "Ray runtime started".

    `argv()` builds the command (fresh ports each call). Ray gives a raylet 30 s to register
    with the GCS; on a heavily loaded machine that can pass, so a failed start is tried once
    more after its processes are stopped.
    """
    for attempt in (1, 2):
        proc = subprocess.Popen(argv(), env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        procs.append(proc)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if "Ray runtime started" in log.read_text(errors="replace"):
                return
            time.sleep(0.5)
        text = log.read_text(errors="replace")
        if "Ray runtime started" in text:
            return
        _stop([proc])
        if attempt == 2:
            pytest.fail(f"`ray start` for the {what} failed twice (exit {proc.returncode}):\n"
                        f"{text[-3000:]}")


def _stop(procs: list[subprocess.Popen]) -> list[int]:
    """SIGTERM each `ray start --block` (it stops its node's processes), then SIGKILL what is
    left in their sessions (worker processes the raylets spawned). Returns survivors' pids."""
    sids = {p.pid for p in procs}
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.time() + 20
    while time.time() < deadline and _session_members(sids):
        time.sleep(0.2)
    for pid in _session_members(sids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    time.sleep(0.5)
    return _session_members(sids)


@pytest.fixture
def two_nodes():
    # Not tmp_path: Ray's Unix sockets live under the temp dir and their paths must stay
    # under 107 characters.
    tmp = Path(tempfile.mkdtemp(prefix="dc3r2n-", dir="/tmp"))
    others = _own_raylets()  # the test run's own Ray must survive our teardown
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1",
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    ports = {}

    def node_args(name: str) -> list[str]:
        # 2 logical CPUs per node: with 1, a feature actor starves Ray Data's read and sort
        # tasks; 4 selection tasks in flight still need both nodes. Explicit free ports: the
        # defaults (e.g. the agent's 52365) may belong to another Ray on this machine. A small
        # object store: the data is tiny.
        return ["--num-cpus", "2", "--resources", json.dumps({name: 1}),
                "--temp-dir", str(tmp / name), "--object-store-memory", str(100 * 2**20),
                "--dashboard-agent-listen-port", str(_free_port()),
                "--dashboard-agent-grpc-port", str(_free_port()),
                "--metrics-export-port", str(_free_port()),
                "--runtime-env-agent-port", str(_free_port()),
                # No log streaming to drivers: the job's own log is what the test reads.
                "--include-log-monitor", "false",
                "--disable-usage-stats", "--block"]

    def head_argv() -> list[str]:
        ports.update(gcs=_free_port(), dashboard=_free_port())
        return [RAY, "start", "--head", "--port", str(ports["gcs"]),
                "--node-ip-address", "127.0.0.1",
                "--include-dashboard", "true",
                "--dashboard-host", "127.0.0.1", "--dashboard-port", str(ports["dashboard"]),
                *node_args("node_a")]

    def worker_argv(name: str = "node_b") -> list[str]:
        return [RAY, "start", "--address", f"127.0.0.1:{ports['gcs']}",
                "--node-ip-address", "127.0.0.1", *node_args(name)]

    procs: list[subprocess.Popen] = []

    def start_worker(name: str) -> subprocess.Popen:
        _start_node(lambda: worker_argv(name), tmp / f"{name}.out", f"worker node {name}", env,
                    procs)
        return procs[-1]

    try:
        _start_node(head_argv, tmp / "head.out", "head node", env, procs)
        _start_node(worker_argv, tmp / "worker.out", "worker node", env, procs)
        dashboard = f"http://127.0.0.1:{ports['dashboard']}"
        yield Cluster(gcs=f"127.0.0.1:{ports['gcs']}", dashboard=dashboard,
                      head_logs=tmp / "node_a" / "session_latest" / "logs", env=env,
                      procs=procs, start_worker=start_worker)
    finally:
        survivors = _stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)
        assert not survivors, f"processes of the test cluster still running: {survivors}"
        lost = others - _own_raylets()
        assert not lost, f"teardown stopped another Ray instance's raylet(s): {sorted(lost)}"


def _submit_and_wait(cluster: Cluster, entrypoint: str, env_vars: dict) -> dict:
    """Submit `entrypoint` as a Ray Job; wait until it ends -> {submission_id, status, logs}."""
    from ray.job_submission import JobStatus, JobSubmissionClient
    deadline = time.time() + 60
    while True:  # the dashboard may come up a little after `ray start` returns
        try:
            client = JobSubmissionClient(cluster.dashboard)
            break
        except ConnectionError:
            if time.time() > deadline:
                raise
            time.sleep(1)
    sid = client.submit_job(entrypoint=entrypoint, runtime_env={"env_vars": env_vars})
    deadline = time.time() + JOB_TIMEOUT_S
    while client.get_job_status(sid) not in (JobStatus.SUCCEEDED, JobStatus.FAILED,
                                             JobStatus.STOPPED) and time.time() < deadline:
        time.sleep(1)
    info = client.get_job_info(sid)
    return {"submission_id": sid, "status": str(info.status.value), "message": info.message,
            "logs": client.get_job_logs(sid)}


# Reads the GCS task events of one job: node id -> task names that ran there.
_TASKS_BY_NODE = r"""
import json, sys
import ray
ray.init(address=sys.argv[1], logging_level="warning", log_to_driver=False)
from ray._private.state import state
by_node = {}
for ev in state._get_all_task_events():
    if ev.job_id.hex() == sys.argv[2] and ev.HasField("state_updates") and ev.state_updates.node_id:
        by_node.setdefault(ev.state_updates.node_id.hex(), set()).add(ev.task_info.name)
nodes = {n["NodeID"]: sorted(r for r in n["Resources"] if r.startswith("node_"))
         for n in ray.nodes() if n["Alive"]}
print(json.dumps({"tasks": {k: sorted(v) for k, v in by_node.items()}, "nodes": nodes}))
"""


@pytest.fixture
def random_teacher(tmp_path) -> Path:
    """The job needs a backbone, not a good one (a Ray Train teacher run would double the
    test's time)."""
    return save_random_teacher(tmp_path / "teacher.pt")


@pytest.mark.timeout(600)  # two node starts + the job + teardown
def test_condense_job_submitted_to_a_two_node_cluster_runs_on_both_nodes(
        two_nodes, cifar_root, random_teacher, tmp_path):
    train = make_cifar_subset(cifar_root, tmp_path / "train", "train", per_class=6)
    out = tmp_path / "run"
    overrides = {"data": train, "val": "null", "out": out, "teacher_path": random_teacher,
                 "evaluate": "false", "select.ipc": 2, "select.k": 2, "ingest.shard_rows": 64,
                 "embed.batch_size": 64, "grad.batch_size": 64, "compensate.size": 32}
    entrypoint = shlex.join([sys.executable, str(REPO / "jobs" / "condense.py"),
                             "--config", str(REPO / "configs" / "cifar10.yaml"),
                             *[a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]])
    job = _submit_and_wait(two_nodes, entrypoint, {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    logs = job["logs"]
    assert job["status"] == "SUCCEEDED", f"{job['status']}: {job['message']}\n{logs[-4000:]}"

    # The driver joined the cluster (not a local Ray) and printed where its outputs went.
    joined = re.search(r"ray job ([0-9a-f]+) on [^:\s]+:(\d+): (\d+) node", logs)
    assert joined, logs[-3000:]
    job_id, port, nodes = joined.group(1), joined.group(2), int(joined.group(3))
    assert port == two_nodes.gcs.rsplit(":", 1)[1] and nodes == 2
    assert re.search(rf"manifest\s+{re.escape(str(out / 'manifest.json'))}", logs)
    assert f"sqlite:///{out}/mlflow.db" in logs

    # Outputs: IPC 2 x 10 classes, Parquet + ImageFolder + manifest + MLflow store.
    from dc3ray.core.shards import read_shards
    assert read_shards(out / "condensed", required=None).num_rows == 20
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:05d}" for i in range(10)]
    assert all(len(list(d.iterdir())) == 2 for d in (out / "images").iterdir())
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"features", "select", "compensate"} <= set(manifest["stages"])
    assert sum(manifest["counts"].values()) == 20 and (out / "mlflow.db").is_file()

    # Work ran on both nodes: GCS task events of this job, grouped by node.
    probe = subprocess.run([sys.executable, "-c", _TASKS_BY_NODE, two_nodes.gcs, job_id],
                           env=two_nodes.env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    node_of = {tags[0]: nid for nid, tags in seen["nodes"].items() if tags}
    assert set(node_of) == {"node_a", "node_b"}, seen["nodes"]
    for name in ("node_a", "node_b"):
        assert seen["tasks"].get(node_of[name]), f"no task of job {job_id} ran on {name}: {seen}"


def test_train_workers_never_ask_for_more_cpus_than_one_node_has(monkeypatch):
    # 16 CPUs in all but 4 per node: the even share (capped at 8 per worker) would never fit.
    import ray
    from dc3ray.pipeline import raytrain as train
    nodes = [{"Alive": True, "Resources": {"CPU": 4.0}} for _ in range(4)]
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    # raytrain imports ray where it uses it, so patching the module is what it sees.
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0})
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    def cpus(given, workers):
        return train.worker_cpus(given, workers, False, "eval", log=lambda _: None)
    assert cpus(None, 1) == 4.0
    assert cpus(None, 8) == 2.0
    assert cpus(3.0, 1) == 3.0  # an explicit setting is kept
