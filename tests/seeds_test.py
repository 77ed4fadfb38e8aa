"""The seed axis: R seeds run at once by the driver (config.num_seeds) equal R separate runs, each in its own
folder, and compile once.

Tolerances: under seed_axis="vmap" the per-seed weights are batched, so XLA may compute the R matrix products
(grouped convolutions for the CNN) in another summation order than one run's; floats then differ in the last
bits. seed_axis="map" keeps one run's shapes and matches to the bit. Discrete results (labels bought,
pseudo-label sets, step counts) must be identical either way; the float tolerances are far looser than
round-off, and a real divergence (another key, another batch, a padded step that is not a no-op) shows in the
discrete results or moves the parameters by far more.
"""

import copy
import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from deepbass_jax import algorithm, config as config_lib, data, driver as driver_lib, models, train
from deepbass_jax.workdir import checkpoint, runfolder
from experiments.configs import mnist as mnist_configs
from tests.compilations import count_compilations
from tests.helpers import toy_config

FLOAT_METRICS = ("theta", "test_accuracy", "train_loss", "mean_pool_entropy", "ground_truth_accuracy",
                 "pseudo_label_accuracy", "pseudo_label_coverage")
EXACT_METRICS = ("iteration", "labels", "bought", "pseudo_labeled", "d_size")
TIMINGS = ("seconds", "phase_seconds")


# Step-wise DeepBASS on the small toy; early stopping ends the initial fit at a different epoch per seed. Pool and
# ground-truth chunks of one shape (64 samples, 10 passes): one compilation serves both.
seeds_toy_config = functools.partial(toy_config, initial_patience=6, iterations=4, budget=12, labeled_chunk_size=64,
                                     mc_passes_labeled=10, figures=True)


def _run(config, workdir, dataset=None) -> list[dict]:
    """Runs `config` in `workdir`; per seed its metrics, oracle log and final state."""
    driver = driver_lib.Driver(config, workdir, dataset=dataset)
    driver.run()
    results = []
    for r, seed in enumerate(driver.seeds):
        state = driver.seed_state(r)
        results.append({
            "folder": seed.folder,
            "metrics": checkpoint.read_jsonl(seed.folder / runfolder.METRICS),
            "oracle_log": checkpoint.read_jsonl(seed.folder / runfolder.ORACLE_LOG),
            "params": state.train_state.params, "steps": int(state.train_state.step),
            "ground_truth": state.ground_truth, "pseudo": state.pseudo,
        })
    return results


def _assert_same_run(result: dict, expected: dict, param_atol: float, metric_atol: float) -> None:
    assert result["oracle_log"] == expected["oracle_log"]  # the same labels bought, in the same iterations
    assert result["steps"] == expected["steps"]
    np.testing.assert_array_equal(result["ground_truth"], expected["ground_truth"])
    np.testing.assert_array_equal(result["pseudo"], expected["pseudo"])
    assert len(result["metrics"]) == len(expected["metrics"])
    for line, reference in zip(result["metrics"], expected["metrics"]):
        assert set(line) == set(reference)
        for key in EXACT_METRICS:
            assert line.get(key) == reference.get(key), (key, line, reference)
        for key in FLOAT_METRICS:
            if reference.get(key) is None:
                assert line.get(key) is None, key
            else:
                assert line[key] == pytest.approx(reference[key], abs=metric_atol), (key, line["iteration"])
    for leaf, expected_leaf in zip(jax.tree_util.tree_leaves(result["params"]),
                                   jax.tree_util.tree_leaves(expected["params"])):
        np.testing.assert_allclose(np.asarray(leaf), np.asarray(expected_leaf), rtol=0, atol=param_atol)


SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def single_runs(tmp_path_factory):
    return [_run(seeds_toy_config(seed=seed), tmp_path_factory.mktemp(f"seed_{seed}"))[0] for seed in SEEDS]


@pytest.mark.parametrize("seed_axis", algorithm.SEED_AXES)
def test_seeds_at_once_equal_separate_runs(single_runs, tmp_path, seed_axis):
    results = _run(seeds_toy_config(num_seeds=3, seed_axis=seed_axis), tmp_path)
    assert [r["folder"] for r in results] == [tmp_path / f"seed_{s}" for s in SEEDS]
    for result, expected in zip(results, single_runs):
        if seed_axis == "map":  # bit for bit, timings aside
            strip = lambda lines: [{k: v for k, v in m.items() if k not in TIMINGS} for m in lines]  # noqa: E731
            assert strip(result["metrics"]) == strip(expected["metrics"])
        _assert_same_run(result, expected, param_atol=0 if seed_axis == "map" else 1e-5, metric_atol=1e-3)
    # The run exercised plans of unequal length: early stopping differed between seeds, and so did D.
    assert len({r["metrics"][-1]["pseudo_labeled"] for r in results}) > 1
    assert [m["labels"] for m in results[0]["metrics"]] == [8, 10, 10, 12, 12]
    for result in results:  # each seed's own run folder, its config pinned with its seed
        assert json.loads((result["folder"] / runfolder.CONFIG).read_text())["seed"] == int(result["folder"].name[5:])
        assert (result["folder"] / runfolder.SUMMARY).exists() and (result["folder"] / "curves.png").exists()
    assert (tmp_path / runfolder.CHECKPOINT).exists() and not (tmp_path / runfolder.METRICS).exists()


def test_one_seed_keeps_the_single_run_layout(single_runs):
    folder = single_runs[0]["folder"]
    assert {p.name for p in folder.iterdir()} >= {runfolder.CONFIG, runfolder.METRICS, runfolder.ORACLE_LOG,
                                                  runfolder.SUMMARY, runfolder.CHECKPOINT, "curves.png"}
    assert not list(folder.glob("seed_*"))


def _leaves(tree):
    return [np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
            for x in jax.tree_util.tree_leaves(tree)]


@pytest.mark.parametrize("seed_axis", algorithm.SEED_AXES)
def test_a_padded_step_is_an_exact_no_op(seed_axis):
    """Seed 1 gets a padded step (take_step False) on a full batch: its whole state stays as it was, bit for
    bit, although an Adam step would move it; seed 0 takes train.train_step's step."""
    model_config = models.default_config()
    model_config.architecture = "mlp"
    module = models.build(model_config, 2)
    apply_fn = models.make_apply(module)

    def fresh_states():
        return [algorithm.initial_train_state(module, apply_fn, jax.random.key(seed), (2,), train.default_config())
                for seed in (0, 1)]

    images = jax.random.normal(jax.random.key(2), (40, 2))
    targets = jnp.asarray(np.arange(40) % 2, jnp.int32)
    indices = np.stack([np.arange(8, dtype=np.int32), np.arange(8, 16, dtype=np.int32)])
    weights = np.ones((2, 8), np.float32)
    expected, _ = train.train_step(fresh_states()[0], images, targets, indices[0], weights[0])
    stepped, metrics = algorithm.seeds_train_step(
        algorithm.stack(fresh_states()), images, jnp.stack([targets, targets]), indices, weights,
        np.zeros((2, 8), bool), np.array([True, False]), shared_images=True, seed_axis=seed_axis,
    )
    assert np.asarray(stepped.step).tolist() == [1, 0]
    assert np.asarray(metrics.count).tolist() == [8, 0] and float(metrics.loss[1]) == 0.0
    initial = fresh_states()
    for leaf, original in zip(_leaves(algorithm.unstack(stepped, 1)), _leaves(initial[1])):
        np.testing.assert_array_equal(leaf, original)
    moved = False
    for leaf, reference, original in zip(_leaves(algorithm.unstack(stepped, 0).params), _leaves(expected.params),
                                         _leaves(initial[0].params)):
        np.testing.assert_allclose(leaf, reference, rtol=0, atol=1e-6)
        moved |= not np.array_equal(leaf, original)
    assert moved


def _small_mnist(mnist_dir):
    full = data.load_idx_dir("mnist", mnist_dir)
    return dataclasses.replace(full, train_images=full.train_images[:128], train_labels=full.train_labels[:128],
                               test_images=full.test_images[:256], test_labels=full.test_labels[:256])


def _small_mnist_config(**overrides):
    config = mnist_configs.get_config("step_wise_max_entropy")
    config.initial_per_class = 1
    config.initial_epochs = 3
    config.iterations = 2
    config.acquire_every = 1
    config.acquire_count = 4
    config.budget = 18
    config.chunk_size = config.labeled_chunk_size = 128
    config.mc_passes_pool = config.mc_passes_labeled = 4
    for field, value in overrides.items():
        config[field] = value
    return config


@pytest.mark.slow  # about 90 s on 2 CPU cores, mostly compiling the vmapped CNN: pytest -m slow
@pytest.mark.parametrize("augment", [False, True])
def test_cnn_seeds_at_once_equal_single_runs_on_a_few_mnist_images(tmp_path, mnist_dir, augment):
    """The paper CNN (grouped convolutions under vmap), step-wise max entropy, two seeds sharing one small pool
    passed as `dataset`, with and without ground-truth augmentation."""
    dataset = _small_mnist(mnist_dir)
    config = _small_mnist_config(num_seeds=2, seed_axis="vmap")
    if augment:
        config.train.augment_degrees, config.train.augment_scale = 10.0, 0.05
    results = _run(config, tmp_path / "both", dataset)
    for seed, result in zip((0, 1), results):
        single = copy.deepcopy(config)
        single.seed, single.num_seeds = seed, 1
        expected = _run(single, tmp_path / str(seed), dataset)[0]
        _assert_same_run(result, expected, param_atol=1e-3, metric_atol=1e-3)
        assert [m["labels"] for m in result["metrics"]] == [10, 14, 18]


def test_many_seeds_need_the_simulated_oracle_and_a_known_seed_axis(tmp_path):
    with pytest.raises(config_lib.ConfigError, match=r"config.oracle='file' is invalid.*num_seeds > 1"):
        driver_lib.Driver(seeds_toy_config(oracle="file", num_seeds=2), tmp_path)
    with pytest.raises(config_lib.ConfigError, match=r"config.seed_axis='pmap' is invalid"):
        driver_lib.Driver(seeds_toy_config(seed_axis="pmap"), tmp_path)
    with pytest.raises(config_lib.ConfigError, match=r"config.num_seeds=0 is invalid"):
        driver_lib.Driver(seeds_toy_config(num_seeds=0), tmp_path)
    assert not (tmp_path / runfolder.CONFIG).exists()


def test_auto_seed_axis_is_map_on_the_cpu_and_vmap_elsewhere():
    config = config_lib.default_config()
    assert config_lib.seed_axis(config, "cpu") == "map" and config_lib.seed_axis(config, "gpu") == "vmap"
    config.seed_axis = "vmap"
    assert config_lib.seed_axis(config, "cpu") == "vmap"


def test_seeds_evaluate_one_device_copy_of_their_test_set(tmp_path):
    """The test images go to the device once for all seeds and iterations; the accuracy is the one computed from
    the host's arrays."""
    config = seeds_toy_config(num_seeds=3, iterations=2, test_size=150)
    driver = driver_lib.Driver(config, tmp_path, dataset=data.load(config.data))  # the seeds share one data set
    driver.run()
    test_set = driver.held_out.test
    assert test_set["shared_test"]  # each seed's test set is a view of the same array: one device copy
    host, device = driver.seeds[0].dataset.test_images, test_set["test_images"]
    assert isinstance(device, jax.Array) and len(host) == 150
    assert all(np.shares_memory(s.dataset.test_images, host) for s in driver.seeds)
    np.testing.assert_array_equal(np.asarray(device), host)
    for r, seed in enumerate(driver.seeds):
        alone = algorithm.stack([driver.seed_state(r).train_state.params])
        [expected] = algorithm.seeds_accuracy(driver.apply_fn, alone, host, seed.dataset.test_labels, shared=True,
                                              seed_axis="map")
        assert checkpoint.read_jsonl(seed.folder / runfolder.METRICS)[-1]["test_accuracy"] == expected


def _scaled_logits(params, x):
    """A network whose logits are row-wise products, exact in floats: x [B, C] * w [C]."""
    return x * params["w"]


@settings(max_examples=25, deadline=None)
@given(num_samples=st.integers(1, 11), chunk_size=st.sampled_from([1, 3, 8, 16]), num_seeds=st.integers(1, 3),
       shared=st.booleans(), seed_axis=st.sampled_from(algorithm.SEED_AXES))
def test_seeds_accuracy_is_each_seeds_share_of_right_predictions(num_samples, chunk_size, num_seeds, shared,
                                                                  seed_axis):
    """Whatever the chunking (a last chunk zero-padded), each seed's accuracy over its own or the shared images."""
    rng = np.random.default_rng(num_samples * 100 + chunk_size)
    params = {"w": jnp.asarray(rng.uniform(0.5, 2.0, (num_seeds, 4)), jnp.float32)}
    shape = (num_samples, 4) if shared else (num_seeds, num_samples, 4)
    images, labels = rng.normal(size=shape).astype(np.float32), rng.integers(0, 4, shape[:-1])
    accuracy = algorithm.seeds_accuracy(_scaled_logits, params, images, labels, shared, seed_axis,
                                        chunk_size=chunk_size)
    seed_images = np.broadcast_to(images, (num_seeds, num_samples, 4))
    seed_labels = np.broadcast_to(labels, (num_seeds, num_samples))
    expected = [np.mean((seed_images[r] * np.asarray(params["w"][r])).argmax(-1) == seed_labels[r])
                for r in range(num_seeds)]
    np.testing.assert_array_equal(accuracy, expected)


def test_seeds_accuracy_pads_a_growing_set_to_few_shapes_and_counts_only_its_own_rows():
    """A ground truth growing one label at a time from 1 to 300 compiles one program per power of two from 64 to
    512 and none when evaluated again; the zero rows padded on never count (all-zero logits predict class 0,
    which every real label avoids)."""
    params = {"w": jnp.ones((2, 3))}
    rng = np.random.default_rng(0)
    images = rng.normal(size=(300, 3)).astype(np.float32)
    labels = images.argmax(axis=-1)
    labels[labels == 0] = 1  # a wrong prediction wherever the image says class 0
    with count_compilations() as compiled:
        for num_samples in range(1, 301):
            accuracy = algorithm.seeds_accuracy(_scaled_logits, params, images[:num_samples], labels[:num_samples],
                                                True, "vmap", "ground-truth")
            expected = np.mean(images[:num_samples].argmax(axis=-1) == labels[:num_samples])
            np.testing.assert_array_equal(accuracy, [expected, expected])
    assert compiled[algorithm.seeds_correct.__name__] == 4  # chunks of 64, 128, 256 and 512 samples
    with count_compilations() as compiled:
        algorithm.seeds_accuracy(_scaled_logits, params, images, labels, True, "vmap")
    assert compiled.total() == 0
    assert [algorithm.accuracy_chunk(n, 2048) for n in (1, 64, 65, 300, 2048, 10_000)] == [64, 64, 128, 512, 2048,
                                                                                           2048]


def test_seeds_accuracy_names_the_seed_whose_predictions_are_not_finite():
    params = {"w": jnp.ones((3, 2))}
    images = np.ones((3, 5, 2), np.float32)
    images[1, 4, 0] = np.nan
    with pytest.raises(FloatingPointError, match=r"NaN or Inf in the test predictions \(1 of 5 samples, the seed at "
                                                 r"index 1\)"):
        algorithm.seeds_accuracy(_scaled_logits, params, images, np.zeros((3, 5)), False, "map", chunk_size=2)
    with pytest.raises(FloatingPointError, match=r"NaN or Inf in the ground-truth predictions \(1 of 5 samples\)$"):
        algorithm.seeds_accuracy(_scaled_logits, {"w": params["w"][1:2]}, images[1], np.zeros(5), True, "map",
                                 "ground-truth")
