"""studies/augmentation_variants.py (the augmentation study) without training: the variant table's configs, the
prototype warp, the resume rule and the report."""

import json

import jax
import numpy as np
import pytest

from deepbass_jax import augment, config as config_lib
from deepbass_jax.workdir import checkpoint, runfolder
from studies import augmentation_variants as study
from experiments.configs import mnist


def _fields(config) -> dict:
    return runfolder.flat_fields(json.loads(config.to_json_best_effort(sort_keys=True)))


@pytest.mark.parametrize("name", list(study.VARIANTS))
def test_each_variant_is_its_preset_with_its_overrides(name):
    variant = study.VARIANTS[name]
    assert variant.preset in ("augmented_supervised_50", "supervised_50")
    preset = _fields(mnist.get_config(variant.preset))
    config = study.variant_config(name, seed=2, num_seeds=3, data_dir="/data/mnist")
    config_lib.validate(config)
    changed = {key: value for key, value in _fields(config).items() if preset[key] != value}
    overridden = {key: value for key, value in variant.overrides.items() if preset[key] != value}
    assert changed == {**overridden, "seed": 2, "num_seeds": 3, "labels_export_every": -1,
                       "data.data_dir": "/data/mnist"}
    assert name in ("augmented", "plain") or overridden or variant.prototype is not None
    # paper scale: the whole pool, 50 balanced labels, the initial fit only, a fixed number of epochs
    assert (config.pool_size, config.initial_per_class, config.iterations, config.initial_patience) == (0, 5, 0, 0)
    assert (config.data.name, config.test_size, config.active, config.semi_supervised) == ("mnist", 0, False, False)


def test_the_study_covers_the_brief():
    v = study.VARIANTS
    # Each variant's default seeds are among those of its preset as it is, so every paired delta covers them all.
    for name, variant in v.items():
        base = "augmented" if variant.preset == study.AUG else "plain"
        assert set(study.seed_list(name)) <= set(study.seed_list(base)), name
    for epochs in (300, 1000):
        for name in (f"augmented_{epochs}_epochs", f"plain_{epochs}_epochs"):
            assert study.variant_config(name).initial_epochs == epochs
    assert study.variant_config("augmented").train.augment_degrees == 10.0
    assert study.variant_config("augmented").train.augment_scale == 0.05
    assert study.variant_config("plain").train.augment_degrees == 0.0
    assert study.variant_config("rotate_20").train.augment_degrees == 20.0
    assert study.variant_config("scale_10").train.augment_scale == 0.1
    assert study.variant_config("upsample_100").train.upsample == 100
    assert set(study.DEFAULT_VARIANTS) == {n for n, variant in v.items() if variant.prototype is None}


def test_main_command_reproduces_the_config_and_prototypes_have_none():
    command = study.main_command("rotate_15_scale_10", [0, 1, 2], "../shared/data/mnist")
    assert command.startswith("python -m experiments.main --config=experiments/configs/mnist.py:"
                              "augmented_supervised_50 ")
    for part in ("--config.train.augment_degrees=15.0", "--config.train.augment_scale=0.1", "--config.seed=0",
                 "--config.num_seeds=3", "--config.labels_export_every=-1",
                 "--config.data.data_dir=../shared/data/mnist"):
        assert part in command.split()
    assert study.main_command("keras_authors", [0], None) is None


def test_seeds_must_be_consecutive():
    assert study.seed_list("augmented") == [0, 1, 2, 3, 4]
    assert study.seed_list("rotate_20") == [0, 1, 2]
    assert study.seed_list("rotate_20", [4, 3]) == [3, 4]
    with pytest.raises(ValueError, match="consecutive"):
        study.seed_list("rotate_20", [0, 2])


def test_prototype_shift_with_nearest_sampling_is_a_roll():
    image = np.zeros((1, 28, 28, 1), np.float32)
    image[0, 10:14, 9:12, 0] = np.arange(12, dtype=np.float32).reshape(4, 3) + 1
    prototype = study.Prototype(shift=0.1, order=0)
    key = jax.random.key(3)
    out = np.asarray(study.prototype_affine(image, key, 0.0, 0.0, prototype=prototype))
    shift = np.asarray(jax.random.uniform(jax.random.split(key, 3)[1], (1, 2), minval=-0.1, maxval=0.1))[0] * 28
    dy, dx = np.round(shift).astype(int)
    assert (dy, dx) != (0, 0)
    np.testing.assert_array_equal(out, np.roll(image, (dy, dx), axis=(1, 2)))


def test_prototype_without_extras_is_the_packages_warp():
    images = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1))
    key = jax.random.key(1)
    ours = study.prototype_affine(images, key, 10.0, 0.05, prototype=study.Prototype())
    degrees, sh, sw = augment.random_parameters(jax.random.split(key, 3)[0], 4, 10.0, 0.05)
    np.testing.assert_allclose(ours, augment.transform(images, degrees, sh, sw), atol=1e-6)


def test_the_packages_shift_warps_as_the_prototypes_did():
    """train.augment_shift (augment.transform's shifts) moves images as the shift prototype did: given the same
    parameters, the same images; and a prototype refuses a package shift on top of its own."""
    images = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1))
    key = jax.random.key(1)
    prototype = study.prototype_affine(images, key, 10.0, 0.05, prototype=study.Prototype(shift=0.1))
    parameter_key, shift_key, _ = jax.random.split(key, 3)
    shifts = jax.random.uniform(shift_key, (4, 2), minval=-0.1, maxval=0.1) * 28
    package = augment.transform(images, *augment.random_parameters(parameter_key, 4, 10.0, 0.05), shifts[:, 0],
                                shifts[:, 1])
    np.testing.assert_allclose(prototype, package, atol=1e-5)
    with pytest.raises(ValueError, match="its own shift"):
        study.prototype_affine(images, key, 10.0, 0.05, 0.1, prototype=study.Prototype(shift=0.1))


def test_prototype_channel_shift_stays_in_the_images_range():
    images = jax.random.uniform(jax.random.key(0), (8, 28, 28, 1))
    out = np.asarray(study.prototype_affine(images, jax.random.key(2), 0.0, 0.0,
                                            prototype=study.Prototype(channel_shift=0.3)))
    inside = np.asarray(images)
    assert (out.min(axis=(1, 2, 3)) >= inside.min(axis=(1, 2, 3)) - 1e-6).all()
    assert (out.max(axis=(1, 2, 3)) <= inside.max(axis=(1, 2, 3)) + 1e-6).all()
    assert not np.allclose(out, inside)


def test_prototypes_are_named_warps_that_their_variants_select():
    """No variant changes the package's warp: a prototype variant's config names its registered warp, which is
    `prototype_affine` with that prototype; the others keep the package's `random_affine`."""
    images = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1))
    key = jax.random.key(1)
    for name, variant in study.VARIANTS.items():
        config = study.variant_config(name)
        warp = augment.WARPS[config.train.augment_warp]
        if variant.prototype is None:
            assert warp is augment.random_affine, name
            continue
        assert study.PROTOTYPES[config.train.augment_warp] == variant.prototype, name
        np.testing.assert_array_equal(
            warp(images, key, config.train.augment_degrees, config.train.augment_scale, 0.0),
            study.prototype_affine(images, key, config.train.augment_degrees, config.train.augment_scale,
                                   prototype=variant.prototype))
    assert augment.WARPS["affine"] is augment.random_affine
    assert {study.VARIANTS[name].prototype for name in ("keras_authors", "keras_authors_300_epochs")} == {study.KERAS}


def test_resume_skips_finished_variants_and_the_report_reads_study_json(tmp_path):
    entry = {"variant": "augmented", "preset": "augmented_supervised_50", "what": "the preset", "overrides": {},
             "prototype": None, "seeds": [0, 1], "test_accuracy": [80.0, 82.0], "mean": 81.0, "std": 1.41,
             "seconds": 12.0, "commit": "abc", "device": "CPU", "command": "python -m experiments.main ...",
             "study_command": "python -m studies.augmentation_study --variants=augmented --seeds=0,1"}
    other = {**entry, "variant": "rotate_20", "what": "rotation < 20 deg",
             "overrides": {"train.augment_degrees": 20.0}, "test_accuracy": [83.0, 84.0], "mean": 83.5, "std": 0.71}
    checkpoint.write_json(tmp_path / "study.json", {"variants": {"augmented": entry, "rotate_20": other},
                                                    "invocations": []})
    loaded = study.load_study(tmp_path)
    assert study.pending({"augmented": [0, 1], "plain": [0, 1], "rotate_20": [1]}, loaded) == ["plain"]
    assert study.pending({"augmented": [0, 1, 2]}, loaded) == ["augmented"]  # more seeds: run again
    text = study.write_report(tmp_path)
    assert "about 85" in text and "| `rotate_20` |" in text and "+2.50" in text  # paired: (3 + 2) / 2
    assert "s0: 80.00, s1: 82.00" in text and "81.00 (1.41)" in text
    assert "Closest to the paper: `rotate_20`, 83.50 (0.71) over 2 seeds, 1.50 points below about 85 %" in text
    assert (tmp_path / "README.md").read_text() == text
