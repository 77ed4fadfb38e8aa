"""Compile once: the jitted functions of an iteration are traced once, whatever the iteration, the pool size
or the run. A function that retraces every iteration would cost seconds to minutes each time."""

import jax
import numpy as np

from deepbass_jax import active, data, models, train, uncertainty
from experiments.configs import yinyang

JITTED = {
    "chunk_stats": uncertainty.chunk_stats,
    "batch_step": train.batch_step,
    "predict": train._predict_chunk,
    "checked_predict": active._checked_predict_chunk,
}


def _cache_sizes():
    return {name: fn._cache_size() for name, fn in JITTED.items()}


def _config(num_per_class, seed):
    config = yinyang.get_config("active_semi_supervised")
    config.seed = seed
    config.data.num_per_class = num_per_class
    config.initial_epochs, config.initial_patience = 5, 0
    config.iterations, config.mc_passes_labeled, config.chunk_size = 0, 8, 32
    return config


def test_iterations_pool_sizes_and_runs_share_one_compilation(tmp_path):
    first = active.Driver(_config(num_per_class=50, seed=0), tmp_path / "a")
    state = first.initial_state()
    first.iterate(state)  # compiles everything an iteration needs
    compiled = _cache_sizes()
    for _ in range(3):
        first.iterate(state)
    assert _cache_sizes() == compiled, "an iteration retraced"
    # Another run: a different seed and a pool of another size (130 vs 100 samples, other chunk counts).
    second = active.Driver(_config(num_per_class=65, seed=1), tmp_path / "b")
    assert second.pool_images.shape[0] != first.pool_images.shape[0]
    other = second.initial_state()
    for _ in range(2):
        second.iterate(other)
    assert _cache_sizes() == compiled, "a new run or pool size retraced"
    assert not np.array_equal(other.ground_truth, state.ground_truth)  # really another run


def test_apply_functions_of_equal_modules_are_equal_static_arguments():
    config = models.default_config()
    config.architecture = "mlp"
    a, b = (models.make_apply(models.build(config, 2)) for _ in range(2))
    assert a == b and hash(a) == hash(b)
    config.dropout_rate = 0.5
    assert models.make_apply(models.build(config, 2)) != a
    params = models.init_params(a.module, jax.random.key(0), (2,))
    x = jax.numpy.ones((3, 2))
    np.testing.assert_array_equal(a(params, x), b(params, x))


def _image_run(num_pool, seed, workdir):
    """A driver on a tiny image pool [num_pool, 8, 8, 1] with ground-truth augmentation on (MLP: fast)."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(num_pool) % 2).astype(np.int32)
    images = rng.random((num_pool, 8, 8, 1), dtype=np.float32) * 0.5 + labels[:, None, None, None] * 0.5
    config = active.default_config()
    config.seed = seed
    config.model.architecture = "mlp"
    config.initial_per_class, config.initial_epochs, config.iterations = 2, 3, 4
    config.acquire_every, config.acquire_count, config.budget = 1, 2, 12
    config.mc_passes_pool = config.mc_passes_labeled = 4
    config.chunk_size = config.labeled_chunk_size = 32
    config.train.batch_size, config.train.upsample = 16, 4
    config.train.augment_degrees, config.train.augment_scale = 10.0, 0.05
    dataset = data.Dataset("tiny", images, labels, images[:20], labels[:20], 2)
    return active.Driver(config, workdir, dataset=dataset)


def test_augmentation_compiles_the_step_and_the_gather_once(tmp_path):
    first = _image_run(60, 0, tmp_path / "a")
    state = first.initial_state()  # the initial fit: every plan entry augmented
    first.iterate(state)  # iterations: ground truth augmented, pseudo-labeled samples not
    compiled = train.batch_step._cache_size(), train._gather_batch._cache_size()
    for _ in range(3):
        first.iterate(state)
    assert (train.batch_step._cache_size(), train._gather_batch._cache_size()) == compiled, "an iteration retraced"
    assert int(state.labeled.sum()) == 12 and state.selected.any()
    # Another run and pool size: the gather (which holds the pool's shape) compiles once more, the step never.
    second = _image_run(70, 1, tmp_path / "b")
    other = second.initial_state()
    second.iterate(other)
    assert train.batch_step._cache_size() == compiled[0], "a new run or pool size retraced batch_step"
    assert train._gather_batch._cache_size() == compiled[1] + 1
