"""Ingest: every source format, bad inputs, class maps, atomic commits and `info`."""
from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dc3ray.cli import main as cli_main
from dc3ray.config import IngestConfig
from dc3ray.core import schema
from dc3ray.core.datasets import decode_images, load_table
from dc3ray.core.imageio import decode_rgb
from dc3ray.core.shards import read_shards
from dc3ray.core.sources import SourceError
from dc3ray.pipeline import ingest as ingest_mod
from dc3ray.pipeline.ingest import dataset_info, ingest

QUIET = {"log": lambda *_: None}


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(color=(200, 30, 30), size=(8, 8), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else (0, 255, 255, 0)).save(buf, format="JPEG")
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "src"
    for c, color in (("cat", (200, 10, 10)), ("dog", (10, 200, 10))):
        for i in range(3):
            _write(root / c / f"{i}.jpg", _jpeg(color))
    return root


def test_image_folder_ingest_keeps_original_bytes_and_sorted_labels(folder, tmp_path):
    out = tmp_path / "out"
    report = ingest(folder, out, IngestConfig(shard_rows=4), **QUIET)
    t = read_shards(out)
    assert t.num_rows == 6 and report["num_rows"] == 6
    assert t.column("key").to_pylist()[:3] == ["cat/0.jpg", "cat/1.jpg", "cat/2.jpg"]
    assert t.column("label").to_pylist() == [0, 0, 0, 1, 1, 1]
    assert t.column("image")[0].as_py() == (folder / "cat" / "0.jpg").read_bytes()
    assert sorted(p.name for p in out.glob("part-*.parquet")) == ["part-00000.parquet",
                                                                "part-00001.parquet"]
    assert json.loads((out / "class_map.json").read_text()) == {"cat": 0, "dog": 1}
    assert t.column("height").to_pylist()[0] == 8


def test_class_map_file_sets_label_order(folder, tmp_path):
    cmap = _write(tmp_path / "classes.txt", b"dog\ncat\n")
    out = tmp_path / "out"
    ingest(folder, out, IngestConfig(class_map=str(cmap)), **QUIET)
    t = read_shards(out)
    labels = dict(zip(t.column("class_name").to_pylist(), t.column("label").to_pylist()))
    assert labels == {"dog": 0, "cat": 1}
    assert t.column("class_name").to_pylist()[0] == "dog"  # rows sorted by label


def test_class_map_missing_a_folder_class_names_it(folder, tmp_path):
    cmap = _write(tmp_path / "classes.json", json.dumps({"cat": 0}).encode())
    with pytest.raises(SourceError, match="dog"):
        ingest(folder, tmp_path / "out", IngestConfig(class_map=str(cmap)), **QUIET)


def test_bad_files_are_skipped_and_listed_never_dropped(folder, tmp_path):
    good = _jpeg()
    _write(folder / "cat" / "truncated.jpg", good[: len(good) // 2])
    _write(folder / "cat" / "empty.jpg", b"")
    _write(folder / "dog" / "notes.txt", b"hello")
    _write(folder / "README", b"top-level stray file")
    out = tmp_path / "out"
    report = ingest(folder, out, **QUIET)
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert "zero-byte" in reasons["empty.jpg"]
    assert "undecodable" in reasons["truncated.jpg"]
    assert "undecodable" in reasons["notes.txt"]
    assert "outside any class folder" in reasons["README"]
    on_disk = json.loads((out / "ingest_report.json").read_text())
    assert on_disk["num_skipped"] == 4 and on_disk["num_rows"] == 6


def test_odd_image_modes_are_accepted_and_decode_to_rgb(tmp_path):
    root = tmp_path / "src"
    rng = np.random.default_rng(0)
    _write(root / "a" / "gray.png", _png(rng.integers(0, 255, (5, 7), dtype=np.uint8)))
    _write(root / "a" / "rgba.png", _png(rng.integers(0, 255, (5, 7, 4), dtype=np.uint8)))
    _write(root / "a" / "wrong_ext.jpg", _png(rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)))
    pal = Image.fromarray(rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)).convert("P")
    buf = io.BytesIO(); pal.save(buf, format="PNG")
    _write(root / "a" / "palette.png", buf.getvalue())
    buf = io.BytesIO(); Image.new("CMYK", (7, 5), (0, 255, 255, 0)).save(buf, format="JPEG")
    _write(root / "b" / "cmyk.jpg", buf.getvalue())
    im16 = Image.fromarray(rng.integers(0, 65535, (5, 7), dtype=np.uint16))
    buf = io.BytesIO(); im16.save(buf, format="PNG")
    _write(root / "b" / "sixteen.png", buf.getvalue())
    out = tmp_path / "out"
    report = ingest(root, out, **QUIET)
    assert report["num_skipped"] == 0 and report["num_rows"] == 6
    images, labels, keys = decode_images(read_shards(out))
    assert images.shape == (6, 5, 7, 3) and images.dtype == np.uint8
    cmyk = images[keys.index("b/cmyk.jpg")]
    assert cmyk[..., 0].mean() > 200 and cmyk[..., 1].mean() < 60  # CMYK (0,255,255,0) is red


def test_empty_class_is_an_error_naming_it(folder, tmp_path):
    (folder / "fish").mkdir()
    _write(folder / "fish" / "broken.jpg", b"")
    with pytest.raises(SourceError, match="fish"):
        ingest(folder, tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists()


def test_missing_source_is_an_error_naming_it(tmp_path):
    with pytest.raises(SourceError, match="nowhere"):
        ingest(tmp_path / "nowhere", tmp_path / "out", **QUIET)


def test_out_holding_another_dataset_is_an_error_and_rerun_is_a_noop(folder, tmp_path):
    out = tmp_path / "out"
    ingest(folder, out, **QUIET)
    mtime = (out / "part-00000.parquet").stat().st_mtime_ns
    ingest(folder, out, **QUIET)  # same source: nothing to do
    assert (out / "part-00000.parquet").stat().st_mtime_ns == mtime
    _write(folder / "dog" / "9.jpg", _jpeg((1, 2, 3)))
    with pytest.raises(SourceError, match="different dataset"):
        ingest(folder, out, **QUIET)


def test_out_with_foreign_files_is_refused(folder, tmp_path):
    out = tmp_path / "out"
    _write(out / "thesis.tex", b"precious")
    with pytest.raises(SourceError, match="not empty"):
        ingest(folder, out, **QUIET)
    assert (out / "thesis.tex").read_bytes() == b"precious"


def test_interrupted_ingest_leaves_no_output(folder, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt("killed mid-write")
    monkeypatch.setattr("dc3ray.core.shards.write_shards", boom)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        ingest(folder, out, **QUIET)
    assert not out.exists()
    assert not list(tmp_path.glob(".tmp-*"))


def test_symlink_loop_and_unicode_paths(folder, tmp_path):
    (folder / "cat" / "loop").symlink_to(folder / "cat")
    _write(folder / "dog" / "sp ace ünï.jpg", _jpeg())
    report = ingest(folder, tmp_path / "out", **QUIET)
    assert any("symlink loop" in s["reason"] for s in report["skipped"])
    assert "dog/sp ace ünï.jpg" in read_shards(tmp_path / "out").column("key").to_pylist()


def _cifar_batch(n: int, labels: list[int], seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), "labels": labels}


def test_cifar10_pickle_batches_round_trip_pixels(tmp_path):
    src = tmp_path / "cifar-10-batches-py"
    src.mkdir()
    names = ["airplane", "automobile", "bird"]
    with open(src / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f)
    batches = {}
    for i in range(1, 6):
        batches[i] = _cifar_batch(4, [0, 1, 2, 1], seed=i)
        with open(src / f"data_batch_{i}", "wb") as f:
            pickle.dump(batches[i], f)
    out = tmp_path / "out"
    report = ingest(src, out, **QUIET)
    assert report["format"] == "cifar10" and report["num_rows"] == 20
    t = read_shards(out)
    keys = t.column("key").to_pylist()
    row = keys.index("data_batch_3/00002")
    expected = batches[3]["data"][2].reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(decode_rgb(t.column("image")[row].as_py()), expected)
    assert t.column("class_name")[row].as_py() == "bird"


def test_cifar100_pickle_uses_fine_labels(tmp_path):
    src = tmp_path / "cifar-100-python"
    src.mkdir()
    with open(src / "meta", "wb") as f:
        pickle.dump({"fine_label_names": ["apple", "bee"]}, f)
    for split, n in (("train", 3), ("test", 2)):
        with open(src / split, "wb") as f:
            pickle.dump({"data": np.zeros((n, 3072), np.uint8), "fine_labels": [1] * (n - 1) + [0]}, f)
    ingest(src, tmp_path / "tr", **QUIET)
    ingest(src, tmp_path / "te", split="test", **QUIET)
    assert read_shards(tmp_path / "tr").num_rows == 3
    assert read_shards(tmp_path / "te").column("class_name").to_pylist() == ["apple", "bee"]


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_webdataset_shards_with_class_map(tmp_path):
    src = tmp_path / "wds"
    src.mkdir()
    _tar(src / "shard-000.tar", {"a1.jpg": _jpeg(), "a1.cls": b"1", "a2.png": _png(np.zeros((4, 4, 3), np.uint8)), "a2.cls": b"0"})
    _tar(src / "shard-001.tar", {"b1.jpg": _jpeg(), "b1.cls": b"0", "b2.jpg": b"garbage", "b2.cls": b"1",
                                 "b3.jpg": _jpeg()})
    cmap = _write(tmp_path / "cm.json", json.dumps({"ship": 0, "truck": 1}).encode())
    out = tmp_path / "out"
    report = ingest(src, out, IngestConfig(class_map=str(cmap)), **QUIET)
    assert report["format"] == "webdataset"
    t = read_shards(out)
    assert t.column("key").to_pylist() == ["a2", "b1", "a1"]
    assert t.column("class_name").to_pylist() == ["ship", "ship", "truck"]
    reasons = sorted(s["reason"] for s in report["skipped"])
    assert any("no .cls" in r for r in reasons) and any("undecodable" in r for r in reasons)


def test_webdataset_duplicate_key_names_it(tmp_path):
    src = tmp_path / "wds"
    src.mkdir()
    _tar(src / "s0.tar", {"x.jpg": _jpeg(), "x.cls": b"0"})
    _tar(src / "s1.tar", {"x.jpg": _jpeg(), "x.cls": b"0"})
    with pytest.raises(SourceError, match="duplicate key 'x'"):
        ingest(src, tmp_path / "out", **QUIET)


def test_load_table_reads_image_folders_and_rejects_bad_columns(folder, tmp_path):
    t = load_table(folder)
    assert t.num_rows == 6 and t.schema.equals(schema.IMAGE_SCHEMA)
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(t.drop_columns(["label"]), bad / "part-00000.parquet")
    with pytest.raises(ValueError, match=r"part-00000.parquet.*label \(missing\)"):
        load_table(bad)


def test_cli_ingest_and_info(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli_main(["ingest", str(folder), str(out), "--shard-rows", "2"]) == 0
    assert cli_main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "6 images in 2 classes, 3 shards" in text and "8x8: 6" in text
    assert dataset_info(out)["counts"] == {"cat": 3, "dog": 3}
    assert cli_main(["ingest", str(tmp_path / "missing"), str(tmp_path / "o2")]) == 2
    assert "missing" in capsys.readouterr().err
