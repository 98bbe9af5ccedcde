"""The first hour of a new user: clear one-line failures, plain image folders for fid/colors."""
from __future__ import annotations

import shutil
import urllib.error
from pathlib import Path

import pytest

from dc3ray import cli


def test_demo_without_data_or_internet_exits_2_with_one_line_and_a_rerun_can_start(
        tmp_path, monkeypatch, capsys):
    import torchvision

    from dc3ray.pipeline import demo
    from dc3ray.pipeline.outputs import claim_output

    monkeypatch.delenv("DC3RAY_DATA", raising=False)
    monkeypatch.setattr(demo, "REPO", tmp_path / "repo")  # no ../shared/data/cifar10 beside it

    def offline(root, **kwargs):
        Path(root).mkdir(parents=True, exist_ok=True)  # as torchvision does before fetching
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err, err  # the message and its hint
    assert "no CIFAR-10 found locally" in lines[0] and "download failed" in lines[0]
    assert "DATA=" in lines[1] and "DC3RAY_DATA" in lines[1]
    # The failed attempt left download/ behind: the next run may use the folder.
    assert (out / "download").is_dir()
    claim_output(out, "run.json", {"data": "/some/cifar10/train"})


def _plain_folder(src: Path, dest: Path, n: int) -> Path:
    dest.mkdir(parents=True)
    for f in sorted(src.iterdir())[:n]:
        shutil.copy(f, dest / f.name)
    return dest


def test_colors_compares_two_plain_image_folders(cifar_root, tmp_path, capsys):
    a = _plain_folder(cifar_root / "val" / "cat", tmp_path / "a", 8)
    b = _plain_folder(cifar_root / "val" / "ship", tmp_path / "b", 8)
    assert cli.main(["colors", str(a), str(b), "--out", str(tmp_path / "k.png")]) == 0
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines()]
    assert (tmp_path / "k.png").is_file() and ["a", "8"] in rows and ["b", "8"] in rows


@pytest.mark.slow
def test_fid_takes_two_plain_image_folders(cifar_root, tmp_path):
    import json
    a = _plain_folder(cifar_root / "val" / "cat", tmp_path / "a", 6)
    b = _plain_folder(cifar_root / "val" / "ship", tmp_path / "b", 6)
    assert cli.main(["fid", str(a), str(b), "--device", "cpu", "--out", str(tmp_path / "f.json")]) == 0
    res = json.loads((tmp_path / "f.json").read_text())
    assert res["n_a"] == res["n_b"] == 6 and res["fid"] > 0
