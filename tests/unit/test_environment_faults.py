"""What a run's surroundings can do to it, without Ray: a source folder that changes between runs
(listing fingerprint -> re-ingest), a disk that fills while a stage writes (StageCache), an MLflow
store that cannot be opened (tracking.check_store / start_tracking / log_run)."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import mounted_tmpfs
from PIL import Image

from dc3ray.core.fingerprint import listing_digest
from dc3ray.errors import UserError
from dc3ray.pipeline.stages import STAGE_FILE, StageCache


def _image(path: Path, color: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)
    return path


@pytest.fixture
def source(tmp_path) -> Path:
    src = tmp_path / "src"
    for c, color in (("cat", (200, 0, 0)), ("dog", (0, 0, 200))):
        for i in range(2):
            _image(src / c / f"{i}.png", (color[0], i * 40, color[2]))
    return src


# ---- inputs that change -------------------------------------------------------------------


def test_listing_digest_follows_added_removed_and_replaced_files_not_reads(source):
    d0 = listing_digest(source)
    assert listing_digest(source) == d0
    _image(source / "cat" / "2.png", (1, 2, 3))
    d1 = listing_digest(source)
    (source / "cat" / "2.png").unlink()
    assert listing_digest(source) == d0 != d1  # removed: back to the first listing
    f = source / "dog" / "0.png"
    st = f.stat()
    _image(f, (9, 9, 9))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # replaced, a second later
    assert listing_digest(source) != d0
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    if f.stat().st_size == st.st_size:  # same size and mtime: the listing cannot tell
        assert listing_digest(source) == d0


def test_listing_digest_follows_symlinked_folders_once(tmp_path, source):
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "cat").symlink_to(source / "cat")
    (source / "cat" / "loop").symlink_to(source / "cat")  # a loop is walked once, not forever
    d0 = listing_digest(linked)
    _image(source / "cat" / "9.png", (5, 5, 5))
    assert listing_digest(linked) != d0


def test_condense_ingest_cache_reingests_a_changed_source_and_reuses_an_unchanged_one(
        tmp_path, source):
    from dc3ray.config import CondenseConfig
    from dc3ray.pipeline.condense import _ingested
    cfg = CondenseConfig(data=str(source), evaluate=False, out=str(tmp_path / "out"))
    cache = StageCache(tmp_path / "out", log=lambda _: None)

    def ingest() -> tuple[Path, str, bool]:
        shards, fp = _ingested(cache, "train", str(source), cfg, None)
        return shards, fp, cache.summaries["ingest_train"]["cached"]

    first, fp0, _ = ingest()
    assert ingest()[1:] == (fp0, True)                       # unchanged: reused
    _image(source / "dog" / "new.png", (7, 7, 7))            # added
    added, fp1, cached = ingest()
    assert not cached and fp1 != fp0 and added != first
    (source / "dog" / "new.png").unlink()                    # removed again
    assert ingest()[1:] == (fp0, True)                       # the first stage matches again
    _image(source / "cat" / "0.png", (0, 255, 0))            # replaced in place
    os.utime(source / "cat" / "0.png", ns=(0, 10**18))
    _, fp2, cached = ingest()
    assert not cached and fp2 not in (fp0, fp1)


# ---- a full disk ---------------------------------------------------------------------------


def _commit_first_stage(cache: StageCache) -> Path:
    d, _ = cache.run("first", ("a",), lambda tmp: (tmp / "x.bin").write_bytes(b"1" * 1000) and None)
    return d


def test_a_stage_that_hits_enospc_keeps_committed_stages_and_names_the_path_and_free_space(
        tmp_path):
    cache = StageCache(tmp_path, log=lambda _: None)
    first = _commit_first_stage(cache)
    before = {p.name: p.read_bytes() for p in first.iterdir()}

    def write(tmp: Path):
        (tmp / "part-0.parquet").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "part-1.parquet"))

    with pytest.raises(UserError) as e:
        cache.run("features", ("b",), write)
    msg = str(e.value)
    assert "stage features: no space left" in msg and "part-1.parquet" in msg
    assert str(cache.path("features", "b")) in msg and " free of " in msg
    assert "rerun" in e.value.hint
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before  # committed: intact
    assert sorted(p.name for p in cache.root.iterdir()) == [first.name]   # no temp, no stage


def test_a_ray_wrapped_enospc_is_recognised(tmp_path):
    from dc3ray.pipeline.stages import disk_full
    inner = OSError("[Errno 28] No space left on device")  # pyarrow's form: no errno attribute
    outer = RuntimeError("task failed")
    outer.cause = inner
    assert disk_full(outer).errno == errno.ENOSPC
    assert disk_full(RuntimeError("other")) is None


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs (root only; skipped where mounting is not allowed)."""
    with mounted_tmpfs("1m") as mnt:
        yield mnt


def test_a_stage_that_fills_a_real_disk_fails_cleanly_and_resumes_once_there_is_room(tiny_disk):
    cache = StageCache(tiny_disk, log=lambda _: None)
    first = _commit_first_stage(cache)
    big = os.urandom(2 << 20)  # more than the whole disk

    with pytest.raises(UserError, match=r"stage big: no space left .* free of 1\.0 MiB; its "
                                         r"partial output, [0-9.]+ [KM]iB, is removed"):
        cache.run("big", (1,), lambda tmp: (tmp / "big.bin").write_bytes(big) and None)
    assert (first / STAGE_FILE).is_file() and not list(cache.root.glob(".tmp-*"))
    assert shutil.disk_usage(tiny_disk).free > 900 * 1024  # the half-written file was removed
    subprocess.run(["mount", "-o", "remount,size=4m", str(tiny_disk)], check=True)
    d, _ = cache.run("big", (1,), lambda tmp: (tmp / "big.bin").write_bytes(big) and None)
    assert (d / "big.bin").stat().st_size == len(big)


# ---- a broken MLflow store -----------------------------------------------------------------


@pytest.fixture
def no_user_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_a_corrupt_store_is_reported_naming_it(tmp_path, no_user_store):
    from dc3ray.pipeline.tracking import TrackingError, check_store
    (tmp_path / "mlflow.db").write_bytes(os.urandom(4096))
    with pytest.raises(TrackingError, match=r"mlflow\.db cannot be used \(DatabaseError") as e:
        check_store(tmp_path, "dc3ray-x")
    assert "tracking=optional" in e.value.hint and "aside" in e.value.hint


def test_a_store_in_a_folder_that_cannot_be_created_is_reported(tmp_path, monkeypatch):
    from dc3ray.pipeline.tracking import TrackingError, check_store
    (tmp_path / "a file").write_text("")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/a file/mlflow.db")
    with pytest.raises(TrackingError, match="cannot be used") as e:
        check_store(tmp_path, "dc3ray-x")
    assert "MLFLOW_TRACKING_URI" in e.value.hint


def test_optional_tracking_goes_on_after_one_warning_and_disabled_checks_nothing(
        tmp_path, no_user_store):
    from dc3ray.pipeline.tracking import (
        TrackingError,
        log_run,
        start_tracking,
        tracking_mode,
    )
    (tmp_path / "mlflow.db").write_bytes(b"not a database" * 100)
    lines = []
    assert start_tracking("optional", tmp_path, "x", lines.append) == "disabled"
    assert len(lines) == 1 and "going on without tracking" in lines[0]
    with pytest.raises(TrackingError):
        start_tracking("required", tmp_path, "x", lines.append)
    assert start_tracking("disabled", tmp_path, "x", lines.append) == "disabled" and len(lines) == 1
    with tracking_mode("disabled"):
        assert log_run(tmp_path, "x", "r", {}, {"m": 1.0})["run_id"] is None
    # A store that breaks after the start: optional warns and goes on, required names the store.
    with tracking_mode("optional", lines.append):
        assert log_run(tmp_path, "x", "r", {}, {"m": 1.0})["run_id"] is None
    assert len(lines) == 2 and "run r not recorded" in lines[1]
    with pytest.raises(TrackingError, match="finished work on disk is kept"):
        log_run(tmp_path, "x", "r", {}, {"m": 1.0})
    assert (tmp_path / "mlflow.db").read_bytes() == b"not a database" * 100  # never rewritten


def test_evaluate_and_sweep_check_the_store_before_any_work(tmp_path, no_user_store):
    from dc3ray.config import EvalConfig, EvaluateCommand
    from dc3ray.pipeline.evaluate import evaluate_command
    from dc3ray.pipeline.sweep import run_sweep
    from dc3ray.pipeline.tracking import TrackingError
    for sub in ("eval", "sweep"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "mlflow.db").write_bytes(b"not a database" * 100)
    with pytest.raises(TrackingError, match="cannot be used"):
        evaluate_command(EvaluateCommand(condensed=str(tmp_path), val=str(tmp_path),
                                         out=str(tmp_path / "eval"),
                                         eval=EvalConfig(hard_labels=True)), log=lambda _: None)
    with pytest.raises(TrackingError, match="cannot be used"):
        run_sweep({"name": "s", "base": {"data": str(tmp_path), "val": str(tmp_path)},
                   "grid": {"select.ipc": [1, 2]}}, tmp_path / "sweep", log=lambda _: None)
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["logs", "mlflow.db"]
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["logs", "mlflow.db",
                                                                     "sweep.json"]


# ---- a Ray node lost under a stage ---------------------------------------------------------

NODE_DIED = ("ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this "
             "task.\n\tclass_name: FooterReader\n\tip: 10.0.0.7\nThe actor died because its node "
             "has died. Node Id: e2ba0a5565b4e9c94e7f2c50de8dcbd1")


def test_a_stage_whose_node_died_is_rerun_in_a_fresh_folder_and_commits_once(tmp_path):
    lines, attempts = [], []
    cache = StageCache(tmp_path, log=lines.append)

    def fn(tmp: Path):
        attempts.append(tmp)
        (tmp / "part.parquet").write_bytes(b"half" if len(attempts) == 1 else b"whole")
        if len(attempts) == 1:
            raise RuntimeError(NODE_DIED)
        return {"rows": 1}

    d, _ = cache.run("features", (1,), fn)
    assert len(attempts) == 2 and attempts[0] != attempts[1]
    assert (d / "part.parquet").read_bytes() == b"whole"
    assert any("lost node e2ba0a5565b4 (10.0.0.7) mid-stage; rerunning" in ln for ln in lines)
    assert not list(cache.root.glob(".tmp-*"))


def test_a_stage_that_keeps_losing_nodes_stops_naming_the_node_and_other_errors_are_not_retried(
        tmp_path):
    from dc3ray.errors import ClusterError
    from dc3ray.pipeline.stages import NODE_LOSS_RETRIES
    cache = StageCache(tmp_path, log=lambda _: None)
    calls = []

    def always(tmp: Path):
        calls.append(tmp)
        raise RuntimeError(NODE_DIED)

    with pytest.raises(ClusterError, match=r"failed 3 times because Ray nodes died under it "
                                           r"\(last: node e2ba0a5565b4 \(10\.0\.0\.7\)\)"):
        cache.run("features", (1,), always)
    assert len(calls) == NODE_LOSS_RETRIES + 1 == 3

    calls.clear()

    def broken(tmp: Path):
        calls.append(tmp)
        raise RuntimeError("The actor died unexpectedly before finishing this task.")  # OOM-like

    with pytest.raises(RuntimeError):
        cache.run("compensate", (1,), broken)
    assert len(calls) == 1
