"""Test helpers shared by the driver tests: a small toy config, and a person answering a FileOracle round."""

import csv
import functools

import jax
import jax.numpy as jnp
import numpy as np

from deepbass_jax import models
from experiments.configs import yinyang as yinyang_configs


def toy_config(preset="active_semi_supervised", *, num_per_class=100, quick=True, **overrides):
    """A yin-yang run that takes seconds: 2 x num_per_class (200) pool points, 6 iterations, 14 labels (8 initial
    + 2 in iterations 1, 3 and 5), no figures. quick=False keeps the preset's own run (its fit, its 72 iterations,
    its figures) and changes only the pool size. `overrides` then set config fields in their order, nested ones
    by a dotted name: toy_config(budget=12, **{"model.dropout_rate": 0.5})."""
    config = yinyang_configs.get_config(preset)
    config.data.num_per_class = num_per_class
    if quick:
        config.initial_epochs = 60
        config.initial_patience = 0
        config.iterations = 6
        config.budget = 14
        config.chunk_size = 64
        config.labeled_chunk_size = 16
        config.mc_passes_labeled = 20
        config.train.batch_size = 64
        config.figures = False  # matplotlib's 1-2 s per finished run; the tests that look at the figures turn them on
    for field, value in overrides.items():
        *parents, name = field.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[name] = value
    return config


def answer_round(folder, hidden) -> int:
    """Writes answers.csv for the queries.csv in `folder` with labels from `hidden` [N]; returns their number."""
    with open(folder / "queries.csv") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    for row in rows:
        row["label"] = int(hidden[int(row["id"])])
    with open(folder / "answers.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=reader.fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


@functools.lru_cache(maxsize=None)
def random_network(architecture: str, num_classes: int, input_shape: tuple, dropout_masks: str = "hash"):
    """(apply_fn, params, input_shape) of `architecture` with LeCun-normal random parameters in the tree
    `models.init_params` builds (traced with eval_shape, not run: eager flax init compiles every op, which is slow
    on the CPU for the CNN)."""
    config = models.default_config()
    config.architecture, config.dropout_masks = architecture, dropout_masks
    module = models.build(config, num_classes)
    shapes = jax.eval_shape(lambda key: models.init_params(module, key, input_shape), jax.random.key(0))
    rng = np.random.default_rng(0)

    def fill(leaf):
        fan_in = int(np.prod(leaf.shape[:-1])) or 1
        return jnp.asarray(rng.normal(scale=1.0 / np.sqrt(fan_in), size=leaf.shape), leaf.dtype)

    return models.make_apply(module), jax.tree_util.tree_map(fill, shapes), input_shape
