"""Config validation: every shipped YAML loads, and bad input names the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from online_dt.cli import main, parse_overrides
from online_dt.config import (
    ConditioningConfig,
    ConfigError,
    OfflineRunConfig,
    OnlineRunConfig,
    RewardModelConfig,
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


def test_every_field_is_documented():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no docstring"
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann)

    walk(OfflineRunConfig)
    walk(OnlineRunConfig)
    walk(ConditioningConfig)
    walk(RewardModelConfig)


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
