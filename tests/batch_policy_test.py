"""Batch-aware acquisition in a run (config.policy=batchbald): a top-k BALD prefilter, consistent MC-dropout passes
over the candidates, BatchBALD's greedy batch; with the toy's MLP and the CNN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepbass_jax import acquisition, algorithm, config as config_lib, driver as driver_lib, models, uncertainty
from deepbass_jax.workdir import checkpoint, runfolder
from experiments.configs import mnist as mnist_configs
from tests.helpers import toy_config


def _toy_state(num_samples=60, seed=0):
    config = toy_config()
    config.model.architecture = "mlp"
    module = models.build(config.model, 2)
    params = models.init_params(module, jax.random.key(seed), (2,))
    images = np.random.default_rng(seed).normal(size=(num_samples, 2)).astype(np.float32)
    return models.make_apply(module), params, images


def test_the_batch_comes_from_the_prefilters_top_candidates_and_a_batch_of_all_of_them_is_that_set():
    apply_fn, params, images = _toy_state()
    stats = algorithm.pool_stats(apply_fn, algorithm.stack([params]), images, jax.random.key(1)[None], 10, 64, True,
                                 "map")
    labeled = np.zeros((1, 60), bool)
    labeled[0, :5] = True
    policy = acquisition.BATCH_POLICIES["batchbald"]
    query = lambda count, candidates: algorithm.batch_queries(  # noqa: E731
        policy, apply_fn, algorithm.stack([params]), stats, labeled, lambda r, i: images[i], jax.random.key(2)[None],
        count, candidates, 20, 16)[0]
    bald = np.where(labeled[0], -np.inf, stats.mutual_information[0])
    top = set(np.argsort(-bald, kind="stable")[:8])
    chosen = query(4, 8)
    assert len(set(chosen)) == 4 and set(chosen) <= top and not labeled[0, chosen].any()
    assert set(query(8, 8)) == top
    np.testing.assert_array_equal(query(4, 8), chosen)  # the same key: the same batch


def test_the_first_pick_is_bald_over_the_consistent_passes():
    apply_fn, params, images = _toy_state()
    stats = algorithm.pool_stats(apply_fn, algorithm.stack([params]), images, jax.random.key(1)[None], 10, 64, True,
                                 "map")
    labeled = np.zeros((1, 60), bool)
    key = jax.random.key(3)
    [[first]] = algorithm.batch_queries(acquisition.BATCH_POLICIES["batchbald"], apply_fn, algorithm.stack([params]),
                                        stats, labeled, lambda r, i: images[i], key[None], 1, 60, 30, 64)
    passes_key, _ = jax.random.split(key)
    probs = uncertainty.consistent_mc_probs(apply_fn, params, jnp.asarray(images), passes_key, 30)
    assert first == int(np.argmax(np.asarray(uncertainty.mutual_information(probs))))


def test_a_toy_run_buys_its_budget_with_batchbald(tmp_path):
    config = toy_config(policy="batchbald", batch_candidates=40, batch_passes=20)
    summary = driver_lib.run(config, tmp_path)
    log = checkpoint.read_jsonl(tmp_path / runfolder.ORACLE_LOG)
    assert summary["labels"] == 14 and len({e["index"] for e in log}) == 14


@pytest.mark.slow  # the CNN's consistent passes are tested in batchbald_test; this is its whole run (20 s)
def test_a_cnn_run_on_a_few_hundred_mnist_images_with_batchbald(tmp_path, mnist_dir):
    config = mnist_configs.get_config("all_data_max_entropy")
    config.data.source, config.data.data_dir = "dir", str(mnist_dir)
    config.pool_size, config.test_size, config.initial_per_class, config.initial_epochs = 300, 500, 2, 5
    config.iterations, config.acquire_every, config.acquire_count, config.budget = 2, 1, 5, 30
    config.policy, config.batch_candidates, config.batch_passes = "batchbald", 50, 20
    summary = driver_lib.run(config, tmp_path)
    log = checkpoint.read_jsonl(tmp_path / runfolder.ORACLE_LOG)
    assert summary["labels"] == 30 and len({e["index"] for e in log}) == 30


@pytest.mark.parametrize("field, value, message", [
    ("batch_candidates", 5, "at least config.acquire_count"), ("batch_passes", 0, "at least 1")])
def test_batch_settings_are_validated(field, value, message):
    config = config_lib.default_config()
    config.policy, config[field] = "batchbald", value
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(config)
