"""The dataset registry: data.dataset names a factory that takes the typed data config."""

import pytest

from kpfast.data import DATASETS, DataConfig, create_dataset, register_dataset
from kpfast.schema import ConfigError, validate_section


def test_builtin_datasets_are_registered_and_unknown_names_are_refused_in_one_line():
    assert {"coco", "synthetic"} <= set(DATASETS)
    with pytest.raises(ConfigError) as info:
        validate_section(DataConfig, {"dataset": "crowdpos"}, "data.")
    message = str(info.value)
    assert message.startswith("data.dataset: expected one of ") and "'crowdpos'" in message and "\n" not in message


def test_a_registered_dataset_is_valid_in_the_config_and_built_from_the_typed_section():
    calls = []

    @register_dataset("test_points")
    def factory(config, split, *, train, convention, seed, protocol):
        calls.append((config.input_size, split, train, convention, seed))
        return ["sample"] * (3 if train else 1)

    try:
        config = validate_section(DataConfig, {"dataset": "test_points", "input_size": [64, 48]}, "data.")
        assert create_dataset(config, "train", train=True, convention="standard", seed=5) == ["sample"] * 3
        assert calls == [([64, 48], "train", True, "standard", 5)]
        with pytest.raises(ValueError, match="split: expected 'train' or 'val'"):
            create_dataset(config, "test", train=False)
        with pytest.raises(ValueError, match="already registered"):
            register_dataset("test_points")(factory)
    finally:
        DATASETS.pop("test_points")


def test_coco_dataset_without_root_names_the_key():
    config = validate_section(DataConfig, {"dataset": "coco"}, "data.")
    with pytest.raises(ValueError, match=r"^data\.root: required for dataset 'coco'"):
        create_dataset(config, "val", train=False)


@pytest.mark.parametrize("key,value", [("seed", 3), ("decode_reduction_margin", 1.0), ("input_size", [64, 48])])
def test_dataset_options_cannot_set_what_the_config_sets(tmp_path, key, value):
    # Keys the run's config passes to the dataset are refused in dataset_options, in one line naming
    # the key (not a TypeError about a repeated keyword argument).
    config = validate_section(DataConfig, {"dataset": "coco", "root": str(tmp_path), "dataset_options": {key: value}},
                              "data.")
    with pytest.raises(ValueError, match=rf"^data\.dataset_options: \['{key}'\] are set by the run's config .*"
                                         rf"got {key}="):
        create_dataset(config, "val", train=False)
