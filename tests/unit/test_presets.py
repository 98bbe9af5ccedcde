"""Every preset under configs/ parses into a valid CondenseConfig."""
from pathlib import Path

import pytest

from dc3ray.config import CondenseConfig, load_config

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted((REPO / "configs").glob("*.yaml"))
NAMES = {"cifar10", "cifar100", "tiny-imagenet", "imagenette", "imagewoof", "imagenet1k"}


def test_all_dataset_presets_exist():
    assert NAMES <= {p.stem for p in PRESETS}


@pytest.mark.parametrize("preset", [p for p in PRESETS if p.stem in NAMES], ids=lambda p: p.stem)
def test_preset_parses_and_validates(preset):
    cfg = load_config(CondenseConfig, preset)
    assert cfg.select.ipc >= 1 and cfg.eval.image_size == cfg.teacher.image_size \
        or cfg.teacher_path is not None or cfg.teacher.kind == "imagenet_subset"


def test_demo_config_uses_the_cifar10_preset_with_reduced_budgets(cifar_root, tmp_path):
    from dc3ray.pipeline.demo import demo_config
    cfg = demo_config(str(cifar_root), str(tmp_path / "demo"), log=lambda *_: None)
    assert cfg.data.endswith("train") and cfg.val.endswith("val")
    assert (cfg.select.ipc, cfg.teacher.epochs, cfg.eval.seeds) == (10, 1, 1)
    assert cfg.embed.backbone == "teacher" and cfg.compensate.compensator == "none"


@pytest.mark.parametrize("preset", [p for p in PRESETS
                                    if p.stem in NAMES - {"imagenet1k", "imagenette"}],
                         ids=lambda p: p.stem)
def test_presets_default_to_selection_only_with_compensation_opt_in(preset):
    """Issue 26's rule: where no compensation setting has beaten selection only by more than one
    std over 3 seeds (docs/FINDINGS.md), the preset runs without it; imagenet1k is the paper's
    GPU protocol, diffusion included; imagenette's confirmed setting is tested below."""
    default = load_config(CondenseConfig, preset).compensate
    assert default.compensator == "none" and not default.edits
    opted = load_config(CondenseConfig, preset, ["compensate.compensator=classical"])
    assert opted.compensate.compensator == "classical" and opted.compensate.blend == "gradient"
    assert opted.compensate.edits


def test_demo_with_a_missing_data_folder_names_it(tmp_path):
    from dc3ray.pipeline.demo import demo_config
    from dc3ray.errors import DataError
    with pytest.raises(DataError, match="nowhere"):
        demo_config(str(tmp_path / "nowhere"), str(tmp_path / "demo"), log=lambda *_: None)


def test_the_imagenette_default_is_the_compensation_setting_its_sweep_confirmed():
    """The one setting that passed issue 26's rule (committed seeds: 3 KD seeds above selection
    only by more than one std) is the imagenette preset's default, word for word."""
    import json
    from dc3ray.core.training import summarize_seeds
    from dc3ray.pipeline.sweep import load_sweep
    store = REPO / "benchmarks/results/sweep_compensation_imagenette_seeds"
    seeds = store / "confirm_seeds.json"
    (job,) = [j for j in json.loads(seeds.read_text())["jobs"] if j["cell"] == "t001"]
    assert len(job["results"]) == 2  # seeds 1 and 2; seed 0 is the screen's
    # The rule itself, on the KD seeds of the screen and the confirmation (the preset's protocol).
    kd = {c: [r for f in ("screen_seeds.json", "confirm_seeds.json")
              for j in json.loads((store / f).read_text())["jobs"] if j["cell"] == c
              for r in j["results"]] for c in ("t001", "baseline")}
    for cell in kd.values():
        assert sorted(r["seed"] for r in cell) == [0, 1, 2]
    ours, base = summarize_seeds(kd["t001"]), summarize_seeds(kd["baseline"])
    assert ours["final_mean"] - base["final_mean"] > max(ours["final_std"], base["final_std"])
    swept = load_sweep(REPO / "configs/sweep_compensation_imagenette.yaml",
                       [f"{k}={json.dumps(v)}" for k, v in job["point"].items()]).base.compensate
    preset = load_config(CondenseConfig, REPO / "configs" / "imagenette.yaml").compensate
    fields = ("compensator", "strength", "warm", "cold", "assignment", "blend", "gate_threshold",
              "template", "size", "ramp", "cell", "seed")
    assert {f: getattr(preset, f) for f in fields} == {f: getattr(swept, f) for f in fields}
