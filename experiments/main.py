"""Runs one DeepBASS experiment (Algorithm 3.1); the same command again resumes it from its last checkpoint.

  # the paper's yin-yang toy (Table 1), no data needed
  python -m experiments.main --config=experiments/configs/yinyang.py --workdir=/tmp/yinyang
  # a row of Table 2 on MNIST's IDX files
  python -m experiments.main --config=experiments/configs/mnist.py:all_data_max_entropy \
      --config.data.data_dir=PATH/TO/mnist --workdir=/tmp/mnist
  # your folder of images (class subfolders = labels you have), you answer the queries on a web page
  python -m experiments.main --config=experiments/configs/own.py --config.data.name=folder \
      --config.data.path=DIR --workdir=/tmp/mine
  # your .npz (x, optional y with -1 for unknown), a person as the oracle
  python -m experiments.main --config=experiments/configs/own.py --config.data.name=npz \
      --config.data.path=mine.npz --workdir=/tmp/mine
  # every config field and its value, without running
  python -m experiments.main --config=experiments/configs/own.py --show_config

Any field can be set as --config.FIELD=VALUE (--show_config lists them). A run that waits for a person's labels
stops with status 75 and says where the round is: answer it, then run the same command again. An error in the
data, the config or the answers prints one line (--debug: the whole traceback); Ctrl-C stops with status 130.
Several processes (hosts): the same command on each with --coordinator_address=host0:12345 --num_processes=2
--process_id=0 (1, ...), or --distributed under SLURM.
"""

import logging as std_logging
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from deepbass_jax import config as config_lib, driver as driver_lib, oracle
from deepbass_jax.parallel import distributed
from deepbass_jax.workdir import checkpoint, guard, runfolder

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file, optionally with :preset.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: config, metrics, oracle log, checkpoints, plots.")
_SHOW_CONFIG = flags.DEFINE_bool("show_config", False, "Print every config field with its value and exit.")
_DEBUG = flags.DEFINE_bool("debug", False, "On an error, show the whole traceback instead of one message.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Several processes: host:port of process 0's "
                                   "coordinator, the same on every process (with --num_processes, --process_id).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Several processes: how many run together.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Several processes: this one's number, 0 .. num_processes - 1.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Several processes, set up by the cluster (SLURM, ...): "
                                 "jax.distributed finds the coordinator, the count and the id itself.")
flags.mark_flags_as_required(["config"])
flags.register_validator("workdir", lambda workdir: workdir is not None or flags.FLAGS["show_config"].value,
                         "--workdir is required (the run's folder), except with --show_config.")

# What a user can fix: bad data, config or answers (ValueError and its kinds: DataError, ConfigError, OracleError),
# an unusable workdir or checkpoint, numbers gone NaN. Their messages name the problem and the remedy.
USER_ERRORS = (ValueError, guard.WorkdirError, checkpoint.CheckpointError, FloatingPointError)
INTERRUPTED = 130  # the shell's status for a process ended by Ctrl-C (128 + SIGINT)
WAITING_FOR_LABELS = 75  # sysexits' EX_TEMPFAIL: nothing failed; run the same command again once labels are in


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _SHOW_CONFIG.value:
        print(_CONFIG.value)
        return
    driver = None
    std_logging.getLogger("jax").setLevel(std_logging.WARNING)  # e.g. "Unable to initialize backend 'tpu'"
    if _DISTRIBUTED.value or _COORDINATOR.value or _NUM_PROCESSES.value:
        distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    try:
        driver = driver_lib.Driver(_CONFIG.value, _WORKDIR.value)
        summary = driver.run()
    except driver_lib.RunFinished as finished:
        print(finished)
        return
    except oracle.LabelsPending as pending:
        _leave(f"waiting for labels: {pending}\n", WAITING_FOR_LABELS)
    except KeyboardInterrupt:
        _leave(_interrupted(driver), INTERRUPTED)
    except distributed.ProcessLost as lost:
        _leave(f"error: {lost}. The run stopped on every process; start the same launch again on every process to "
               f"resume from {_checkpoint_after(driver)}.\n", 1)
    except USER_ERRORS as error:
        if _DEBUG.value:
            raise
        if distributed.current().count > 1:  # the others stop when their next exchange with this process fails
            _leave(f"error: {error}\n", 1)
        sys.exit(f"error: {error}")
    if summary is None:  # a process other than 0: process 0 reports
        return
    for seed_summary, folder in zip(summary if isinstance(summary, list) else [summary], _seed_folders()):
        accuracy = seed_summary["test_accuracy"]
        shown = "no test set" if accuracy is None else f"test accuracy {accuracy:.4f}"
        print(f"{shown} with {seed_summary['labels']} labels; see {folder}")


def _leave(message: str, status: int) -> None:
    """Prints `message` and ends the process at once. Not sys.exit: XLA's threads may still run work dispatched
    before an interrupt, and tearing the interpreter down under them crashes (seen: SIGSEGV); with several
    processes, jax.distributed's shutdown would wait for the lost one. Every file of the run is written atomically
    and the kernel drops the workdir lock, so nothing is lost by leaving at once."""
    sys.stderr.write(message)
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(status)


def _checkpoint_after(driver) -> str:
    if driver is None or driver.checkpointed is None:
        return "the start (there was no checkpoint yet)"
    return "the checkpoint after " + ("the initial fit" if driver.checkpointed == 0 else
                                      f"iteration {driver.checkpointed}")


def _interrupted(driver) -> str:
    if driver is None or driver.checkpointed is None:
        return "Interrupted before the first checkpoint: the same command starts the run again.\n"
    return f"Interrupted: run the same command again to resume from {_checkpoint_after(driver)}.\n"


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
