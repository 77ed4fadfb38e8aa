"""DBAL, the active learning protocol of Gal, Islam, Ghahramani 2017, as config fields of the one driver: a network
trained afresh after every acquisition (config.retrain_epochs) and acquisition among a random pool subset
(config.pool_subset), on the yin-yang toy."""

import jax
import numpy as np
import pytest

from deepbass_jax import algorithm, config as config_lib, data, driver as driver_lib, models, train
from deepbass_jax.workdir import checkpoint, runfolder
from tests.helpers import toy_config

SUBSET = 30  # of the toy's 200 pool samples


def _dbal_config(**overrides):
    """The toy without pseudo-labels, 2 labels in each of its 6 iterations (8 + 12 = 20), DBAL's two fields on."""
    return toy_config("active", **{"acquire_every": 1, "budget": 20, "retrain_epochs": 3, "pool_subset": SUBSET,
                                   **overrides})


def _oracle_log(workdir):
    return checkpoint.read_jsonl(workdir / runfolder.ORACLE_LOG)


def _params_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_the_fields_are_off_by_default():
    config = config_lib.default_config()
    assert (config.retrain_epochs, config.pool_subset) == (0, 0)


# ------------------------------------------------------------------------------------------------ retraining
def test_a_retrained_network_is_a_fresh_one_trained_e_epochs_on_the_ground_truth(tmp_path):
    """After iteration t the network is the one `algorithm.retrain_key(seed key, t)` initializes, trained
    retrain_epochs epochs on that iteration's ground truth, whatever network the iteration started from."""
    config = _dbal_config()
    driver = driver_lib.Driver(config, tmp_path)
    driver.initial_fit()
    for _ in range(2):
        driver.iterate()
    seed, iteration = driver.seeds[0], driver.iteration
    key = algorithm.retrain_key(seed.key, iteration)
    expected = algorithm.stack([algorithm.initial_train_state(driver.apply_fn.module, driver.apply_fn, key,
                                                              seed.dataset.input_shape, config.train)])
    targets = seed.state.targets()[None]
    for epoch in range(config.retrain_epochs):
        plan = train.sampling_plan(seed.state.labeled, np.zeros_like(seed.state.labeled),
                                   jax.random.fold_in(algorithm.setup_keys(key)[2], epoch), config.train.upsample)
        expected, _ = algorithm.train_epoch(expected, driver.pool_images, targets, [plan], config.train.batch_size,
                                            driver.shared_pool, driver.seed_axis,
                                            steps_per_call=config.train.steps_per_call)
    assert _params_equal(driver.states.params, expected.params)
    assert int(driver.states.step[0]) == int(expected.step[0])  # the optimizer started afresh as well

    driver.states = driver._fresh_states()  # another network before line 12: the same network after it
    driver._train(iteration, [algorithm.iteration_keys(seed.key, iteration)[3]])
    assert _params_equal(driver.states.params, expected.params)


def test_retrain_epochs_0_trains_one_epoch_more_of_the_same_network(tmp_path, monkeypatch):
    retrained = []  # the iterations whose line 12 trained fresh networks
    original = driver_lib.Driver._fit_fresh
    monkeypatch.setattr(driver_lib.Driver, "_fit_fresh",
                        lambda self, keys, epochs, bar=None: retrained.append(self.iteration + 1)
                        or original(self, keys, epochs, bar))
    config = _dbal_config(retrain_epochs=0, iterations=2)
    driver = driver_lib.Driver(config, tmp_path / "paper")
    driver.initial_fit()
    steps = int(driver.states.step[0])
    driver.iterate()
    views = int(driver.state.labeled.sum()) * config.train.upsample  # one epoch over them
    assert retrained == [] and int(driver.states.step[0]) == steps + -(-views // config.train.batch_size)
    driver = driver_lib.Driver(_dbal_config(iterations=2), tmp_path / "dbal")
    driver.initial_fit()
    driver.iterate()
    assert retrained == [1]


# ------------------------------------------------------------------------------------------------ pool subset
def test_a_subset_is_random_unlabeled_and_reproducible():
    key, labeled = jax.random.key(3), np.zeros(200, bool)
    labeled[:150] = True
    first = algorithm.pool_subset(key, 1, labeled, SUBSET)
    assert np.array_equal(first, algorithm.pool_subset(key, 1, labeled, SUBSET))  # the same key and iteration
    assert len(first) == SUBSET == len(set(first.tolist())) and not labeled[first].any()
    assert np.all(np.diff(first) > 0)
    assert not np.array_equal(first, algorithm.pool_subset(key, 2, labeled, SUBSET))  # another iteration
    assert not np.array_equal(first, algorithm.pool_subset(jax.random.key(4), 1, labeled, SUBSET))  # another seed
    assert np.array_equal(algorithm.pool_subset(key, 1, labeled, 80), np.arange(150, 200))  # fewer are left


def test_only_the_subset_is_scored_and_bought_and_nothing_twice(tmp_path, monkeypatch):
    scored = []
    pool_stats = algorithm.pool_stats

    def recording(*args, pool_ids=None, **kwargs):
        scored.append(None if pool_ids is None else pool_ids[0].copy())
        return pool_stats(*args, pool_ids=pool_ids, **kwargs)

    monkeypatch.setattr(algorithm, "pool_stats", recording)
    config = _dbal_config()
    driver = driver_lib.Driver(config, tmp_path)
    driver.initial_fit()
    subsets = []
    for iteration in range(1, config.iterations + 1):
        labeled_before = driver.state.labeled.copy()
        line = driver.iterate()[0]
        subset = scored[-1]
        assert subset is not None and len(subset) == SUBSET and not labeled_before[subset].any()
        bought = [e["index"] for e in _oracle_log(tmp_path) if e["iteration"] == iteration]
        assert len(bought) == 2 and set(bought) <= set(subset.tolist())
        entropy = driver.pool_scores.entropy[0]  # the whole pool's [N], NaN where not scored
        assert np.array_equal(np.flatnonzero(~np.isnan(entropy)), subset)
        unlabeled = np.setdiff1d(subset, bought)
        assert line["mean_pool_entropy"] == pytest.approx(float(entropy[unlabeled].mean()))
        subsets.append(subset)
    assert len({tuple(s) for s in subsets}) == config.iterations  # a new subset every iteration
    indices = [e["index"] for e in _oracle_log(tmp_path)]
    assert len(indices) == len(set(indices)) == 20 and int(driver.state.labeled.sum()) == 20


@pytest.mark.parametrize("num_seeds", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_a_samples_scores_do_not_depend_on_the_subset_it_is_in(num_seeds):
    """Sample i's masks are fold_in(key, i) for its pool index i: scored alone in a subset or with the whole pool
    (shared images, sample ids from its position), its MC-dropout statistics are the same."""
    config = toy_config("active")
    dataset = data.load(config.data)
    pool = np.asarray(dataset.train_images[:200], np.float32)
    module = models.build(config.model, dataset.num_classes)
    apply_fn = models.make_apply(module)
    params = algorithm.stack([algorithm.initial_train_state(module, apply_fn, jax.random.key(r), pool.shape[1:],
                                                            config.train) for r in range(num_seeds)]).params
    keys = jax.random.split(jax.random.key(7), num_seeds)
    whole = algorithm.pool_stats(apply_fn, params, pool, keys, 10, 16, True, "map")
    subsets = np.stack([np.sort(np.random.default_rng(r).choice(200, 40, replace=False)) for r in range(num_seeds)])
    part = algorithm.pool_stats(apply_fn, params, np.stack([pool[s] for s in subsets]), keys, 10, 16, False, "map",
                                pool_ids=subsets)
    for name in ("mean_probs", "entropy", "mutual_information", "variation_ratio"):
        for r, subset in enumerate(subsets):
            np.testing.assert_array_equal(getattr(part, name)[r], getattr(whole, name)[r][subset], err_msg=name)
    placed = algorithm.on_whole_pool(part, subsets, 200)
    assert placed.entropy.shape == (num_seeds, 200) and np.isnan(placed.entropy).sum() == num_seeds * 160


def test_random_acquisition_buys_and_trains_the_same_whatever_the_number_of_passes(tmp_path):
    """Random acquisition reads no score, so dbal_random scores its subset with T' = 1: the labels it buys and the
    networks it trains are those of T' = 10 (only the logged pool statistics differ)."""
    runs = {}
    for passes in (1, 10):
        config = _dbal_config(policy="random", mc_passes_pool=passes, iterations=3)
        driver_lib.run(config, tmp_path / str(passes))
        runs[passes] = tmp_path / str(passes)
    bought = [e for e in _oracle_log(runs[1]) if e["iteration"] > 0]
    assert _oracle_log(runs[1]) == _oracle_log(runs[10]) and len(bought) == 6
    lines = {p: [{k: v for k, v in line.items() if k != "mean_pool_entropy"}
                 for line in _comparable(checkpoint.read_jsonl(folder / runfolder.METRICS))]
             for p, folder in runs.items()}
    assert lines[1] == lines[10] and len(lines[1]) == 4  # the initial fit and 3 iterations
    assert _params_equal(checkpoint.load(runs[1] / runfolder.CHECKPOINT)["train_state"]["params"],
                         checkpoint.load(runs[10] / runfolder.CHECKPOINT)["train_state"]["params"])


# ------------------------------------------------------------------------------------------------ resume
def _comparable(metrics):
    return [{k: v for k, v in m.items() if k not in ("seconds", "phase_seconds")} for m in metrics]


@pytest.mark.parametrize("stop_after", [0, 3])
def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path, monkeypatch, stop_after):
    """Both fields on, interrupted between iteration `stop_after` and the next, then resumed: the same run,
    bitwise (the retrained network and the subset come from keys of the iteration)."""
    config = _dbal_config()
    straight = tmp_path / "straight"
    driver_lib.run(config, straight)
    original = driver_lib.Driver.iterate

    def interrupted(self):
        if self.iteration == stop_after:
            raise KeyboardInterrupt
        return original(self)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(driver_lib.Driver, "iterate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        driver_lib.run(config, resumed)
    monkeypatch.setattr(driver_lib.Driver, "iterate", original)
    driver_lib.run(config, resumed)
    assert _comparable(checkpoint.read_jsonl(resumed / runfolder.METRICS)) == _comparable(
        checkpoint.read_jsonl(straight / runfolder.METRICS))
    assert _oracle_log(resumed) == _oracle_log(straight)
    assert _params_equal(checkpoint.load(straight / runfolder.CHECKPOINT)["train_state"]["params"],
                         checkpoint.load(resumed / runfolder.CHECKPOINT)["train_state"]["params"])


# ------------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("overrides, names", [
    ({"pool_subset": -1}, ("config.pool_subset=-1", "acquire_count")),
    ({"pool_subset": 1}, ("config.pool_subset=1", "acquire_count")),
    ({"retrain_epochs": -1}, ("config.retrain_epochs=-1", "0 (off")),
    ({"semi_supervised": True, "retrain_epochs": 0}, ("config.pool_subset=30", "semi_supervised=False")),
    ({"semi_supervised": True, "pool_subset": 0}, ("config.retrain_epochs=3", "semi_supervised=False")),
])
def test_settings_that_cannot_run_are_refused_in_one_line(overrides, names):
    config = _dbal_config(**overrides)
    with pytest.raises(config_lib.ConfigError) as refused:
        config_lib.validate(config)
    message = str(refused.value)
    assert "\n" not in message and all(name in message for name in names), message


def test_several_processes_refuse_a_subset():
    with pytest.raises(config_lib.ConfigError, match="config.pool_subset must be 0"):
        config_lib.validate(_dbal_config(), process_count=2)
    config_lib.validate(_dbal_config(pool_subset=0), process_count=2)


# ------------------------------------------------------------------------------------------------ even batches
@pytest.mark.parametrize("size, batch, expected", [(130, 128, [65, 65]), (120, 128, [120]), (256, 128, [128, 128]),
                                                   (260, 128, [87, 87, 86]), (3, 2, [2, 1]), (0, 4, [])])
def test_even_batches_keep_the_plan_and_its_batch_count_with_sizes_within_one(size, batch, expected):
    indices, weights = np.arange(100, 100 + size, dtype=np.int32), np.linspace(0.5, 1.5, size).astype(np.float32)
    spread_indices, spread_weights = train.even_batches(indices, weights, batch)
    assert spread_indices.shape == spread_weights.shape == (len(expected) * batch,)
    real = spread_weights.reshape(-1, batch) > 0
    assert real.sum(1).tolist() == expected and np.all(real[:, :-1] >= real[:, 1:])  # padding at each batch's end
    assert np.array_equal(spread_indices[spread_weights > 0], indices)  # every entry once, in the plan's order
    assert np.array_equal(spread_weights[spread_weights > 0], weights)


def test_even_batches_train_the_same_steps_on_the_same_samples(tmp_path, monkeypatch):
    """A DBAL run with train.even_batches takes as many steps as without, each on a batch of even size."""
    original, batches = algorithm.train_epoch, []

    def recording(states, images, targets, plans, batch_size, *args, **kwargs):
        for indices, weights in plans:  # the real entries of each batch of batch_size
            real = np.zeros(-(-len(weights) // batch_size) * batch_size)
            real[: len(weights)] = weights > 0
            batches.append((real.reshape(-1, batch_size).sum(1).tolist(), sorted(indices[weights > 0].tolist())))
        return original(states, images, targets, plans, batch_size, *args, **kwargs)

    runs = {}
    for even in (False, True):
        config = _dbal_config(iterations=1, **{"train.batch_size": 8, "train.upsample": 1, "train.even_batches": even})
        driver = driver_lib.Driver(config, tmp_path / str(even))
        driver.initial_fit()
        monkeypatch.setattr(algorithm, "train_epoch", recording)
        driver.iterate()  # 10 labels, a fresh network trained retrain_epochs = 3 epochs
        monkeypatch.setattr(algorithm, "train_epoch", original)
        runs[even], batches = (batches, int(driver.states.step[0]), np.flatnonzero(driver.state.labeled)), []
    assert [sizes for sizes, _ in runs[False][0]] == [[8, 2]] * 3
    assert [sizes for sizes, _ in runs[True][0]] == [[5, 5]] * 3
    assert runs[True][1] == runs[False][1] == 3 * 2  # a fresh network: 3 epochs of 2 steps either way
    assert all(samples == runs[True][2].tolist() for _, samples in runs[True][0])  # every label, once an epoch


def test_even_batches_are_refused_over_several_processes():
    with pytest.raises(config_lib.ConfigError, match="config.train.even_batches must be False"):
        config_lib.validate(_dbal_config(pool_subset=0, **{"train.even_batches": True}), process_count=2)
