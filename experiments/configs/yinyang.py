"""The yin-yang toy of section 4 (Table 1, Figs. 1-2): 2 x 500 points, 8 initial labels, MLP.

  python -m experiments.main --config=experiments/configs/yinyang.py --workdir=/tmp/yinyang

Presets (`yinyang.py:NAME`) and the paper's Table 1 accuracy (mean of 10 runs):
  initial                   83.27 %   8 labels, initial fit only
  semi_supervised           84.33 %   8 labels + pseudo-labels, 72 iterations
  active                    90.19 %   8 labels + 2 every 2nd iteration up to 80, no pseudo-labels
  active_semi_supervised    90.33 %   both (the default, DeepBASS)
  supervised_80             88.65 %   80 balanced labels, supervised fit
  supervised_1000           91.37 %   all 1,000 labels, supervised fit
"""

from deepbass_jax import active

PRESETS = ("active_semi_supervised", "initial", "semi_supervised", "active", "supervised_80", "supervised_1000")


def get_config(preset: str = "active_semi_supervised"):
    if preset not in PRESETS:
        raise ValueError(
            f"unknown yinyang preset {preset!r}; choose one of {', '.join(PRESETS)} "
            f"(e.g. --config=experiments/configs/yinyang.py:{PRESETS[0]})."
        )
    config = active.default_config()
    config.preset = preset  # which row of Table 1 this is
    config.data.name = "yinyang"
    config.data.seed = config.get_ref("seed")  # each run seed draws its own pool and test sample
    config.data.num_per_class = 500  # 2 x 500 pool points (eqs. 10-12), a test sample of the same size
    config.model.architecture = "mlp"  # 2 -> 50 -> 50 -> 50 -> 2
    config.initial_per_class = 4  # 8 initial labels
    config.initial_epochs = 3000  # upper bound of the initial fit ...
    config.initial_patience = 200  # ... which stops once training accuracy stagnates (section 4)
    config.mode = "step_wise"  # section 4 adds pseudo-labels below theta
    config.iterations = 72
    config.acquire_every = 2  # 2 labels every 2nd iteration ...
    config.acquire_count = 2
    config.budget = 80  # ... until 80 labels
    config.chunk_size = 256
    if preset == "initial":
        config.iterations = 0
    elif preset == "semi_supervised":
        config.active = False
    elif preset == "active":
        config.semi_supervised = False
    elif preset.startswith("supervised_"):
        config.initial_per_class = int(preset.split("_")[1]) // 2
        config.iterations = 0
        config.active = config.semi_supervised = False
        config.budget = config.initial_per_class * 2
        if preset == "supervised_1000":
            config.train.upsample = 1  # every point is labeled: nothing to balance against
    return config
