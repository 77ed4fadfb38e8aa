"""The config's two stages of validation: the config alone (and the number of processes) before any data is read,
then the config with each seed's data and pool before any work."""

import dataclasses

import numpy as np
import pytest

from deepbass_jax import algorithm, config as config_lib, data
from tests.helpers import toy_config


def _seeds(config, dataset):
    """What the driver hands `validate_run`: per seed its config, data set and pool indices."""
    return [(c, dataset, algorithm.split_pool(c, dataset)[2]) for c in config_lib.seed_configs(config)]


def _toy_data(num_per_class=20):
    return data.yinyang(num_per_class, seed=0)


def test_defaults_and_presets_pass_both_stages():
    config = toy_config()
    config_lib.validate(config)
    config_lib.validate_run(config, _seeds(config, _toy_data(100)))


@pytest.mark.parametrize("field, value, message", [
    ("mc_passes_pool", 0, r"config\.mc_passes_pool=0 is invalid \(T', the MC-dropout passes on the pool\)"),
    ("policy", "nope", r"config\.policy='nope' is invalid: it must be one of"),
    ("train.augment_warp", "nope",
     r"config\.train\.augment_warp='nope' is invalid: it must be one of \[.*'affine'.*\]"),
])
def test_stage_one_names_the_field_and_the_remedy(field, value, message):
    config = toy_config(**{field: value})
    with pytest.raises(config_lib.ConfigError, match=message) as error:
        config_lib.validate(config)
    assert f"set --config.{field} to such a value" in str(error.value)


def test_stage_one_unknown_field_lists_the_fields_there_are():
    config = toy_config()
    config.train.nope = 1
    with pytest.raises(config_lib.ConfigError, match=r"config\.train\.nope: unknown config field 'nope'"):
        config_lib.validate(config)


def test_stage_one_checks_what_several_processes_cannot_do_only_for_several():
    config = toy_config(num_seeds=2)
    config_lib.validate(config, process_count=1)
    with pytest.raises(config_lib.ConfigError, match=r"config\.num_seeds must be 1 .* when 2 processes run"):
        config_lib.validate(config, process_count=2)
    config = toy_config(**{"train.batch_size": 63})
    with pytest.raises(config_lib.ConfigError, match=r"train\.batch_size must be a multiple of the 2 processes"):
        config_lib.validate(config, process_count=2)


def test_stage_two_refuses_a_pool_larger_than_the_training_set():
    config = toy_config(pool_size=1000)
    with pytest.raises(ValueError, match=r"config\.val_size=0 \+ config\.pool_size=1000 exceed the 40 training"):
        config_lib.validate_run(config, _seeds(config, _toy_data()))


def test_stage_two_refuses_a_budget_beyond_the_pool_and_initial_labels_beyond_a_class():
    config = toy_config(budget=41)
    with pytest.raises(config_lib.ConfigError, match=r"config\.budget=41 exceeds the pool of 40 samples"):
        config_lib.validate_run(config, _seeds(config, _toy_data()))
    config = toy_config(initial_per_class=21, budget=42, active=False)
    with pytest.raises(config_lib.ConfigError, match=r"initial_per_class=21 asks for 42 initial labels"):
        config_lib.validate_run(config, _seeds(config, _toy_data()))
    skewed = dataclasses.replace(_toy_data(), train_labels=np.where(np.arange(40) < 38, 0, 1).astype(np.int32))
    config = toy_config(initial_per_class=3, budget=10)
    with pytest.raises(data.DataError, match=r"class 1 has only 2 samples, fewer than the 3 initial labels"):
        config_lib.validate_run(config, _seeds(config, skewed))


def test_stage_two_refuses_augmentation_of_vectors_and_unlabeled_data_with_a_simulated_oracle():
    config = toy_config(**{"train.augment_degrees": 10.0})
    with pytest.raises(config_lib.ConfigError, match=r"warp images \[N, H, W, C\], but 'yinyang' has samples of "
                                                     r"shape \(2,\); set them to 0"):
        config_lib.validate_run(config, _seeds(config, _toy_data()))
    unlabeled = dataclasses.replace(_toy_data(), train_labels=None)
    with pytest.raises(ValueError, match=r"has no labels: use --config\.oracle=file"):
        config_lib.validate_run(toy_config(), _seeds(toy_config(), unlabeled))
