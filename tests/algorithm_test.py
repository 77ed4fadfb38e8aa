"""Algorithm 3.1's host pieces: the pool split, line 1's initial labels, the acquisition schedule (lines 8-11),
eq. 8's theta where it is used, and line 8's choice through the selector registry."""

import jax
import jax.numpy as jnp
import numpy as np

from deepbass_jax import algorithm, config as config_lib, data, uncertainty
from tests.helpers import toy_config


def test_split_pool_draws_validation_then_pool_from_one_seeded_permutation():
    dataset = data.yinyang(50, seed=0)
    config = toy_config(val_size=10, pool_size=30, test_size=7)
    cut, val, pool = algorithm.split_pool(config, dataset)
    assert len(val) == 10 and len(pool) == 30 and not set(val) & set(pool)
    assert list(pool) == sorted(pool) and list(val) == sorted(val)
    assert len(cut.test_images) == 7 and len(cut.test_labels) == 7
    again = algorithm.split_pool(config, dataset)
    np.testing.assert_array_equal(again[2], pool)
    other = algorithm.split_pool(toy_config(val_size=10, pool_size=30, seed=1), dataset)
    assert not np.array_equal(other[2], pool)


def test_initial_labels_are_balanced_with_a_simulated_oracle_and_random_without():
    labels = np.repeat(np.arange(3), 20).astype(np.int32)
    config = toy_config(initial_per_class=2)
    chosen = algorithm.initial_indices(config, labels, 60, 3)
    np.testing.assert_array_equal(np.bincount(labels[chosen], minlength=3), [2, 2, 2])
    unknown = algorithm.initial_indices(toy_config(initial_per_class=2, oracle="file"), labels, 60, 3)
    assert len(unknown) == 6 and len(set(unknown)) == 6
    np.testing.assert_array_equal(algorithm.initial_indices(toy_config(initial_all=True), labels, 60, 3),
                                  np.arange(60))


def test_acquisition_every_kth_iteration_within_the_budget():
    config = toy_config(acquire_every=2, acquire_count=3, budget=14)
    counts = [algorithm.acquisition_count(config, t, 8 + 3 * ((t - 1) // 2)) for t in range(1, 8)]
    assert counts == [3, 0, 3, 0, 0, 0, 0]  # 8 + 3 + 3 = 14: the budget is spent
    assert algorithm.acquisition_count(toy_config(active=False), 1, 8) == 0


def test_theta_passes_run_only_where_eq_8_decides_or_is_logged():
    all_data = toy_config(mode="all_data")
    theta, logged = algorithm.seeds_theta(all_data, None, None, None, None, "map", None, num_seeds=2)
    np.testing.assert_array_equal(theta, [1.0, 1.0])
    assert logged == [None, None]
    fixed = toy_config(theta=0.25)
    theta, logged = algorithm.seeds_theta(fixed, None, None, None, None, "map", None, num_seeds=1)
    assert list(theta) == [0.25] and logged == [0.25]
    assert algorithm.computes_theta(toy_config(mode="step_wise"))
    assert algorithm.computes_theta(toy_config(mode="all_data", log_theta=True))


def test_query_reads_the_score_its_policy_names():
    n = 6
    entropy = jnp.linspace(0, 1, n)
    stats = uncertainty.UncertaintyStats(jnp.full((n, 2), 0.5), entropy, entropy[::-1], entropy)
    labeled = jnp.zeros(n, bool).at[n - 1].set(True)
    key = jax.random.key(0)
    entropy_pick = algorithm.query_indices(stats, jnp.float32(1), labeled, key, 2, "max_entropy")
    bald_pick = algorithm.query_indices(stats, jnp.float32(1), labeled, key, 2, "bald")
    assert entropy_pick.tolist() == [4, 3]  # the labeled sample 5 is no candidate
    assert bald_pick.tolist() == [0, 1]


def test_seed_configs_count_up_from_the_seed():
    configs = config_lib.seed_configs(toy_config(seed=4, num_seeds=3))
    assert [c.seed for c in configs] == [4, 5, 6]
