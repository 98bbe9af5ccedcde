"""A worker node lost mid-job, on the real two-node local cluster of
tests/integration/test_two_node_job.py (head node_a + worker node_b, 2 CPUs each).

One tiny condense job runs undisturbed (the reference bytes and wall time). A second job, same
settings and cluster, loses node_b (its raylet SIGKILLed) while the features stage runs a pool
actor there, and node_c joins in its place; a third loses node_c while the compensation stage
runs a pool actor there, and node_d joins. The replacements are what an autoscaler brings: a
fixed pool whose actors no longer fit on the surviving nodes waits for room. Each job must end
with the reference's condensed bytes.

Pool actors lost with a node are restarted by Ray (ACTOR_MAX_RESTARTS); work Ray does not restart
(Ray Data's Parquet footer reader, an object whose copies were all on that node) fails the
stage, which StageCache reruns. Which of the two happens depends on the moment of the kill.
Only processes of the test's own `ray start` sessions are signalled (by pid).
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from conftest import REPO, make_cifar_subset
from test_two_node_job import (  # noqa: F401  (two_nodes, random_teacher: fixtures)
    Cluster,
    _session_members,
    random_teacher,
    two_nodes,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]

JOB_TIMEOUT_S = 420


def _job_argv(train: Path, teacher: Path, out: Path) -> str:
    # Pools of three 1-CPU actors: the head has 2 CPUs, so at least one actor of each pool runs
    # on a worker node (where Ray places the others is its scheduler's choice).
    overrides = {"data": train, "val": "null", "out": out, "teacher_path": teacher,
                 "evaluate": "false", "select.ipc": 2, "select.k": 2, "ingest.shard_rows": 8,
                 "embed.batch_size": 8, "grad.batch_size": 8, "grad.num_actors": 3,
                 "compensate.compensator": "classical",  # the preset's default is none
                 "compensate.size": 32, "compensate.batch_size": 2, "compensate.num_actors": 3}
    return shlex.join([sys.executable, str(REPO / "jobs" / "condense.py"),
                       "--config", str(REPO / "configs" / "cifar10.yaml"),
                       *[a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]])


def _client(cluster: Cluster):
    from ray.job_submission import JobSubmissionClient
    deadline = time.time() + 60
    while True:  # the dashboard may come up a little after `ray start` returns
        try:
            return JobSubmissionClient(cluster.dashboard)
        except ConnectionError:
            if time.time() > deadline:
                raise
            time.sleep(1)


# Pools wait for all their actors before data flows: on a loaded machine an actor on a fresh
# node may otherwise start after the head's two actors have done the whole tiny stage.
ENV_VARS = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            "RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "180"}


def _wait(client, sid: str) -> dict:
    from ray.job_submission import JobStatus
    deadline = time.time() + JOB_TIMEOUT_S
    while client.get_job_status(sid) not in (JobStatus.SUCCEEDED, JobStatus.FAILED,
                                             JobStatus.STOPPED) and time.time() < deadline:
        time.sleep(1)
    info = client.get_job_info(sid)
    wall = (info.end_time - info.start_time) / 1000 if info.end_time else None
    return {"status": str(info.status.value), "message": info.message, "wall_s": wall,
            "logs": client.get_job_logs(sid)}


def _node_pids(proc, comm: str | None = None, cmd: str | None = None) -> list[int]:
    """Pids in the session of `ray start` process `proc` whose comm equals `comm` or whose
    command line contains `cmd`."""
    found = []
    for pid in _session_members({proc.pid}):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            line = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace")
        except OSError:  # exited meanwhile
            continue
        if (comm and name == comm) or (cmd and cmd in line):
            found.append(pid)
    return found


def _kill_node_when(client, sid: str, proc, stage: str, deadline_s: float = 240) -> str:
    """Once the job log says `[stage] running` and a Ray Data pool actor lives on the node of
    `proc`, SIGKILL that node's raylet. Returns what was done, for the failure message."""
    from ray.job_submission import JobStatus
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        if client.get_job_status(sid) in (JobStatus.SUCCEEDED, JobStatus.FAILED,
                                          JobStatus.STOPPED):
            logs = client.get_job_logs(sid)
            return f"the job ended before {stage} ran on the node:\n{logs[-4000:]}"
        logs = client.get_job_logs(sid)
        if f"[{stage}] running" in logs and f"[{stage}] done" not in logs \
                and _node_pids(proc, cmd="MapWorker"):
            (raylet,) = _node_pids(proc, comm="raylet")
            os.kill(raylet, signal.SIGKILL)
            return f"killed raylet {raylet} during {stage}"
        if f"[{stage}] done" in logs:
            return f"{stage} ended before a pool actor ran on the node:\n{logs[-2000:]}"
        time.sleep(0.2)
    logs = client.get_job_logs(sid)
    return f"no {stage} actor on the node within {deadline_s} s:\n{logs[-2000:]}"


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for sub in ("condensed", "images")
            for p in sorted((out / sub).rglob("*")) if p.is_file()}


def _run_losing_a_node(client, cluster: Cluster, cmd: str, node, stage: str,
                       replacement: str) -> tuple[dict, str]:
    """Submit `cmd`; SIGKILL the raylet of `node` while `stage` runs an actor there; start worker
    `replacement` (what an autoscaler does: a pool of three 1-CPU actors has no room on the head
    alone); wait for the job -> (job, what the kill did)."""
    sid = client.submit_job(entrypoint=cmd, runtime_env={"env_vars": ENV_VARS})
    kill = _kill_node_when(client, sid, node, stage)
    if kill.startswith("killed"):
        cluster.start_worker(replacement)
    return _wait(client, sid), kill


def _cost(ref: dict, job: dict, ref_out: Path, out: Path, stage: str) -> str:
    seconds = [json.loads((o / "manifest.json").read_text())["stages"][stage]["seconds"]
               for o in (ref_out, out)]
    reruns = [line for line in job["logs"].splitlines() if "mid-stage; rerunning" in line]
    return (f"job {ref['wall_s']:.1f} -> {job['wall_s']:.1f} s "
            f"(+{job['wall_s'] - ref['wall_s']:.1f} s), {stage} {seconds[0]} -> {seconds[1]} s, "
            f"stage reruns: {reruns or 'none (Ray restarted the actors)'}")


@pytest.mark.timeout(900)  # node starts, three jobs, two replacement nodes (~5 min here)
def test_a_worker_node_lost_during_features_or_compensation_still_gives_the_same_bytes(
        two_nodes, cifar_root, random_teacher, tmp_path):
    train = make_cifar_subset(cifar_root, tmp_path / "train", "train", per_class=4)
    client = _client(two_nodes)

    ref_out = tmp_path / "undisturbed"
    ref = _wait(client, client.submit_job(entrypoint=_job_argv(train, random_teacher, ref_out),
                                          runtime_env={"env_vars": ENV_VARS}))
    assert ref["status"] == "SUCCEEDED", f"{ref['message']}\n{ref['logs'][-4000:]}"

    # One loss per job: a job that lost work keeps its failed attempt's actors until it ends
    # (docs/RELIABILITY.md, limits), which would decide where the next stage's actors go.
    costs = []
    for stage, node, replacement in (("features", two_nodes.procs[1], "node_c"),
                                     ("compensate", None, "node_d")):
        out = tmp_path / f"node lost in {stage}"
        node = node or two_nodes.procs[-1]  # the replacement of the first loss
        job, kill = _run_losing_a_node(client, two_nodes, _job_argv(train, random_teacher, out),
                                       node, stage, replacement)
        assert kill.startswith("killed"), kill
        assert job["status"] == "SUCCEEDED", f"{job['message']}\n{job['logs'][-6000:]}"
        assert _outputs(out) == _outputs(ref_out), f"{stage}: bytes differ"
        costs.append(f"{stage}: {_cost(ref, job, ref_out, out, stage)}")
    print("\nnode lost during " + "; ".join(costs))  # for docs/RELIABILITY.md (pytest -s)
