"""Your own images and a person who answers: rounds sized for a person (10 labels every iteration up to 300).

  python -m experiments.main --config=experiments/configs/own.py --config.data.path=DIR --workdir=/tmp/mine
  python -m experiments.main --config=experiments/configs/own.py --config.data.name=npz \
      --config.data.path=mine.npz --workdir=/tmp/mine

DIR holds your images (PNG / JPEG); those already sorted into DIR/CLASS/ folders are labels you have, and
DIR/test/CLASS/ (optional) is a test set. Without class folders, name the classes: --config.data.class_names=a,b.
Each iteration writes a round of 10 queries to WORKDIR/oracle/round_NNNN/: open its index.html, answer, save
answers.csv there, and run the same command again (the run stops with status 75 while it waits; or wait in place
with --config.oracle_wait_seconds=3600). Labels you have replace the initial draw; without any, the first round
asks 2 per class of random samples (nobody knows the classes yet). The run's first lines say how many labels the
schedule buys. The setting is the paper's all-data max-entropy one (Table 2's best MNIST row) with the same 300
labels bought in rounds of 10, one every iteration instead of every 10th; the README gives the wait between rounds.
Presets: `folder` (default) and `npz` name the data source; `vectors` is for features [N, D] (the MLP head).
"""

from deepbass_jax import config as config_lib

PRESETS = {
    "folder": {"data.name": "folder"},
    "npz": {"data.name": "npz"},
    "vectors": {"data.name": "npz", "model.architecture": "mlp"},
}


def get_config(preset: str = "folder"):
    if preset not in PRESETS:
        raise ValueError(f"unknown own preset {preset!r}; choose one of {', '.join(PRESETS)} "
                         "(e.g. --config=experiments/configs/own.py:folder).")
    config = config_lib.default_config()  # the paper's MNIST setting: CNN, all data, max entropy, T' = 10
    config.preset = f"own_{preset}"
    config.oracle = "file"  # a person answers each round on its labeling page
    config.initial_per_class = 2  # without labels you have: 2 x C random samples first
    config.acquire_every = 1  # a round every iteration ...
    config.acquire_count = 10  # ... of 10 samples, a person's sitting
    config.budget = 300  # labels in all, those you have included
    config.iterations = 30  # enough rounds to spend the budget from 20 initial labels (28), and two more
    config.pool_size = 0  # every image of your data
    config.update_from_flattened_dict(PRESETS[preset])
    return config
