"""Whether an output folder belongs to this run: dc3ray.pipeline.outputs.claim_output."""
from __future__ import annotations

import json

import pytest

from dc3ray.errors import OutputError
from dc3ray.pipeline.outputs import claim_output


def test_a_folder_left_by_our_own_failed_attempt_is_reused(tmp_path):
    # A first `make demo` that died while downloading leaves download/ and mlflow.db behind.
    (tmp_path / "download").mkdir()
    (tmp_path / "mlflow.db").write_text("")
    claim_output(tmp_path, "run.json", {"data": "/d"})
    assert json.loads((tmp_path / "run.json").read_text())["identity"] == {"data": "/d"}
    claim_output(tmp_path, "run.json", {"data": "/d"})  # and again: the same run


def test_foreign_files_are_named_and_left_alone(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(OutputError, match="found thesis.tex") as e:
        claim_output(tmp_path, "run.json", {"data": "/d"})
    assert "remove those files" in e.value.hint
    assert not (tmp_path / "run.json").exists()


def test_another_runs_folder_is_refused_with_the_difference(tmp_path):
    claim_output(tmp_path, "run.json", {"data": "/a", "seed": 1})
    with pytest.raises(OutputError, match=r"data: '/a' -> '/b'"):
        claim_output(tmp_path, "run.json", {"data": "/b", "seed": 1})
    claim_output(tmp_path, "run.json", {"data": "/a", "seed": 2}, ignore=("seed",))
