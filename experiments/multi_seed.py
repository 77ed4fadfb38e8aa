"""Runs one experiment for several seeds at once (simulated oracle) and reports the final test accuracy.

  python -m experiments.multi_seed --config=experiments/configs/yinyang.py --seeds=0,1,2,3,4,5,6,7,8,9 \
      --json=/tmp/yinyang_seeds.json
  python -m experiments.multi_seed --config=experiments/configs/mnist.py:smoke \
      --config.data.data_dir=PATH/TO/mnist --seeds=0,1,2 --seed_axis=map --json=/tmp/mnist_seeds.json

Seed r is the run `python -m experiments.main` makes with --config.seed=r (see deepbass_jax/multi_seed.py);
the paper reports the mean of 10 such runs. --seed_axis=map was the faster choice on a CPU (the module
docstring has the numbers). The JSON holds the seeds, the labels and the final test accuracy of each seed,
their mean and their sample standard deviation. Nothing else is written: no checkpoints, no resume.
"""

import pathlib

from absl import app, flags
from ml_collections import config_flags

from deepbass_jax import checkpoint, multi_seed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file, optionally with :preset.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Comma-separated run seeds (each replaces config.seed).")
_JSON = flags.DEFINE_string("json", None, "Where to write the per-seed test accuracy, mean and std (JSON).")
_SEED_AXIS = flags.DEFINE_enum("seed_axis", "vmap", multi_seed.SEED_AXES,
                               "How seeds share the compiled program: vmap (batched) or map (a loop inside it).")
flags.mark_flags_as_required(["config"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        seeds = [int(seed) for seed in _SEEDS.value]
    except ValueError as error:
        raise app.UsageError(f"--seeds must be comma-separated integers, got {_SEEDS.value}.") from error
    if _JSON.value:  # before the run, so that a bad path fails before hours of work
        pathlib.Path(_JSON.value).expanduser().parent.mkdir(parents=True, exist_ok=True)
    results = multi_seed.run_seeds(_CONFIG.value, seeds, seed_axis=_SEED_AXIS.value)
    summary = multi_seed.summarize(results)
    if _JSON.value:
        checkpoint.write_json(pathlib.Path(_JSON.value).expanduser(), summary)
    for seed, accuracy in zip(summary["seeds"], summary["test_accuracy"]):
        print(f"seed {seed}: test accuracy {accuracy:.4f}")
    print(f"mean {summary['mean']:.4f} +- {summary['std']:.4f} (sample std) over {len(seeds)} seeds"
          + (f"; written to {_JSON.value}" if _JSON.value else ""))


if __name__ == "__main__":
    app.run(main)
