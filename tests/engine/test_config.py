from pathlib import Path

import pytest
import yaml

from kpfast.engine.config import (
    CONFIG_DIR,
    config_description,
    list_configs,
    resolve_config_path,
    shipped_config_names,
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
    data = apply_overrides({}, ["train.epochs=5", "optim.betas=[0.8, 0.9]", "model.overrides.stem_channels=8"])
    cfg = config_from_dict(data)
    assert cfg.train.epochs == 5 and cfg.optim.betas == [0.8, 0.9] and cfg.model.overrides == {"stem_channels": 8}
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


def test_missing_config_lists_shipped_names_in_one_line():
    with pytest.raises(ConfigError) as info:
        load_config("defualt")
    message = str(info.value)
    assert "\n" not in message and "defualt" in message
    assert "did you mean 'default'" in message
    for name in shipped_config_names():
        assert name in message


def test_configs_ship_inside_the_package():
    import kpfast

    assert CONFIG_DIR == Path(kpfast.__file__).resolve().parent / "configs"
    assert {"default", "coco_litehrnet18_256x192", "coco_improved"} <= set(shipped_config_names())


def test_config_resolves_by_name_with_or_without_suffix_and_a_path_wins(tmp_path, monkeypatch):
    assert resolve_config_path("coco_litehrnet18_256x192") == CONFIG_DIR / "coco_litehrnet18_256x192.yaml"
    assert resolve_config_path("default.yaml") == CONFIG_DIR / "default.yaml"
    # A user's file named like a shipped config wins over the shipped one.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default.yaml").write_text("train:\n  epochs: 3\n")
    assert resolve_config_path("default.yaml") == Path("default.yaml")
    assert load_config("default.yaml").train.epochs == 3
    assert load_config("default").train.epochs == load_config(CONFIG_DIR / "default.yaml").train.epochs != 3
    # A path to a missing file is not silently replaced by a shipped config of that name.
    with pytest.raises(ConfigError, match="no such file"):
        resolve_config_path("elsewhere/default.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        resolve_config_path(tmp_path)


def test_list_configs_gives_one_line_description_from_the_leading_comment(tmp_path):
    entries = dict(list_configs())
    assert set(entries) == set(shipped_config_names())
    assert entries["coco_litehrnet18_256x192"].startswith("Lite-HRNet-18 on COCO keypoints")
    assert all(text and "\n" not in text for text in entries.values())
    sample = tmp_path / "x.yaml"
    sample.write_text("# First sentence here. Second one\n# continues.\n#   python -m example\nmodel: {}\n")
    assert config_description(sample) == "First sentence here."


def test_bad_yaml_file_is_a_config_error_naming_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad)


# One case per rule: (overrides, the key the error must name, a fragment of the message).
INVALID = [
    (["eval.blur_kernel=4"], "eval.blur_kernel", "must be odd"),
    (["eval.blur_kernel=33"], "eval.blur_kernel", "<= 31"),
    (["eval.blur_kernel=0"], "eval.blur_kernel", ">= 1"),
    (["train.seed=-1"], "train.seed", ">= 0"),
    (["train.seed=4294967296"], "train.seed", "<= 4294967295"),
    (["data.synthetic_seed=-3"], "data.synthetic_seed", ">= 0"),
    (["train.device=tpu"], "train.device", "auto, cpu, cuda or cuda:N"),
    (["train.device=cuda:x"], "train.device", "cuda:N"),
    (["train.ops_backend=gpu"], "train.ops_backend", "expected one of"),
    (["train.run_name=../../x"], "train.run_name", "separators"),
    (["train.run_name=/abs"], "train.run_name", "separators"),
    (["train.run_name=.."], "train.run_name", "leave the output directory"),
    (["train.run_name=''"], "train.run_name", "non-empty"),
    (["train.output_dir=''"], "train.output_dir", "must not be empty"),
    (["data.val_split=../x"], "data.val_split", "split name"),
    (["model.name=litehrnet_81"], "model.name", "did you mean 'litehrnet_18'"),
    (["model.overrides={stem: 8}"], "model.overrides", "unknown option"),
    (["model.overrides={num_branches: 9}"], "model.overrides", "does not build"),
    (["data.input_size=[130, 96]"], "data.input_size", "multiple of"),
    (["data.augmentation=sometimes"], "data.augmentation", ""),
    (["loss.ohkm_topk=18"], "loss.ohkm_topk", "<= model.num_keypoints"),
    (["optim.betas=[true, 0.9]"], "optim.betas", "two floats"),
    (["schedule.milestones=[0, 5]"], "schedule.milestones", "increasing positive"),
    (["train.ema_decay=1.5"], "train.ema_decay", "<= 1.0"),
    (["train.precision=fp8"], "train.precision", "expected one of"),
]


@pytest.mark.parametrize("overrides,key,fragment", INVALID, ids=[case[0][0] for case in INVALID])
def test_every_invalid_value_is_rejected_at_load_naming_the_key(overrides, key, fragment):
    with pytest.raises(ConfigError) as info:
        load_config("default", overrides)
    message = str(info.value)
    assert message.startswith(key) and fragment in message and "\n" not in message


def test_blur_kernel_rule_matches_decode_heatmaps():
    """Every blur kernel the config accepts is one decode_heatmaps accepts, and vice versa."""
    import torch

    from kpfast.ops import decode_heatmaps

    maps = torch.rand(1, 1, 8, 8)
    for kernel in range(0, 36):
        try:
            load_config("default", [f"eval.blur_kernel={kernel}"])
            config_ok = True
        except ConfigError:
            config_ok = False
        try:
            decode_heatmaps(maps, method="dark", blur_kernel=kernel, backend="torch")
            op_ok = True
        except (ValueError, TypeError):
            op_ok = False
        assert config_ok == op_ok, kernel


def test_validation_does_not_touch_the_global_rng():
    import torch

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    load_config("coco_litehrnet18_256x192")
    assert torch.equal(torch.rand(3), expected)


def test_resume_keys_are_the_fields_marked_must_match_in_the_schema():
    from kpfast.engine.config import RESUME_KEYS, MUST_MATCH, Config

    assert set(RESUME_KEYS) == {
        "model.name", "model.num_keypoints", "model.visibility_head", "model.overrides",
        "optim.name", "optim.betas", "schedule.name", "train.ema", "train.precision", "data.input_size",
    }
    for dotted in RESUME_KEYS:  # each key is a real field carrying the marker
        section, name = dotted.split(".")
        info = Config.model_fields[section].annotation.model_fields[name]
        assert info.json_schema_extra == MUST_MATCH
    assert "train.epochs" not in RESUME_KEYS and "eval.decoder" not in RESUME_KEYS


def test_check_resume_compatible_refuses_a_changed_marked_key_only():
    from kpfast.engine.checkpointer import CheckpointError, check_resume_compatible

    stored = config_from_dict({})
    check_resume_compatible(config_to_dict(stored), config_from_dict({"train": {"epochs": 99}}))
    with pytest.raises(CheckpointError, match=r"schedule\.name \('cosine' in the checkpoint, 'step' requested\)"):
        check_resume_compatible(config_to_dict(stored), config_from_dict({"schedule": {"name": "step"}}))


def test_schedule_name_is_checked_against_the_registry():
    from kpfast.engine.optim import SCHEDULES

    assert {"constant", "cosine", "cosine_restarts", "step", "multistep"} <= set(SCHEDULES)
    with pytest.raises(ConfigError, match=r"^schedule\.name: expected one of .*'cosine'.*did you mean 'cosine'"):
        config_from_dict({"schedule": {"name": "cosin"}})


def test_pydantic_errors_become_one_line_naming_key_expected_and_actual():
    cases = [
        ({"data": {"augmentation": 3}}, r"^data\.augmentation: expected a mapping or str, got int 3$"),
        ({"train": 5}, r"^train: expected a mapping, got int 5$"),
        ({"model": {"overrides": [1]}}, r"^model\.overrides: expected a mapping, got list \[1\]$"),
        ({"loss": {"alpha": -1}}, r"^loss\.alpha: must be >= 0\.0, got -1$"),
        ({"optim": {"lr": "fast"}}, r"^optim\.lr: expected float, got str 'fast'$"),
        ({"data": {"dataset": "cocoo"}}, r"^data\.dataset: expected one of \['coco', 'synthetic'\].*did you mean 'coco'"),
        ({"loss": {"ohkm_topk": 20}}, r"^loss\.ohkm_topk: must be <= model\.num_keypoints \(17\), got 20$"),
    ]
    for data, pattern in cases:
        with pytest.raises(ConfigError) as info:
            config_from_dict(data)
        assert "\n" not in str(info.value)
        assert __import__("re").search(pattern, str(info.value)), str(info.value)
    # YAML 1.1 reads 1e-3 as text; it is the number the user meant.
    assert config_from_dict({"optim": {"lr": "1e-3"}}).optim.lr == 1e-3
