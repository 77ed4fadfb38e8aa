"""multi_seed: R seeds at once equal R separate runs of active.Driver, and compile once.

Tolerances: under seed_axis="vmap" the per-seed weights are batched, so XLA computes the R matrix products
(grouped convolutions for the CNN) as one operation that may sum in another order than the unbatched one;
floats then differ from the driver's in the last bits. Measured: parameters within 6e-8 on the toy and
4e-5 on the CNN, metrics (theta, accuracies, losses) within 3e-7; seed_axis="map" matched to the bit.
Discrete results (labels bought, pseudo-label sets, step counts) must be identical; the float tolerances
below are 100x looser than that round-off, and a real divergence (another key, another batch, a padded
step that is not a no-op) shows in the discrete results or moves the parameters by far more.
"""

import copy
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepbass_jax import active, checkpoint, data, models, multi_seed, train
from experiments.configs import mnist as mnist_configs
from experiments.configs import yinyang as yinyang_configs

SEEDS = (0, 1, 2)
FLOAT_METRICS = ("theta", "test_accuracy", "train_loss", "mean_pool_entropy", "ground_truth_accuracy",
                 "pseudo_label_accuracy", "pseudo_label_coverage")
EXACT_METRICS = ("iteration", "labels", "bought", "pseudo_labeled", "d_size")
METRIC_ATOL = 1e-3


def _toy_config(**overrides):
    """Step-wise DeepBASS on a small toy; early stopping ends the initial fit at a different epoch per seed."""
    config = yinyang_configs.get_config("active_semi_supervised")
    config.data.num_per_class = 60
    config.initial_epochs = 40
    config.initial_patience = 6
    config.iterations = 4
    config.budget = 12  # 8 initial + 2 acquisitions of 2 (iterations 1 and 3)
    # Pool and ground-truth inference with the same chunk shape and passes: one compilation serves both.
    config.chunk_size = config.labeled_chunk_size = 64
    config.mc_passes_pool = config.mc_passes_labeled = 10
    config.train.batch_size = 32
    for field, value in overrides.items():
        config[field] = value
    return config


def _with_seed(config, seed):
    config = copy.deepcopy(config)  # keeps field references: the toy's data.seed follows config.seed
    config.seed = seed
    return config


def _driver_run(config, workdir, dataset=None) -> dict:
    driver = active.Driver(config, workdir, dataset=dataset)
    driver.run()
    return {
        "metrics": checkpoint.read_jsonl(workdir / active.METRICS),
        "oracle_log": checkpoint.read_jsonl(workdir / active.ORACLE_LOG),
        "params": driver.state.train_state.params,
        "steps": int(driver.state.train_state.step),
        "ground_truth": driver.state.ground_truth,
        "pseudo": driver.state.pseudo,
    }


PHASES = ("pool_inference", "labeled_inference", "acquisition_and_pseudo_labels", "epoch", "metrics")


def _assert_same_run(result: dict, expected: dict, param_atol: float) -> list[float]:
    """Asserts that a multi_seed result is the driver's run; returns the float metric differences."""
    assert result["oracle_log"] == expected["oracle_log"]  # the same labels bought, in the same iterations
    assert result["steps"] == expected["steps"]
    np.testing.assert_array_equal(result["ground_truth"], expected["ground_truth"])
    np.testing.assert_array_equal(result["pseudo"], expected["pseudo"])
    assert len(result["metrics"]) == len(expected["metrics"])
    differences = []
    for line, reference in zip(result["metrics"], expected["metrics"]):
        # Only multi_seed times the phases of an iteration (all seeds together); the rest matches the driver's line.
        line = dict(line)
        if line["iteration"] > 0:
            assert set(line.pop("phase_seconds")) == set(PHASES)
        assert set(line) == set(reference)
        for key in EXACT_METRICS:
            assert line.get(key) == reference.get(key), (key, line, reference)
        for key in FLOAT_METRICS:
            if reference.get(key) is None:
                assert line.get(key) is None, key
                continue
            assert line[key] == pytest.approx(reference[key], abs=METRIC_ATOL), (key, line["iteration"])
            differences.append(abs(line[key] - reference[key]))
    leaves, expected_leaves = jax.tree_util.tree_leaves(result["params"]), jax.tree_util.tree_leaves(expected["params"])
    assert len(leaves) == len(expected_leaves)
    for leaf, expected_leaf in zip(leaves, expected_leaves):
        np.testing.assert_allclose(np.asarray(leaf), np.asarray(expected_leaf), rtol=0, atol=param_atol)
    return differences


@pytest.fixture(scope="module")
def driver_runs(tmp_path_factory):
    """The toy config run by the driver, once per seed."""
    return [_driver_run(_with_seed(_toy_config(), seed), tmp_path_factory.mktemp(f"seed_{seed}")) for seed in SEEDS]


@pytest.fixture(scope="module", params=multi_seed.SEED_AXES)
def seeds_run(request):
    """The same seeds run at once; also how often each device function was traced during the run (from empty
    caches: the compiled functions are shared between runs of one architecture)."""
    for function in multi_seed.DEVICE_FUNCTIONS.values():
        function.clear_cache()
    before = multi_seed.TRACES.copy()
    results = multi_seed.run_seeds(_toy_config(), SEEDS, seed_axis=request.param)
    return results, multi_seed.TRACES - before


def test_seeds_at_once_equal_separate_driver_runs(seeds_run, driver_runs):
    results, _ = seeds_run
    assert [r["seed"] for r in results] == list(SEEDS)
    for result, expected in zip(results, driver_runs):
        _assert_same_run(result, expected, param_atol=1e-5)
    # The run exercised plans of unequal length: early stopping differed between seeds, and so did D.
    assert len({r["initial_steps"] for r in results}) == len(SEEDS)
    assert len({r["metrics"][-1]["pseudo_labeled"] for r in results}) > 1
    assert [m["labels"] for m in results[0]["metrics"]] == [8, 10, 10, 12, 12]


def test_device_functions_compile_once_per_run(seeds_run):
    """Each per-seed function is traced once for the whole run of 4 iterations, although the labeled set,
    D and the number of training steps change between iterations. The toy gives every seed its own pool, so
    pool and ground-truth chunks (64 samples, 10 passes) have one shape: one trace serves both."""
    _, traces = seeds_run
    assert dict(traces) == {"chunk_stats": 1, "queries": 1, "pseudo_labels": 1, "train_step": 1}


def _leaves(tree):
    return [np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
            for x in jax.tree_util.tree_leaves(tree)]


@pytest.mark.parametrize("seed_axis", multi_seed.SEED_AXES)
def test_a_padded_step_is_an_exact_no_op(seed_axis):
    """Seed 1 gets a padded step (take_step False) on a full batch: its whole state stays as it was, bit for
    bit, although an Adam step would move it; seed 0 takes train.train_step's step."""
    model_config = models.default_config()
    model_config.architecture = "mlp"
    module = models.build(model_config, 2)
    apply_fn = models.make_apply(module)

    def fresh_states():
        return [active.initial_train_state(module, apply_fn, jax.random.key(seed), (2,), train.default_config())
                for seed in (0, 1)]

    images = jax.random.normal(jax.random.key(2), (40, 2))
    targets = jnp.asarray(np.arange(40) % 2, jnp.int32)
    indices = np.stack([np.arange(8, dtype=np.int32), np.arange(8, 16, dtype=np.int32)])
    weights = np.ones((2, 8), np.float32)
    expected, _ = train.train_step(fresh_states()[0], images, targets, indices[0], weights[0])
    stepped, metrics = multi_seed._seeds_train_step(
        multi_seed._stack(fresh_states()), images, jnp.stack([targets, targets]), indices, weights,
        np.array([True, False]), shared_images=True, seed_axis=seed_axis,
    )
    assert np.asarray(stepped.step).tolist() == [1, 0]
    assert np.asarray(metrics.count).tolist() == [8, 0] and float(metrics.loss[1]) == 0.0
    initial = fresh_states()
    for leaf, original in zip(_leaves(multi_seed._unstack(stepped, 1)), _leaves(initial[1])):
        np.testing.assert_array_equal(leaf, original)
    moved = False
    for leaf, reference, original in zip(_leaves(multi_seed._unstack(stepped, 0).params), _leaves(expected.params),
                                         _leaves(initial[0].params)):
        np.testing.assert_allclose(leaf, reference, rtol=0, atol=1e-6)
        moved |= not np.array_equal(leaf, original)
    assert moved


@pytest.mark.slow  # about 80 s on 2 CPU cores, mostly compiling the vmapped CNN: pytest -m slow
def test_cnn_seeds_at_once_equal_driver_runs_on_a_few_mnist_images(tmp_path, mnist_dir):
    """The paper CNN (grouped convolutions under vmap), step-wise max entropy, two seeds sharing one small
    pool passed as `dataset`. The toy tests above cover the same logic with the MLP by default."""
    full = data.load_idx_dir("mnist", mnist_dir)
    dataset = dataclasses.replace(full, train_images=full.train_images[:128], train_labels=full.train_labels[:128],
                                  test_images=full.test_images[:256], test_labels=full.test_labels[:256])
    config = mnist_configs.get_config("step_wise_max_entropy")
    config.initial_per_class = 1
    config.initial_epochs = 3
    config.iterations = 2
    config.acquire_every = 1
    config.acquire_count = 4
    config.budget = 18
    config.chunk_size = config.labeled_chunk_size = 128
    config.mc_passes_pool = config.mc_passes_labeled = 4
    seeds = (0, 1)
    results = multi_seed.run_seeds(config, seeds, dataset=dataset, seed_axis="vmap")
    for seed, result in zip(seeds, results):
        expected = _driver_run(_with_seed(config, seed), tmp_path / str(seed), dataset)
        _assert_same_run(result, expected, param_atol=1e-3)
        assert [m["labels"] for m in result["metrics"]] == [10, 14, 18]


def test_file_oracle_and_bad_arguments_are_refused_before_any_work():
    with pytest.raises(ValueError, match=r"config.oracle='file'.*needs config.oracle='simulated'"):
        multi_seed.run_seeds(_toy_config(oracle="file"), SEEDS)
    with pytest.raises(ValueError, match="seed_axis='pmap' is unknown"):
        multi_seed.run_seeds(_toy_config(), SEEDS, seed_axis="pmap")
    with pytest.raises(ValueError, match="seeds is empty"):
        multi_seed.run_seeds(_toy_config(), [])


def test_summarize_reports_mean_and_sample_std():
    results = [{"seed": s, "test_accuracy": a, "metrics": [{"labels": 80}]} for s, a in ((0, 0.8), (1, 0.9))]
    summary = multi_seed.summarize(results)
    assert summary["seeds"] == [0, 1] and summary["test_accuracy"] == [0.8, 0.9]
    assert summary["mean"] == pytest.approx(0.85) and summary["std"] == pytest.approx(np.std([0.8, 0.9], ddof=1))


def _without_timings(lines):
    return [{k: v for k, v in line.items() if k not in ("seconds", "phase_seconds")} for line in lines]


@pytest.mark.parametrize("stop_after", [-1, 0, 2])
def test_a_run_continued_from_a_snapshot_equals_an_uninterrupted_one(tmp_path, stop_after):
    """Snapshot before the initial fit (-1), after it (0) or after iteration 2, written to disk and read back
    into a fresh SeedsRun (as the next accelerator job does): the same labels, pseudo-labels, metrics and
    parameters as the uninterrupted run, bit for bit under seed_axis="map"."""
    seed_axis = "map"
    uninterrupted = multi_seed.run_seeds(_toy_config(), SEEDS, seed_axis=seed_axis)
    first = multi_seed.SeedsRun(_toy_config(), SEEDS, seed_axis=seed_axis)
    while first.iteration < stop_after:
        first.step()
    checkpoint.save(tmp_path / "pending.msgpack", first.snapshot())
    second = multi_seed.SeedsRun(_toy_config(), SEEDS, seed_axis=seed_axis,
                                 snapshot=checkpoint.load(tmp_path / "pending.msgpack"))
    assert second.iteration == stop_after
    while not second.done:
        second.step()
    for result, expected in zip(second.results(), uninterrupted):
        assert result["oracle_log"] == expected["oracle_log"]
        assert _without_timings(result["metrics"]) == _without_timings(expected["metrics"])
        assert (result["initial_steps"], result["steps"]) == (expected["initial_steps"], expected["steps"])
        np.testing.assert_array_equal(result["ground_truth"], expected["ground_truth"])
        np.testing.assert_array_equal(result["pseudo"], expected["pseudo"])
        for leaf, expected_leaf in zip(_leaves(result["params"]), _leaves(expected["params"])):
            np.testing.assert_array_equal(leaf, expected_leaf)


def test_a_snapshot_of_another_run_is_refused():
    run = multi_seed.SeedsRun(_toy_config(), SEEDS, seed_axis="map")
    snapshot = run.snapshot()
    with pytest.raises(ValueError, match=r"another run \(different seeds\)"):
        multi_seed.SeedsRun(_toy_config(), (0, 1, 3), seed_axis="map", snapshot=snapshot)
    with pytest.raises(ValueError, match=r"another run \(different config\)"):
        multi_seed.SeedsRun(_toy_config(iterations=5), SEEDS, seed_axis="map", snapshot=snapshot)
