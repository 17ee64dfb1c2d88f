"""Typed configuration, validated before any heavy work starts.

Every model forbids unknown keys, documents each field, and checks its ranges, so a typo in a
YAML file fails with the field's dotted path (``training.lr``) before a model is loaded. The style
follows prime-rl's pydantic configs (docstring under each field, ``Field`` constraints,
cross-field checks in ``model_validator``).

One module per component: :mod:`~online_dt.config.base` (``StrictModel``, ``ConfigError``), the
section modules (``model``, ``conditioning``, ``reward_model``, ``prompts``, ``sampling``,
``training``, ``schedule``, ``buffer``, ``loop``, ``resources``, ``dashboard``, ``offline``), the
run configs (:mod:`~online_dt.config.runs`), file loading (:mod:`~online_dt.config.loading`) and
placement plans (:mod:`~online_dt.config.placement`). This package re-exports their public names.
"""

from __future__ import annotations

from online_dt.config.base import ConfigError, StrictModel
from online_dt.config.buffer import ReplayBufferConfig
from online_dt.config.conditioning import ConditioningConfig, NormalizationConfig
from online_dt.config.dashboard import DashboardConfig
from online_dt.config.loading import (
    config_class_for,
    config_yaml,
    format_validation_error,
    load_config,
)
from online_dt.config.loop import FaultToleranceConfig, OnlineConfig
from online_dt.config.model import EMBEDDED, BootstrapConfig, ModelConfig
from online_dt.config.objective import ObjectiveConfig
from online_dt.config.offline import OfflineConfig
from online_dt.config.prompts import PromptsConfig
from online_dt.config.resources import ResourcesConfig
from online_dt.config.reward_model import RewardModelConfig
from online_dt.config.runs import OfflineRunConfig, OnlineRunConfig, RunConfig
from online_dt.config.sampling import SamplerConfig, SamplingConfig
from online_dt.config.schedule import ScheduleConfig
from online_dt.config.training import OfflineTrainingConfig, TrainingConfig

__all__ = [
    "EMBEDDED",
    "BootstrapConfig",
    "ConditioningConfig",
    "ConfigError",
    "DashboardConfig",
    "FaultToleranceConfig",
    "ModelConfig",
    "NormalizationConfig",
    "ObjectiveConfig",
    "OfflineConfig",
    "OfflineRunConfig",
    "OfflineTrainingConfig",
    "OnlineConfig",
    "OnlineRunConfig",
    "PromptsConfig",
    "ReplayBufferConfig",
    "ResourcesConfig",
    "RewardModelConfig",
    "RunConfig",
    "SamplerConfig",
    "SamplingConfig",
    "ScheduleConfig",
    "StrictModel",
    "TrainingConfig",
    "config_class_for",
    "config_yaml",
    "format_validation_error",
    "load_config",
]
