"""What Keras's last batch costs DBAL's fresh networks (issue 30): a fresh paper CNN trained 50 epochs (DBAL's
retrain_epochs) on n random MNIST labels, in batches of 128 with the remainder last (Keras's fit: 130 samples give
128 and 2) or in as many batches of even size (train.even_batches: 65 and 65), test accuracy on the first 3,000
test images, over 4 initializations per setting.

  python -m studies.dbal_last_batch --data_dir=../shared/data/mnist   # results/mnist/dbal_last_batch.json
"""

import json
import pathlib

import jax
import numpy as np
from absl import app, flags

from deepbass_jax import algorithm, data, models, train
from experiments import provenance
from experiments.configs import mnist

SETTINGS = ((120, False), (130, False), (130, True), (140, False), (260, False), (260, True))  # (labels, even)
INITIALIZATIONS = 4
EPOCHS = 50
TEST_IMAGES = 3000


def _define_flags() -> None:
    """The study's flags, defined only when it runs (a test imports it beside entry points with a --data_dir)."""
    global _DATA_DIR, _OUT
    _DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder with MNIST's four IDX files.", required=True)
    _OUT = flags.DEFINE_string("out", "results/mnist/dbal_last_batch.json", "Where the JSON goes.")


def fresh_accuracy(dataset, apply_fn, labels: int, even: bool, key: int, train_config) -> float:
    """Test accuracy of a fresh network of `apply_fn` (run key `key`) after EPOCHS epochs on `labels` random
    training images; one apply_fn for every call, so that the training steps compile once."""
    chosen = np.random.default_rng(key).choice(len(dataset.train_labels), labels, replace=False)
    images = np.asarray(dataset.train_images[chosen])
    targets = np.asarray(dataset.train_labels[chosen], np.int32)[None]
    states = algorithm.initial_train_states(apply_fn, [jax.random.key(key)], images.shape[1:], train_config)
    for epoch in range(EPOCHS):
        plan = train.sampling_plan(np.ones(labels, bool), np.zeros(labels, bool),
                                   jax.random.fold_in(jax.random.key(key), epoch), upsample=1)
        if even:
            plan = train.even_batches(*plan, train_config.batch_size)
        states, _ = algorithm.train_epoch(states, images, targets, [plan], train_config.batch_size, True, "map")
    return float(algorithm.seeds_accuracy(apply_fn, states.params, dataset.test_images[:TEST_IMAGES],
                                          dataset.test_labels[:TEST_IMAGES], True, "map")[0])


def batch_sizes(labels: int, even: bool, batch_size: int) -> list[int]:
    """The samples in each batch of an epoch over `labels` samples."""
    if not even:
        return [min(batch_size, labels - start) for start in range(0, labels, batch_size)]
    _, weights = train.even_batches(np.zeros(labels, np.int32), np.ones(labels, np.float32), batch_size)
    return [int(n) for n in (weights.reshape(-1, batch_size) > 0).sum(1)]


def main(argv):
    del argv
    config = mnist.get_config("dbal_max_entropy")
    dataset = data.load_idx_dir("mnist", _DATA_DIR.value)
    apply_fn = models.make_apply(models.build(config.model, 10))
    rows = []
    for labels, even in SETTINGS:
        accuracies = [100 * fresh_accuracy(dataset, apply_fn, labels, even, key, config.train)
                      for key in range(INITIALIZATIONS)]
        rows.append({"labels": labels, "batches": batch_sizes(labels, even, config.train.batch_size),
                     "test_accuracy": accuracies,
                     "mean": float(np.mean(accuracies)), "std": float(np.std(accuracies, ddof=1))})
        print(f"{labels} labels in batches {rows[-1]['batches']}: {rows[-1]['mean']:.1f} % "
              f"({rows[-1]['std']:.1f}) test accuracy", flush=True)
    out = pathlib.Path(_OUT.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "epochs": EPOCHS, "test_images": TEST_IMAGES,
                               "commit": provenance.commit(),
                               "device": provenance.device()}, indent=1) + "\n")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
