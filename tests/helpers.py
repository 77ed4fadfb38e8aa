"""Test helpers shared by the driver tests: a small toy config, and a person answering a FileOracle round."""

import csv

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
