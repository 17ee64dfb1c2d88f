"""Config validation: every shipped YAML loads, and bad input names the field."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field

from online_dt.arguments import parse_overrides
from online_dt.cli import main
from online_dt.config import (
    ConditioningConfig,
    ConfigError,
    DashboardConfig,
    FaultToleranceConfig,
    NormalizationConfig,
    OfflineRunConfig,
    OnlineConfig,
    OnlineRunConfig,
    ResourcesConfig,
    RewardModelConfig,
    SamplerConfig,
    StrictModel,
    config_class_for,
    load_config,
)

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_configs_exist():
    assert CONFIGS, "no shipped configs found"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    """Online configs (those with an ``online`` section) validate as OnlineRunConfig, the
    offline demo's as OfflineRunConfig."""
    online = "online" in yaml.safe_load(path.read_text())
    cls = config_class_for(path)
    assert cls is (OnlineRunConfig if online else OfflineRunConfig)
    cfg = load_config(path, cls)
    # training.steps is the offline demo's; an online config has no such field
    assert hasattr(cfg.training, "steps") is (not online)


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("training: {lr: -1}", "training.lr"),
        ("training: {lrr: 0.1}", "training.lrr: unknown key"),
        ("sampling: {top_p: 1.5}", "sampling.top_p"),
        ("sampling: {max_new_tokens: many}", "sampling.max_new_tokens"),
        ("conditioning: {mode: vector}", "conditioning.mode"),
        ("conditioning: {num_reward_tokens: 3, bin_edges: [0.5]}", "bin_edges needs"),
        ("conditioning: {num_reward_tokens: 3, bin_edges: [0.5, 0.1]}", "strictly increasing"),
        ("reward_model: {kind: custom}", "class_path is required"),
        ("reward_model: {kind: custom, class_path: nocolon}", "package.module:ClassName"),
        ("reward_model: {kind: hf_classifier}", "model_name_or_path is required"),
        ("prompts: {source: file}", "path is required"),
        ("bootstrap: {n_embd: 100, n_head: 3}", "divisible"),
    ],
)
def test_invalid_config_names_the_field(tmp_path, text, field):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), OfflineRunConfig)
    assert field in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "online: {iterations: 1}\ntraining: {steps: 5}",
            "training.steps is the offline demo's step count and an online run does not read it;"
            " set online.train_steps_per_iteration",
        ),
        ("online: {iterations: 1}\noffline: {run_dir: x}", "offline: this section is the offline"),
    ],
)
def test_online_config_refuses_what_an_online_run_ignores(tmp_path, text, message):
    path = write(tmp_path, text)
    assert config_class_for(path) is OnlineRunConfig
    with pytest.raises(ConfigError) as err:
        load_config(path, OnlineRunConfig)
    assert message in str(err.value)
    # the offline demo keeps its step count
    cfg = load_config(write(tmp_path, "training: {steps: 5}"), OfflineRunConfig)
    assert cfg.training.steps == 5


def test_missing_and_non_mapping_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", OfflineRunConfig)
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"), OfflineRunConfig)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "a: [1,\n"), OfflineRunConfig)


def model_types(annotation: Any) -> Iterator[type[BaseModel]]:
    """Every pydantic model class inside a field's annotation: the annotation itself, or one
    nested in ``Optional``/unions, ``list``/``tuple``/``set``, ``dict`` values (or keys),
    ``Annotated`` and the like."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from model_types(arg)


def reachable_models(*roots: type[BaseModel]) -> set[type[BaseModel]]:
    """The ``roots`` and every model class reachable from them through field annotations,
    recursively."""
    seen: set[type[BaseModel]] = set()
    todo = list(roots)
    while todo:
        model = todo.pop()
        if model not in seen:
            seen.add(model)
            for field in model.model_fields.values():
                todo.extend(model_types(field.annotation))
    return seen


def undocumented_fields(*roots: type[BaseModel]) -> list[str]:
    """``Model.field`` of every field without a description (a field docstring read by
    ``use_attribute_docstrings``, or ``Field(description=...)``; blank counts as none) in
    every model reachable from ``roots``, sorted."""
    return sorted(
        f"{model.__name__}.{name}"
        for model in reachable_models(*roots)
        for name, field in model.model_fields.items()
        if not (field.description or "").strip()
    )


def test_the_documentation_walker_finds_undocumented_fields():
    """Negative control: the walker reports undocumented fields at the top, in nested models
    and in models wrapped in Optional, list and dict, and accepts documented ones."""

    class Leaf(StrictModel):
        documented: int = 0
        """Has a docstring."""

        bare: int = 0

    class InList(StrictModel):
        bare_in_list: int = 0

    class InDict(StrictModel):
        bare_in_dict: int = 0

    class Described(StrictModel):
        by_field: int = Field(0, description="Documented by Field(description=...).")
        blank: int = Field(0, description="   ")

    class Top(StrictModel):
        leaf: Leaf | None = None
        """An optional nested model."""

        items: list[InList] = Field(default_factory=list)
        """A list of models."""

        table: dict[str, InDict] = Field(default_factory=dict)
        """A dict of models."""

        described: Described = Field(default_factory=Described)
        """A model documented with Field descriptions."""

        top_bare: str = ""

    assert undocumented_fields(Top) == [
        "Described.blank",
        "InDict.bare_in_dict",
        "InList.bare_in_list",
        "Leaf.bare",
        "Top.top_bare",
    ]
    assert reachable_models(Top) == {Top, Leaf, InList, InDict, Described}


def test_every_field_is_documented():
    """Every field of every section of both run configs, nested models included, has a
    docstring (or a Field description)."""
    reachable = reachable_models(OfflineRunConfig) | reachable_models(OnlineRunConfig)
    # the walk reaches the online-only sections and the nested ones, not only the top level
    for model in (OnlineConfig, ResourcesConfig, FaultToleranceConfig, DashboardConfig):
        assert model in reachable
    for model in (ConditioningConfig, NormalizationConfig, RewardModelConfig, SamplerConfig):
        assert model in reachable
    missing = undocumented_fields(OfflineRunConfig, OnlineRunConfig)
    assert not missing, f"fields without a docstring: {missing}"


def test_overrides_parse_and_merge(tmp_path):
    overrides = parse_overrides(["training.steps=7", "conditioning.mode=token", "x.y=[1, 2]"])
    assert overrides == {
        "training": {"steps": 7},
        "conditioning": {"mode": "token"},
        "x": {"y": [1, 2]},
    }
    cfg = load_config(
        write(tmp_path, "training: {lr: 0.5}"),
        OfflineRunConfig,
        overrides={"training": {"steps": 7}},
    )
    assert (cfg.training.lr, cfg.training.steps) == (0.5, 7)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["novalue"])


def test_cli_rejects_bad_config_before_work(tmp_path, capsys):
    code = main(["validate", "--config", str(write(tmp_path, "training: {lr: 0}"))])
    assert code == 2
    assert "training.lr" in capsys.readouterr().err
    assert main(["validate", "--config", str(CONFIGS[0])]) == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("reward_model: {kind: vader, batch_size: 8}", "kind 'vader' does not read batch_size"),
        (
            "reward_model: {kind: custom, class_path: 'a.b:C', label: 0}",
            "does not read label .used by hf_classifier.",
        ),
        ("reward_model: {kind: hf_classifier, model_name_or_path: m, kwargs: {a: 1}}", "kwargs"),
        ("sampler: {weight_sync: nccl}", "nccl is not wired into the learner"),
        ("online: {mode: async, max_policy_lag: 2}", "max_policy_lag: 2 is not implemented"),
        (
            "buffer: {importance_weighting: true}\nsampling: {temperature: 0.7}",
            "importance_weighting needs sampling.temperature: 1",
        ),
        (
            "buffer: {importance_weighting: true}\nsampling: {top_p: 0.9}",
            "importance_weighting needs sampling.temperature: 1 and sampling.top_p: 1",
        ),
        (
            "sampler: {base_logprobs: true}\nonline: {kl_samples: 0}",
            "sampler.base_logprobs: nothing reads the base model's log-probabilities",
        ),
        (
            "conditioning: {normalization: {kind: quantile, fit_count: 10}}",
            "fit_count .10. must be >= min_count .64.",
        ),
    ],
)
def test_run_config_refuses_options_a_run_would_ignore(tmp_path, text, message):
    """A field the run would not read (another reward-model kind's, an unwired weight-sync
    backend, a policy lag the loop cannot keep) fails at load, naming it."""
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), OnlineRunConfig)


def test_reward_model_fields_of_its_own_kind_are_accepted(tmp_path):
    cfg = load_config(
        write(
            tmp_path, "reward_model: {kind: hf_classifier, model_name_or_path: m, batch_size: 8}"
        ),
        OnlineRunConfig,
    )
    assert cfg.reward_model.batch_size == 8
    assert load_config(write(tmp_path, "online: {max_policy_lag: 1}"), OnlineRunConfig)


def test_reward_timeout_is_positive_seconds_or_null(tmp_path):
    assert FaultToleranceConfig().reward_timeout_s == 300.0
    cfg = load_config(
        write(tmp_path, "fault_tolerance: {reward_timeout_s: 1.5}"),
        OnlineRunConfig,
        overrides=parse_overrides(["fault_tolerance.reward_timeout_s=null"]),
    )
    assert cfg.fault_tolerance.reward_timeout_s is None  # no limit
    for bad in ("0", "-2", "soon"):
        with pytest.raises(ConfigError, match=r"fault_tolerance\.reward_timeout_s"):
            load_config(
                write(tmp_path, f"fault_tolerance: {{reward_timeout_s: {bad}}}"), OnlineRunConfig
            )
