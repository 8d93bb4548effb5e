import pytest
import yaml

from kpfast.engine.config import (
    CONFIG_DIR,
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_override,
)


def test_defaults_round_trip():
    cfg = config_from_dict({})
    assert isinstance(cfg, Config)
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg


def test_unknown_key_names_key_and_suggests_nearest():
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.epoch'.*did you mean 'epochs'"):
        config_from_dict({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"unknown config key 'optimm'.*did you mean 'optim'"):
        config_from_dict({"optimm": {}})


def test_wrong_type_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"train\.epochs: expected int, got str"):
        config_from_dict({"train": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match=r"train\.ema: expected bool"):
        config_from_dict({"train": {"ema": 1}})
    with pytest.raises(ConfigError, match=r"optim\.lr: expected float, got bool"):
        config_from_dict({"optim": {"lr": True}})


def test_range_and_choice_errors():
    with pytest.raises(ConfigError, match=r"optim\.lr: must be > 0"):
        config_from_dict({"optim": {"lr": 0.0}})
    with pytest.raises(ConfigError, match=r"train\.batch_size: must be >= 1, got 0"):
        config_from_dict({"train": {"batch_size": 0}})
    with pytest.raises(ConfigError, match=r"loss\.kind: expected one of .*did you mean 'focal'"):
        config_from_dict({"loss": {"kind": "focall"}})
    with pytest.raises(ConfigError, match=r"data\.input_size"):
        config_from_dict({"data": {"input_size": [128]}})
    with pytest.raises(ConfigError, match=r"data\.detections: required"):
        config_from_dict({"data": {"use_gt_boxes": False}})


def test_int_accepted_for_float_and_optional_none():
    cfg = config_from_dict({"optim": {"lr": 1, "grad_clip": None}})
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.grad_clip is None


def test_overrides_parse_yaml_values_and_reject_typos():
    assert parse_override("train.epochs=5") == (["train", "epochs"], 5)
    assert parse_override("model.overrides={width: 16}") == (["model", "overrides"], {"width": 16})
    data = apply_overrides({}, ["train.epochs=5", "optim.betas=[0.8, 0.9]", "model.overrides.stem=8"])
    cfg = config_from_dict(data)
    assert cfg.train.epochs == 5 and cfg.optim.betas == [0.8, 0.9] and cfg.model.overrides == {"stem": 8}
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.learning_rat'.*valid keys|did you mean"):
        apply_overrides({}, ["train.learning_rat=1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("train.epochs")


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert cfg.train.epochs >= 1
    # Saved YAML reloads to the same config.
    assert config_from_dict(yaml.safe_load(yaml.safe_dump(config_to_dict(cfg)))) == cfg


def test_missing_config_suggests_shipped_name():
    with pytest.raises(ConfigError, match="not found"):
        load_config("defualt_nonexistent_config")
