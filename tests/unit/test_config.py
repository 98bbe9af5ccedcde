"""Configs: YAML + overrides, validation errors that name the setting, property tests."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from dc3ray.config import (CompensateConfig, ConfigError, SelectConfig, config_hash,
                           from_dict, load_config, parse_overrides, to_dict)


def test_overrides_parse_nested_yaml_values():
    assert parse_overrides(["select.ipc=10", "compensate.warm=[a, b]", "x=true"]) == {
        "select": {"ipc": 10}, "compensate": {"warm": ["a", "b"]}, "x": True}


def test_yaml_file_and_override(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("method: random\nipc: 5\n")
    cfg = load_config(SelectConfig, f, ["ipc=7"])
    assert cfg.method == "random" and cfg.ipc == 7


@pytest.mark.parametrize("data, needle", [
    ({"ipc": 0}, "select.ipc"), ({"k": 0}, "select.k"), ({"method": "magic"}, "select.method"),
    ({"ipcc": 3}, "ipcc"), ({"ipc": "ten"}, "ipc must be an integer")])
def test_bad_select_settings_name_the_setting(data, needle):
    with pytest.raises(ConfigError, match=needle):
        from_dict(SelectConfig, data, "select")


def test_template_without_placeholder_is_rejected():
    with pytest.raises(ConfigError, match=r"\{p\}"):
        CompensateConfig(template="make it warm")


def test_diffusion_compensator_needs_a_model_path():
    with pytest.raises(ConfigError, match="model_path"):
        CompensateConfig(compensator="instructpix2pix")


def test_round_trip_through_dict_and_stable_hash():
    cfg = CompensateConfig(warm=("sunny",), blend="grid")
    again = from_dict(CompensateConfig, to_dict(cfg))
    assert again == cfg and config_hash(cfg) == config_hash(again)
    assert config_hash(cfg) != config_hash(CompensateConfig(warm=("sunny",), blend="random"))


@given(ipc=st.integers(-5, 500), k=st.integers(-5, 50), seed=st.integers(0, 2**31))
def test_select_config_accepts_exactly_positive_ipc_and_k(ipc, k, seed):
    if ipc >= 1 and k >= 1:
        cfg = from_dict(SelectConfig, {"ipc": str(ipc), "k": k, "seed": seed})
        assert (cfg.ipc, cfg.k) == (ipc, k)
    else:
        with pytest.raises(ConfigError):
            from_dict(SelectConfig, {"ipc": ipc, "k": k, "seed": seed})


def test_partial_nested_override_keeps_the_parents_default_instance():
    from dc3ray.config import CondenseConfig
    cfg = load_config(CondenseConfig, None, ["embed.batch_size=64"])
    assert cfg.embed.batch_size == 64
    assert cfg.embed.backbone == CondenseConfig().embed.backbone == "teacher"
    assert cfg.embed.image_size == 32
