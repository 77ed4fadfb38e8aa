"""Compile once: the jitted functions of an iteration are traced once, whatever the iteration or the run; only
those that take the whole pool's arrays compile again, once, for a pool of another size. A function that
retraces every iteration would cost seconds to minutes each time."""

import jax
import numpy as np

from deepbass_jax import algorithm, config as config_lib, data, driver as driver_lib, models
from experiments.configs import yinyang
from tests.compilations import count_compilations

# Eager jax.numpy ops on arrays whose size changes each iteration compile too; these must not.
JITTED = [algorithm.seeds_chunk_stats, algorithm.seeds_queries, algorithm.seeds_pseudo_labels,
          algorithm.seeds_train_steps, algorithm.seeds_correct]
# Functions of the whole pool's arrays compile again for a pool of another size (the training steps twice: the
# program of train.steps_per_call steps and the one-step program of an epoch's last steps); the others never.
POOL_SHAPED = {algorithm.seeds_queries.__name__: 1, algorithm.seeds_pseudo_labels.__name__: 1,
               algorithm.seeds_train_steps.__name__: 2}


def _jitted_compilations(compiled):
    return {fn.__name__: compiled[fn.__name__] for fn in JITTED}


def _config(num_per_class, seed):
    config = yinyang.get_config("active_semi_supervised")
    config.seed = seed
    config.data.num_per_class = num_per_class
    config.initial_epochs, config.initial_patience = 5, 0
    config.iterations, config.mc_passes_labeled, config.chunk_size = 0, 8, 32
    # The yin-yang test set grows with num_per_class; cut to one size, the test accuracy takes one chunk shape
    # (100 -> 128 rows; 130 would be a new power of two, 256, which compiled once unless a test before had).
    config.test_size = 100
    # Epochs of several steps, some odd in number: the fit already takes both training programs.
    config.train.batch_size, config.train.steps_per_call = 32, 2
    return config


def test_iterations_pool_sizes_and_runs_share_one_compilation(tmp_path):
    steps = algorithm.seeds_train_steps.__name__
    first = driver_lib.Driver(_config(num_per_class=50, seed=0), tmp_path / "a")
    with count_compilations() as warm_up:
        first.initial_fit()
        first.iterate()  # compiles everything an iteration needs
    with count_compilations() as compiled:
        for _ in range(3):
            first.iterate()
    assert warm_up[steps] <= 2, "the training steps compiled more than their two programs"
    assert not any(_jitted_compilations(compiled).values()), "an iteration retraced"
    # Another run: a different seed and a pool of another size (130 vs 100 samples, other chunk counts).
    with count_compilations() as compiled:
        second = driver_lib.Driver(_config(num_per_class=65, seed=1), tmp_path / "b")
        second.initial_fit()
        for _ in range(2):
            second.iterate()
    assert _jitted_compilations(compiled) == {fn.__name__: POOL_SHAPED.get(fn.__name__, 0) for fn in JITTED}, \
        "a new run or pool size retraced more than the pool-shaped functions, or those more than once"
    assert second.pool_images.shape[0] != first.pool_images.shape[0]
    assert not np.array_equal(second.state.ground_truth, first.state.ground_truth)  # really another run
    # Another run with a pool of the same size compiles nothing.
    with count_compilations() as compiled:
        third = driver_lib.Driver(_config(num_per_class=65, seed=2), tmp_path / "c")
        third.initial_fit()
        third.iterate()
    assert not any(_jitted_compilations(compiled).values()), "a new run retraced"


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
    config = config_lib.default_config()
    config.seed = seed
    config.model.architecture = "mlp"
    config.initial_per_class, config.initial_epochs, config.iterations = 2, 3, 4
    config.acquire_every, config.acquire_count, config.budget = 1, 2, 12
    config.mc_passes_pool = config.mc_passes_labeled = 4
    config.chunk_size = config.labeled_chunk_size = 32
    config.train.batch_size, config.train.upsample = 16, 4
    config.train.augment_degrees, config.train.augment_scale = 10.0, 0.05
    dataset = data.Dataset("tiny", images, labels, images[:20], labels[:20], 2)
    return driver_lib.Driver(config, workdir, dataset=dataset)


def test_augmentation_compiles_once_per_pool_size(tmp_path):
    first = _image_run(60, 0, tmp_path / "a")
    first.initial_fit()  # every plan entry augmented
    first.iterate()  # iterations: ground truth augmented, pseudo-labeled samples not
    with count_compilations() as compiled:
        for _ in range(3):
            first.iterate()
    assert not any(_jitted_compilations(compiled).values()), "an iteration retraced"
    state = first.state
    assert int(state.labeled.sum()) == 12 and state.selected.any()
    # Another run and pool size: the pool-shaped functions compile once more, nothing else.
    with count_compilations() as compiled:
        second = _image_run(70, 1, tmp_path / "b")
        second.initial_fit()
        second.iterate()
    assert _jitted_compilations(compiled) == {fn.__name__: int(fn.__name__ in POOL_SHAPED) for fn in JITTED}
