"""Frozen, validated configs: stage sections, the condense job, the sweep, and one per command.

No ray import here: configs cross Ray boundaries as plain dicts (`to_dict`) and are rebuilt on
the far side (`from_dict`).
"""
from ..errors import ConfigError
from .commands import (
                       PROMPT_TEMPLATE,
                       ColorsCommand,
                       CompensateCommand,
                       DemoCommand,
                       EvaluateCommand,
                       FidCommand,
                       FinetuneConfig,
                       GenerateConfig,
                       InfoCommand,
                       IngestCommand,
                       SelectCommand,
                       SweepCommand,
                       TeacherCommand,
)
from .condense import CondenseConfig, condensation_id
from .loading import (
                       config_hash,
                       deep_merge,
                       field_docs,
                       flatten_dotted,
                       from_dict,
                       load_config,
                       nest_dotted,
                       parse_overrides,
                       read_yaml,
                       to_dict,
)
from .stages import (
                       BACKBONES,
                       BLEND_MODES,
                       COLD_WORDS,
                       COMPENSATORS,
                       DEFAULT_TEMPLATE,
                       SELECT_METHODS,
                       STUDENTS,
                       WARM_WORDS,
                       CompensateConfig,
                       EmbedConfig,
                       EvalConfig,
                       GradConfig,
                       IngestConfig,
                       SelectConfig,
                       TeacherConfig,
)
from .sweep import SWEEP_METRICS, SweepConfig, load_sweep_config, sweep_from_dict

__all__ = [n for n in dir() if not n.startswith("_")]
