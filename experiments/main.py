"""Runs one DeepBASS experiment: the only module with flags.

  python -m experiments.main --config=experiments/configs/yinyang.py --workdir=/tmp/yinyang
  python -m experiments.main --config=experiments/configs/mnist.py:all_data_max_entropy \
      --config.data.data_dir=PATH/TO/mnist --workdir=/tmp/mnist

Running the same command again resumes an unfinished run from its last checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from deepbass_jax import active, oracle

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file, optionally with :preset.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: config, metrics, oracle log, checkpoints, plots.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        summary = active.run(_CONFIG.value, _WORKDIR.value)
    except active.RunFinished as finished:
        logging.warning("%s", finished)
        return
    except oracle.LabelsPending as pending:
        logging.warning("%s", pending)
        return
    print(f"test accuracy {summary['test_accuracy']:.4f} with {summary['labels']} labels; see {_WORKDIR.value}")


if __name__ == "__main__":
    app.run(main)
