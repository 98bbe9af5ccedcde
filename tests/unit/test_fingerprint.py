"""dc3ray.core.fingerprint: the digests stage caches and evaluation resume key on."""
import hashlib
import json
import os

from dc3ray.config import SelectConfig, config_hash, to_dict
from dc3ray.core.fingerprint import file_digest, files_digest, json_digest, tree_stamp


def test_json_digest_ignores_key_order_and_keeps_old_cache_keys():
    assert json_digest({"a": 1, "b": [1, 2]}) == json_digest({"b": [1, 2], "a": 1})
    assert json_digest({"a": 1}) != json_digest({"a": 2})
    cfg = SelectConfig(ipc=7)
    # The formula caches written before core.fingerprint existed used: keep it.
    old = hashlib.sha256(json.dumps([to_dict(cfg)], sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert config_hash(cfg) == old


def test_file_and_folder_digests_follow_the_bytes(tmp_path):
    (tmp_path / "b.parquet").write_bytes(b"x" * (3 << 20))   # more than one read chunk
    (tmp_path / "a.parquet").write_bytes(b"head")
    (tmp_path / "ignored.txt").write_bytes(b"not data")
    whole = hashlib.sha256(b"head" + b"x" * (3 << 20)).hexdigest()[:16]
    assert files_digest(tmp_path) == whole
    assert file_digest(tmp_path / "a.parquet") == hashlib.sha256(b"head").hexdigest()[:16]
    (tmp_path / "a.parquet").write_bytes(b"Head")
    assert files_digest(tmp_path) != whole


def test_tree_stamp_changes_when_a_file_is_rewritten(tmp_path):
    (tmp_path / "sub").mkdir()
    f = tmp_path / "sub" / "x.bin"
    f.write_bytes(b"1234")
    before = tree_stamp(tmp_path)
    assert before == tree_stamp(tmp_path) and before[0][0] == os.path.join("sub", "x.bin")
    os.utime(f, ns=(before[0][2] + 10**9, before[0][2] + 10**9))
    assert tree_stamp(tmp_path) != before
    assert tree_stamp(f)[0][:2] == ("x.bin", 4)
