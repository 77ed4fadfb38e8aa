"""The yin-yang toy's presets, data variants, the authors' draws (experiments/toy_runs.py), and the reports of
Table 1 (toy_runs) and of the ablation (studies/toy_factors.py)."""

import json

import numpy as np
import pytest

from deepbass_jax import config as config_lib
from deepbass_jax import data
from deepbass_jax.workdir import runfolder
from experiments import toy_runs
from experiments.configs import yinyang
from studies import toy_factors


def _fields(config) -> dict:
    return json.loads(config.to_json_best_effort(sort_keys=True))


# ------------------------------------------------------------------------------------------------ presets
@pytest.mark.parametrize("row", yinyang.PRESETS)
def test_authors_fit_preset_changes_only_the_initial_fit(row):
    paper, authors = runfolder.flat_fields(_fields(yinyang.get_config(row))), runfolder.flat_fields(_fields(yinyang.get_config(
        yinyang.AUTHORS_FIT + row)))
    changed = {key for key in paper if paper[key] != authors[key]}
    assert changed == {"preset", "initial_epochs", "initial_patience"}
    assert (paper["initial_epochs"], paper["initial_patience"]) == (3000, 200)  # the paper: until it stagnates
    assert (authors["initial_epochs"], authors["initial_patience"]) == (100, 0)  # the authors' code: 2000 / 20
    config_lib.validate(yinyang.get_config(yinyang.AUTHORS_FIT + row))


def test_unknown_preset_names_the_rows_and_the_prefix():
    with pytest.raises(ValueError, match="choose one of active_semi_supervised, initial, .* The prefix authors_fit_"):
        yinyang.get_config("authors_fit_nosuch")


# ------------------------------------------------------------------------------------------ the factors
@pytest.mark.parametrize("factor", list(toy_factors.FACTORS))
@pytest.mark.parametrize("row", ["initial", "semi_supervised", "supervised_1000"])
def test_each_factor_changes_one_thing_against_the_preset(row, factor):
    spec = toy_factors.FACTORS[factor]
    preset = runfolder.flat_fields(_fields(yinyang.get_config(row)))
    config = toy_factors.factor_config(row, factor, seed=3, num_seeds=10)
    changed = {key: value for key, value in runfolder.flat_fields(_fields(config)).items() if preset[key] != value}
    overridden = {key: value for key, value in spec.overrides.items() if preset[key] != value}
    assert changed == {**overridden, "seed": 3, "data.seed": 3, "num_seeds": 10}
    assert factor == "preset" or overridden or spec.dataset is not None  # every other factor changes something
    config_lib.validate(config)
    if spec.dataset is None:
        assert toy_factors.factor_dataset(factor, toy_factors.factor_config(row, factor, seed=3)) is None
    else:
        assert not spec.overrides  # a data factor changes the data alone


def test_fixed_100_is_the_authors_fit_preset():
    config = toy_factors.factor_config("semi_supervised", "fixed_100")
    authors = yinyang.get_config(yinyang.AUTHORS_FIT + "semi_supervised")
    assert (config.initial_epochs, config.initial_patience) == (authors.initial_epochs, authors.initial_patience)


def test_data_factors_give_each_seed_its_variant():
    config = toy_factors.factor_config("initial", "test_10000", seed=2)
    sample = toy_factors.factor_dataset("test_10000", config)
    reference = data.yinyang(500, 2)
    np.testing.assert_array_equal(sample.train_images, reference.train_images)  # the same pool as the preset's
    assert sample.test_images.shape == (10000, 2) and np.bincount(sample.test_labels).tolist() == [5000, 5000]
    radians = toy_factors.factor_dataset("angle_radians", toy_factors.factor_config("initial", "angle_radians",
                                                                                    seed=2))
    assert radians.train_images.shape == (1000, 2) and not np.allclose(radians.train_images, reference.train_images)


# ------------------------------------------------------------------------------------------ data variants
def _arc_statistics(points, labels, cls, centre, sign, unit):
    offset = points[labels == cls] - np.array(centre, np.float32)
    angle = np.arctan2(sign * offset[:, 1], offset[:, 0]) / unit
    if unit == np.pi:  # see data_test: recover phi / pi in (-1/2, 3/2)
        angle = np.where(angle < -0.5, angle + 2.0, angle)
    return np.linalg.norm(offset, axis=1), angle


@pytest.mark.parametrize("constants, a, b, angle_std", [("paper", 1 / 3, 1 / 10, 1 / 3), ("authors", 0.33, 0.1, 0.33)])
@pytest.mark.parametrize("angle", ["pi", "radians"])
def test_yinyang_variants_follow_eqs_10_to_12(constants, a, b, angle_std, angle):
    rng = np.random.default_rng(0)
    points, labels = data._yinyang_sample(rng, 20000, angle=angle, constants=constants)
    for cls, centre, sign in ((0, (a, -b), 1.0), (1, (-a, b), -1.0)):
        radius, phi = _arc_statistics(points, labels, cls, centre, sign, np.pi if angle == "pi" else 1.0)
        assert radius.mean() == pytest.approx(1.0, abs=0.01) and radius.std() == pytest.approx(0.25, abs=0.01)
        assert phi.mean() == pytest.approx(0.5, abs=0.012) and phi.std() == pytest.approx(angle_std, abs=0.012)


def test_yinyang_defaults_and_test_size():
    toy, bigger = data.yinyang(100, seed=4), data.yinyang(100, seed=4, test_per_class=300)
    np.testing.assert_array_equal(toy.train_images, bigger.train_images)
    assert bigger.test_images.shape == (600, 2) and np.bincount(bigger.test_labels).tolist() == [300, 300]
    with pytest.raises(data.DataError, match="angle='degrees' is unknown"):
        data.yinyang(10, angle="degrees")
    with pytest.raises(data.DataError, match="constants='nosuch' are unknown"):
        data.yinyang(10, constants="nosuch")


# ------------------------------------------------------------------------------------- the authors' draws
def test_authors_draw_is_their_generator():
    pool, labels, test, test_labels, initial = toy_runs.authors_draw(3, per_class=4)
    again = toy_runs.authors_draw(3, per_class=4)
    for x, y in zip((pool, labels, test, test_labels, initial), again):
        np.testing.assert_array_equal(x, y)
    assert pool.shape == test.shape == (1000, 2) and pool.dtype == np.float32
    assert np.bincount(labels).tolist() == np.bincount(test_labels).tolist() == [500, 500]
    # The first 4 of each class in the authors' permuted order; a larger num_gt extends the same choice.
    for cls in (0, 1):
        np.testing.assert_array_equal(np.intersect1d(initial, np.flatnonzero(labels == cls)),
                                      np.flatnonzero(labels == cls)[:4])
    assert set(initial) <= set(toy_runs.authors_draw(3, per_class=40)[4])
    # Seed 1000 i: numpy's legacy generator, P1's radii first (x2 = 0.1 - r sin phi, blue).
    radius = 1 + 0.25 * np.random.RandomState(3000).randn(500)
    blue = np.sort(np.linalg.norm(pool[labels == 1] - np.array([-0.33, 0.1], np.float32), axis=1))
    np.testing.assert_allclose(blue, np.sort(np.abs(radius)), atol=1e-5)
    assert not np.array_equal(pool, toy_runs.authors_draw(4, per_class=4)[0])


@pytest.mark.parametrize("row", ["initial", "supervised_80", "supervised_1000"])
def test_authors_sample_makes_the_driver_label_the_authors_points(row):
    config = yinyang.get_config(row)
    config.seed = 5
    pool, labels, test, test_labels, initial = toy_runs.authors_draw(5, config.initial_per_class)
    sample = toy_runs.authors_sample(5, config)
    chosen = data.balanced_initial_labels(sample.train_labels, config.initial_per_class, config.seed, 2)
    as_set = lambda points: {tuple(p) for p in points.tolist()}  # noqa: E731
    assert as_set(sample.train_images[chosen]) == as_set(pool[initial])
    order = np.lexsort(sample.train_images.T), np.lexsort(pool.T)
    np.testing.assert_array_equal(sample.train_images[order[0]], pool[order[1]])  # the same pool, reordered
    np.testing.assert_array_equal(sample.train_labels[order[0]], labels[order[1]])
    np.testing.assert_array_equal(sample.test_images, test)


# ------------------------------------------------------------------------------------------------ reports
def _record(row, draws, run, accuracy, initial=None):
    metrics = [{"iteration": 0, "test_accuracy": accuracy if initial is None else initial}]
    return {"row": row, "draws": draws, "run": run, "seed": run, "summary": {"test_accuracy": accuracy},
            "metrics": metrics}


def test_toy_table_reports_both_draws(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    accuracies = {"seeds": [0.78, 0.80, 0.76], "authors": [0.83, 0.82, 0.84]}
    for draws, tag in (("seeds", "seed"), ("authors", "authors")):
        for run, accuracy in enumerate(accuracies[draws]):
            (runs / f"initial_{tag}{run}.json").write_text(json.dumps(_record("initial", draws, run, accuracy)))
    (runs / "initial_seed9.json").write_text(json.dumps(  # a record from before --draws: own draws
        {"row": "initial", "seed": 9, "summary": {"test_accuracy": 0.70}, "metrics": []}))
    (runs / toy_runs.INVOCATION).write_text(json.dumps({"commit": "abc", "device": "cpu", "minutes": 1,
                                                          "draws": ["authors", "seeds"], "figures": "authors"}))
    table = toy_runs.write_report(tmp_path)
    seeds = [78, 80, 76, 70]
    assert table["initial"]["runs"] == 4 and table["initial"]["mean"] == pytest.approx(np.mean(seeds))
    assert table["initial"]["std"] == pytest.approx(np.std(seeds, ddof=1))
    assert table["initial"]["authors_draws"] == {"mean": pytest.approx(83.0), "std": pytest.approx(1.0), "runs": 3}
    readme = (tmp_path / "README.md").read_text()
    assert "| initial | `yinyang.py:initial` | 83.27 | 83.00 (1.00) | 3 | -0.27 | 76.00 (4.32) | 4 | -7.27 |" in readme
    assert "the authors' draw 2, the highest initial accuracy" in readme


def test_ablation_summary_and_report(tmp_path):
    (tmp_path / "runs").mkdir()
    for factor, values in (("preset", [78.0, 80.0]), ("fixed_100", [80.0, 84.0])):
        record = {"row": "initial", "factor": factor, "seeds": [0, 1], "accuracy": values, "initial_accuracy": values,
                  "steps": [100, 300], "seconds": 1.0}
        (tmp_path / "runs" / f"initial__{factor}.json").write_text(json.dumps(record))
    table = toy_factors.write_report(tmp_path)
    entry = table["initial"]["fixed_100"]
    assert entry["mean"] == 82.0 and entry["delta"] == 3.0 and entry["std"] == pytest.approx(np.std([80, 84], ddof=1))
    assert entry["steps_median"] == 200 and list(table["initial"]) == ["preset", "fixed_100"]
    readme = (tmp_path / "README.md").read_text()
    assert ("| `fixed_100` | initial fit | fixed 100 epochs (authors' code; `authors_fit_` presets) | 82.00 (2.83) "
            "| +3.00 |") in readme
