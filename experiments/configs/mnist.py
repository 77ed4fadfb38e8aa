"""MNIST experiments of section 5 (Tables 2 and 3, Fig. 3), one preset per table row, and rows beyond the paper.

  python -m experiments.main --config=experiments/configs/mnist.py:all_data_max_entropy \
      --config.data.data_dir=PATH/TO/mnist --workdir=/tmp/mnist

Without --config.data.data_dir the canonical files are downloaded into the user cache once. Fashion-MNIST: add
--config.data.name=fashion_mnist (and its folder as data_dir). Presets (`mnist.py:NAME`) with the paper's test
accuracy (mean of 10 runs, Table 2 unless noted):
  supervised_100 / _300 / _600 / _1000 / _3000 / _60000   82.03 / 91.91 / 94.92 / 96.24 / 97.89 / 99.09 %
  step_wise_max_entropy       97.67 %   100 initial labels + 10 every 10 iterations, 300 in total
  step_wise_above_average     97.43 %   above average: eq. 14 (mean over all samples)
  all_data_max_entropy        97.92 %   (the default: DeepBASS)
  all_data_above_average      97.65 %
  semi_supervised_100 / _300 / _600 / _1000 / _3000       96.08 / 97.10 / 97.39 / 97.64 / 98.14 %
  all_data_max_entropy_1000   98.94 %   (Table 3) continued until 1,000 labels
Beyond the paper:
  all_data_above_average_theta, step_wise_above_average_theta   above average as the authors' code did it:
                              compared with theta instead of the mean of eq. 14
  all_data_bald, all_data_variation_ratio   BALD / variation ratios instead of max entropy
  supervised_50, augmented_supervised_50    50 labels, initial fit only, without / with augmentation of the
                              ground truth (rotations below 10 degrees, scaling up to 5%); the paper: about 85 %
  improved_300, improved_1000 all_data_max_entropy with that augmentation (aims: 98.5 % / 99.0 %)
  smoke                       a CPU-scale run of all_data_max_entropy: 2,000-image pool, 10 iterations
CPU scale: `cpu_NAME` runs preset NAME on a 6,000-image pool (a seeded random subset of the training set) with
a tenth of its iterations, buying its 10 labels every iteration instead of every 10th, so that the same
labels are bought (e.g. cpu_all_data_max_entropy: 100 + 20 x 10 = 300 labels in 20 iterations). The test set
stays the full 10,000 images.
"""

from deepbass_jax import active

LABEL_COUNTS = (100, 300, 600, 1000, 3000, 60000)
ACTIVE_ROWS = ("step_wise_max_entropy", "step_wise_above_average", "all_data_max_entropy", "all_data_above_average")
BEYOND_ROWS = (
    "all_data_above_average_theta",
    "step_wise_above_average_theta",
    "all_data_bald",
    "all_data_variation_ratio",
    "supervised_50",
    "augmented_supervised_50",
    "improved_300",
    "improved_1000",
)
PRESETS = (
    ACTIVE_ROWS
    + tuple(f"supervised_{n}" for n in LABEL_COUNTS)
    + tuple(f"semi_supervised_{n}" for n in LABEL_COUNTS[:-1])
    + ("all_data_max_entropy_1000",)
    + BEYOND_ROWS
    + ("smoke",)
)
CPU_PREFIX = "cpu_"
CPU_POOL_SIZE = 6000
CPU_ITERATION_DIVISOR = 10
CPU_PRESETS = tuple(CPU_PREFIX + p for p in PRESETS if p not in ("supervised_60000", "smoke"))
AUGMENTATION = {"augment_degrees": 10.0, "augment_scale": 0.05}  # the paper's "Data Augmentation" paragraph


def get_config(preset: str = "all_data_max_entropy"):
    if preset not in PRESETS + CPU_PRESETS:
        raise ValueError(
            f"unknown mnist preset {preset!r}; choose one of {', '.join(PRESETS)}, or cpu_ before any of them "
            f"but supervised_60000 and smoke (e.g. --config=experiments/configs/mnist.py:{PRESETS[0]})."
        )
    if preset.startswith(CPU_PREFIX):
        return cpu_scale(get_config(preset[len(CPU_PREFIX) :]))
    config = active.default_config()  # section 5's setting: 100 initial labels, 200 iterations, 10 every 10
    config.preset = preset  # which table row this is
    config.data.name = "mnist"
    if preset.startswith(("all_data_", "step_wise_")) and preset != "all_data_max_entropy_1000":
        config.mode = "step_wise" if preset.startswith("step_wise") else "all_data"
        config.policy = preset[len(config.mode) + 1 :]
        if config.policy.endswith("_theta"):
            config.policy = config.policy[: -len("_theta")]
            config.above_average_reference = "theta"
    elif preset.startswith(("supervised_", "augmented_supervised_")):
        labels = int(preset.rsplit("_", 1)[1])
        config.initial_per_class = labels // 10
        config.iterations = 0
        config.active = config.semi_supervised = False
        config.budget = labels
        if labels == 60000:  # the full training set: no upsampling, a fixed number of epochs
            config.train.upsample = 1
            config.initial_epochs = 30
            config.initial_all = True
        if preset.startswith("augmented_"):
            config.train.update(AUGMENTATION)
    elif preset.startswith("semi_supervised_"):
        labels = int(preset.split("_")[2])
        config.initial_per_class = labels // 10
        config.active = False
        config.budget = labels
    elif preset in ("all_data_max_entropy_1000", "improved_1000"):
        config.iterations = 900  # 90 acquisitions of 10 labels: 100 + 900 = 1,000
        config.budget = 1000
    if preset.startswith("improved_"):
        config.train.update(AUGMENTATION)
    elif preset == "smoke":
        config.pool_size = 2000
        config.test_size = 2000
        config.initial_epochs = 20
        config.iterations = 10
        config.acquire_every = 2
        config.budget = 150
    return config


def cpu_scale(config):
    """A preset at CPU scale: a 6,000-image pool and a tenth of the iterations, with the same labels bought."""
    config.preset = CPU_PREFIX + config.preset
    config.pool_size = CPU_POOL_SIZE
    config.iterations //= CPU_ITERATION_DIVISOR
    config.acquire_every = max(config.acquire_every // CPU_ITERATION_DIVISOR, 1)
    return config
