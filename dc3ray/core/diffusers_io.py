"""Where diffusers pipelines come from: one rule for a local folder or a hub id, and one loader.

Both the compensators (core.editing) and LoRA fine-tuning / sampling (core.lora) load pipelines
here, so an offline user gets the same checks and the same error text everywhere.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingPathError

# A hub id is "org/name" (one slash, no path-like prefix); anything else must exist locally.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_pipeline(path: str | Path | None, setting: str) -> str:
    """A local diffusers pipeline folder (must hold model_index.json) or a hub id 'org/name'.
    `setting` names the option the value came from, for the error message."""
    if not path:
        raise ConfigError(f"{setting} is empty; set it to a local diffusers pipeline folder or a hub id")
    p = Path(path).expanduser()
    if p.exists():
        if not (p / "model_index.json").is_file():
            raise MissingPathError(f"{setting}={str(path)!r} exists but has no model_index.json; point it "
                                    "at a diffusers pipeline folder (the output of save_pretrained)")
        return str(p)
    if _HUB_ID.match(str(path)) and not str(path).startswith((".", "~")):
        return str(path)
    raise MissingPathError(f"{setting}={str(path)!r} does not exist and does not look like a hub id "
                            "'org/name'; fix the path or download the model to a local folder")


def load_pipeline(pipeline_cls: Any, path: str | Path, device: str, setting: str, dtype: Any = None) -> Any:
    """`pipeline_cls.from_pretrained(path)` on `device`: dtype defaults to fp16 on CUDA and fp32
    elsewhere; no safety checker (its weights are not available offline); no progress bar."""
    import torch

    src = resolve_pipeline(path, setting)
    if dtype is None:
        dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    try:
        pipe = pipeline_cls.from_pretrained(src, dtype=dtype, safety_checker=None,
                                            requires_safety_checker=False)
    except OSError as e:
        raise OSError(f"could not load {pipeline_cls.__name__} from {setting}={str(path)!r}: {e}. "
                      "Without internet, download the model first and pass its local folder") from e
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
