"""Bad configs: clear errors naming the setting, nothing written; property tests for config
parsing and for the per-class selection budget (exactly IPC per class, never a duplicate key).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from dc3ray.config import (BLEND_MODES, COMPENSATORS, SELECT_METHODS, CondenseConfig, ConfigError,
                           config_hash, from_dict, load_config, to_dict)
from dc3ray.core.selection import select_class

QUIET = {"log": lambda *_: None}


@pytest.mark.parametrize("override, needle", [
    ("embed.backbone=magic", r"embed.backbone='magic' is unknown"),
    ("grad.backbone=vae", r"grad.backbone='vae' is unknown"),
    ("embed.model_path=null", r"embed.backbone='teacher' needs embed.model_path"),
    ("grad.backbone=convnet3,grad.model_path=null", r"grad.backbone='convnet3' needs grad.model_path"),
    ("compensate.blend=swirl", r"compensate.blend='swirl' is unknown"),
    ("compensate.compensator=magic", r"compensate.compensator='magic' is unknown"),
    ("compensate.max_side=0", r"compensate.max_side must be >= 8"),
    ("select.ipc=-1", r"select.ipc must be >= 1"),
    ("select.k=ten", r"select.k must be an integer"),
    ("eval.workers=-1", r"eval.workers must be >= 0 \(0: students train in this process, without Ray Train"),
    ("teacher.workers=0", r"teacher.workers must be >= 1"),
])
def test_bad_nested_settings_are_refused_naming_the_setting(override, needle):
    # Through the whole-job loader, as `dc3ray condense --set` parses them.
    with pytest.raises(ConfigError, match=needle):
        load_config(CondenseConfig, None, override.split(","))


@pytest.fixture
def dirs(tmp_path) -> dict:
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    return {"data": str(tmp_path / "train"), "val": str(tmp_path / "val"),
            "out": str(tmp_path / "run"), "missing": str(tmp_path / "nowhere" / "x.pt")}


@pytest.mark.parametrize("overrides, needle", [
    (["data={missing}"], r"data=.*nowhere/x.pt does not exist"),
    (["teacher_path={missing}"], r"teacher_path=.*nowhere/x.pt does not exist"),
    (["class_map={missing}"], r"class_map=.*does not exist"),
    (["embed.backbone=resnet18", "embed.model_path={missing}"],
     r"embed.model_path=.*nowhere/x.pt does not exist"),
    (["grad.model_path={missing}"], r"grad.model_path=.*does not exist"),
    (["compensate.compensator=instructpix2pix", "compensate.model_path={missing}"],
     r"compensate.model_path=.*nowhere/x.pt.* does not exist"),
])
def test_a_missing_path_stops_condense_before_anything_is_written(dirs, overrides, needle):
    from dc3ray.pipeline.condense import condense
    ov = [f"{k}={dirs[k]}" for k in ("data", "val", "out")] + [o.format(**dirs) for o in overrides]
    with pytest.raises(ConfigError, match=needle):
        condense(load_config(CondenseConfig, None, ov), **QUIET)
    assert not Path(dirs["out"]).exists()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("content, needle", [
    ({"run.json": json.dumps({"data": "/elsewhere/train", "name": "c"}), "manifest.json": "{}"},
     r"holds another dc3ray run \(data: '/elsewhere/train' -> '/"),
    ({"thesis.tex": "precious"}, r"is not empty and holds no dc3ray run"),
])
def test_an_output_folder_holding_another_run_is_refused_and_left_untouched(dirs, content,
                                                                            needle):
    from dc3ray.pipeline.condense import condense
    out = Path(dirs["out"])
    out.mkdir()
    for name, text in content.items():
        (out / name).write_text(text)
    before = _snapshot(out)
    cfg = load_config(CondenseConfig, None, [f"{k}={dirs[k]}" for k in ("data", "val", "out")])
    with pytest.raises(FileExistsError, match=needle):
        condense(cfg, **QUIET)
    assert _snapshot(out) == before


@pytest.mark.ray
def test_ipc_above_a_class_size_stops_condense_before_the_teacher(cifar_small_shards,
                                                                  cifar_val_shards, tmp_path,
                                                                  ray_session):
    from dc3ray.pipeline.condense import condense
    out = tmp_path / "run"
    cfg = load_config(CondenseConfig, None, [
        f"data={cifar_small_shards}", f"val={cifar_val_shards}", f"out={out}", "select.ipc=21"])
    with pytest.raises(ConfigError, match=r"class 'airplane' has 20 images but select.ipc=21 "
                                          r"\(10 class\(es\) too small\)"):
        condense(cfg, **QUIET)
    assert not list((out / "stages").iterdir())  # no teacher, no features were started


# ------------------------------------------------------------------ property tests

# Words users could type: letters (any script), digits, spaces and punctuation.
names = st.text(st.characters(categories=("L", "N", "Zs", "P")), min_size=1,
                max_size=12).filter(lambda s: s.strip() == s and "{" not in s and "}" not in s)

valid_settings = st.fixed_dictionaries({
    "select": st.fixed_dictionaries({
        "method": st.sampled_from(SELECT_METHODS), "ipc": st.integers(1, 10_000),
        "k": st.integers(1, 1_000), "seed": st.integers(0, 2**63 - 1),
        "take_all": st.booleans(), "pca_dim": st.integers(1, 512)}),
    "compensate": st.fixed_dictionaries({
        "compensator": st.sampled_from([c for c in COMPENSATORS if c in ("none", "classical")]),
        "blend": st.sampled_from(BLEND_MODES), "ramp": st.integers(0, 500),
        "warm": st.lists(names, min_size=1, max_size=4), "cold": st.lists(names, min_size=1, max_size=4),
        "template": st.builds(lambda a, b: f"{a} {{p}} {b}", names, names),
        "seed": st.integers(0, 2**31)}),
    "eval": st.fixed_dictionaries({"epochs": st.integers(1, 5000), "temperature": st.floats(0.1, 100)}),
})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=valid_settings)
def test_any_valid_config_survives_yaml_and_override_round_trips(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    from_file = load_config(CondenseConfig, path)
    overrides = [f"{sec}.{k}={json.dumps(v, ensure_ascii=False)}"
                 for sec, d in data.items() for k, v in d.items()]
    from_overrides = load_config(CondenseConfig, None, overrides)
    assert from_file == from_overrides
    assert to_dict(from_file.select) == {**to_dict(from_file.select), **data["select"]}
    assert list(from_file.compensate.warm) == data["compensate"]["warm"]
    # The stage cache keys on config_hash: it must not depend on how the config was written.
    assert config_hash(from_file) == config_hash(from_overrides) == \
        config_hash(from_dict(CondenseConfig, to_dict(from_file)))


@settings(max_examples=40, deadline=None)
@given(section=st.sampled_from(["", "select.", "compensate.", "eval."]),
       key=st.from_regex(r"[a-z_]{1,12}", fullmatch=True))
def test_an_unknown_key_is_always_an_error_naming_it(section, key):
    valid = set(to_dict(CondenseConfig()) if not section else
                to_dict(getattr(CondenseConfig(), section[:-1])))
    if key in valid:
        return
    with pytest.raises(ConfigError, match=f"unknown setting.*{section}{key}"):
        load_config(CondenseConfig, None, [f"{section}{key}=1"])


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), ipc_frac=st.floats(0, 1), k=st.integers(1, 12),
       distinct=st.integers(1, 6), faithful=st.booleans(), seed=st.integers(0, 1000))
def test_dc3_always_selects_exactly_ipc_distinct_keys_per_class(n, ipc_frac, k, distinct,
                                                                faithful, seed):
    """Also with duplicate embeddings (fewer distinct points than bins: empty KMeans bins)."""
    ipc = max(1, round(ipc_frac * n))
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(distinct, 6))
    emb = points[rng.integers(0, distinct, n)]
    keys = [f"c/{i:03d}" for i in rng.permutation(n)]
    from dc3ray.config import SelectConfig
    cfg = SelectConfig(ipc=ipc, k=k, pca_dim=4, seed=seed, faithful=faithful)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn: fewer distinct clusters than n_clusters
        rows = select_class(keys, 0, emb, rng.normal(size=(n, 3)), rng.normal(size=(n, 4)), cfg)
    assert len(rows) == ipc
    assert len({r["key"] for r in rows}) == ipc and {r["key"] for r in rows} <= set(keys)
    assert [r["rank"] for r in rows] == list(range(ipc))
