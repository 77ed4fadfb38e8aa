"""Runs one DeepBASS experiment: the only module with flags.

  python -m experiments.main --config=experiments/configs/yinyang.py --workdir=/tmp/yinyang
  python -m experiments.main --config=experiments/configs/mnist.py:all_data_max_entropy \
      --config.data.data_dir=PATH/TO/mnist --workdir=/tmp/mnist
  python -m experiments.main --config=experiments/configs/yinyang.py --config.num_seeds=10 --workdir=/tmp/seeds

Running the same command again resumes an unfinished run from its last checkpoint.
"""

import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from deepbass_jax import active, checkpoint, config as config_lib, oracle, rundir, runfolder

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
    except (rundir.WorkdirError, checkpoint.CheckpointError) as error:  # busy, unwritable, full, no checkpoint
        sys.exit(f"error: {error}")
    for seed_summary, folder in zip(summary if isinstance(summary, list) else [summary], _seed_folders()):
        accuracy = seed_summary["test_accuracy"]
        shown = "no test set" if accuracy is None else f"test accuracy {accuracy:.4f}"
        print(f"{shown} with {seed_summary['labels']} labels; see {folder}")


def _seed_folders():
    config = _CONFIG.value
    return [runfolder.seed_folder(_WORKDIR.value, config.seed + r, config.num_seeds) for r in range(config.num_seeds)]


def parse_flags(argv, flag_values=flags.FLAGS):
    """Parses the command line; a bad --config (unknown preset or field) raises ValueError with one clear line
    instead of ml_collections' traceback."""
    try:
        return flag_values(argv)
    except (AttributeError, KeyError) as error:  # ml_collections: --config.PATH names no field of the config
        raise ValueError(_unknown_field_message(argv, error)) from error
    except flags.IllegalFlagValueError as error:
        match = re.match(r"flag (--\S+): Error whilst parsing config file", str(error))
        if match is None:
            raise
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = re.sub(r"^\w+(Error|Exception): ", "", lines[-1])  # the config file's own message, last
        raise ValueError(f"{match.group(1)}: {reason}") from error


def _unknown_field_message(argv, error: Exception) -> str:
    """--config.PATH=... names no field: which override, which part of it, and the fields there are."""
    while error.args and isinstance(error.args[0], Exception):  # AttributeError(KeyError("'name'\nDid you..."))
        error = error.args[0]
    text = str(error.args[0]) if error.args else str(error)
    key = re.match(r"'?([^'\n]*)", text).group(1)
    suggestion = next((f" ({line.strip()})" for line in text.splitlines() if line.startswith("Did you mean")), "")
    overrides = [m.group(1) for arg in argv if (m := re.match(r"^--?config\.([\w.]+)(=|$)", arg))]
    path = next((o for o in overrides if key in o.split(".")), key)
    parent = path.split(".")[: path.split(".").index(key)] if key in path.split(".") else []
    where = ".".join(["config", *parent])
    try:
        node = config_lib.default_config()
        for part in parent:
            node = node[part]
        fields = f"; the fields of {where} are {', '.join(sorted(node.keys()))}."
    except (KeyError, AttributeError, TypeError):  # a field a config file added: list nothing rather than fail
        fields = f"; see the fields of {where} in the config file and deepbass_jax/*.py default_config()."
    return f"--config.{path}: unknown config field {key!r}{suggestion}{fields}"


def _parse_flags_with_usage(argv):
    """absl's flag parsing for app.run, with `parse_flags`' messages for a bad --config."""
    try:
        return parse_flags(argv)
    except (ValueError, flags.Error) as error:
        sys.stderr.write(f"FATAL Flags parsing error: {error}\nPass --helpshort or --helpfull to see help on flags.\n")
        sys.exit(1)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags_with_usage)
