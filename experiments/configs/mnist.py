"""MNIST experiments of section 5 (Tables 2 and 3, Fig. 3), one preset per table row.

  python -m experiments.main --config=experiments/configs/mnist.py:all_data_max_entropy \
      --config.data.data_dir=PATH/TO/mnist --workdir=/tmp/mnist

Without --config.data.data_dir the canonical files are downloaded into the user cache once.
Presets (`mnist.py:NAME`) with the paper's test accuracy (mean of 10 runs, Table 2 unless noted):
  supervised_100 / _300 / _600 / _1000 / _3000 / _60000   82.03 / 91.91 / 94.92 / 96.24 / 97.89 / 99.09 %
  step_wise_max_entropy       97.67 %   100 initial labels + 10 every 10 iterations, 300 in total
  step_wise_above_average     97.43 %
  all_data_max_entropy        97.92 %   (the default: DeepBASS)
  all_data_above_average      97.65 %
  semi_supervised_100 / _300 / _600 / _1000 / _3000       96.08 / 97.10 / 97.39 / 97.64 / 98.14 %
  all_data_max_entropy_1000   98.94 %   (Table 3) continued until 1,000 labels
  smoke                       a CPU-scale run of all_data_max_entropy: 2,000-image pool, 10 iterations
"""

from deepbass_jax import active

LABEL_COUNTS = (100, 300, 600, 1000, 3000, 60000)
ACTIVE_ROWS = ("step_wise_max_entropy", "step_wise_above_average", "all_data_max_entropy", "all_data_above_average")
PRESETS = (
    ACTIVE_ROWS
    + tuple(f"supervised_{n}" for n in LABEL_COUNTS)
    + tuple(f"semi_supervised_{n}" for n in LABEL_COUNTS[:-1])
    + ("all_data_max_entropy_1000", "smoke")
)


def get_config(preset: str = "all_data_max_entropy"):
    if preset not in PRESETS:
        raise ValueError(
            f"unknown mnist preset {preset!r}; choose one of {', '.join(PRESETS)} "
            f"(e.g. --config=experiments/configs/mnist.py:{PRESETS[0]})."
        )
    config = active.default_config()  # section 5's setting: 100 initial labels, 200 iterations, 10 every 10
    config.preset = preset  # which table row this is
    config.data.name = "mnist"
    if preset in ACTIVE_ROWS:
        config.mode = "step_wise" if preset.startswith("step_wise") else "all_data"
        config.policy = preset[len(config.mode) + 1 :]
    elif preset.startswith("supervised_"):
        labels = int(preset.split("_")[1])
        config.initial_per_class = labels // 10
        config.iterations = 0
        config.active = config.semi_supervised = False
        config.budget = labels
        if labels == 60000:  # the full training set: no upsampling, a fixed number of epochs
            config.train.upsample = 1
            config.initial_epochs = 30
            config.initial_all = True
    elif preset.startswith("semi_supervised_"):
        labels = int(preset.split("_")[2])
        config.initial_per_class = labels // 10
        config.active = False
        config.budget = labels
    elif preset == "all_data_max_entropy_1000":
        config.iterations = 900  # 90 acquisitions of 10 labels: 100 + 900 = 1,000
        config.budget = 1000
    elif preset == "smoke":
        config.pool_size = 2000
        config.test_size = 2000
        config.initial_epochs = 20
        config.iterations = 10
        config.acquire_every = 2
        config.budget = 150
    return config
