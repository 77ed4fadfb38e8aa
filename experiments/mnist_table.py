"""Runs rows of Table 2 / Table 3 (and the rows beyond the paper) and writes the results a person reads.

  python -m experiments.mnist_table --rows=cpu_supervised_100,cpu_semi_supervised_100,cpu_all_data_max_entropy \
      --seeds=0,1,2 --data_dir=../shared/data/mnist --outdir=results/mnist
  python -m experiments.mnist_table --report_only --outdir=results/mnist   # tables and figures only

Rows are presets of experiments/configs/mnist.py (`cpu_NAME`: NAME at CPU scale); the seeds of a row run at once
(config.num_seeds, the seed axis). Each finished run is kept as
`OUTDIR/runs/PRESET/seed_S.json` (config, summary, every metrics line, command, device, commit) and is not run
again; the run directories with checkpoints live under --workroot, so an interrupted invocation resumes. The
report (`README.md`, `table.json`, and per scale `learning_curves_SCALE.png`, `pseudo_labels_SCALE.png`) is made
from those JSON files alone (experiments/mnist_report.py), so every number in it comes from a checked-in run.
"""

from __future__ import annotations

import json
import pathlib

from absl import app, flags, logging

from deepbass_jax import data
from deepbass_jax.workdir import checkpoint
from experiments import mnist_report, reporting, table_runs
from experiments.configs import mnist

_ROWS = flags.DEFINE_list("rows", [], "Presets of experiments/configs/mnist.py to run, in this order.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; each re-samples the pool, initial labels and network.")
_DATASET = flags.DEFINE_enum("dataset", "mnist", ["mnist", "fashion_mnist"], "Which dataset.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder with the four IDX files (unset: download into the cache).")
_OUTDIR = flags.DEFINE_string("outdir", "results/mnist", "Where per-run JSON, the table and the figures go.")
_WORKROOT = flags.DEFINE_string("workroot", "/tmp/deepbass_mnist_table", "Run directories (checkpoints).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rebuild the report from OUTDIR/runs.")


def main(argv):
    del argv
    outdir = pathlib.Path(_OUTDIR.value)
    if not _REPORT_ONLY.value:
        if not _ROWS.value:
            raise app.UsageError("give --rows (presets of experiments/configs/mnist.py) or --report_only.")
        for preset in _ROWS.value:
            mnist.get_config(preset)  # an unknown preset fails now, not after hours of other rows
        config = mnist.get_config(_ROWS.value[0])
        config.data.name, config.data.data_dir = _DATASET.value, _DATA_DIR.value
        dataset = data.load(config.data)
        seeds = sorted(int(s) for s in _SEEDS.value)
        for preset in _ROWS.value:
            missing = [seed for seed in seeds if not (outdir / "runs" / preset / f"seed_{seed}.json").exists()]
            if len(missing) < len(seeds):
                logging.info("%s: seeds %s done before.", preset, sorted(set(seeds) - set(missing)))
            for block in table_runs.consecutive(missing):
                for record in table_runs.run_seeds(preset, block, dataset, _DATA_DIR.value, pathlib.Path(_WORKROOT.value)):
                    path = reporting.record_path(outdir, preset, record)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    checkpoint.write_json(path, record)
                    logging.info("%s seed %d: %.2f %% test accuracy.", preset, record["seed"], record["test_accuracy"])
                mnist_report.write_report(outdir)
    table = mnist_report.write_report(outdir)
    logging.info("Table: %s", json.dumps(table, indent=1))


if __name__ == "__main__":
    app.run(main)
