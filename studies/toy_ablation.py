"""Ablation of the yin-yang toy (Table 1): which setting moves the `initial` and `semi_supervised` rows?

  python -m studies.toy_ablation --outdir=results/toy/ablation
  python -m studies.toy_ablation --rows=supervised_80,supervised_1000 --factors=preset,fixed_100,fixed_1000
  python -m studies.toy_ablation --report_only --outdir=results/toy/ablation   # README.md, ablation.json

Every (row, factor) runs seeds 0..runs-1 of the row's preset with ONE factor changed (studies/toy_factors.py:
the factors, the runs and the report) and is kept as OUTDIR/runs/ROW__FACTOR.json; README.md and ablation.json
are made from those files alone.
"""

from __future__ import annotations

import json
import pathlib

from absl import app, flags, logging

from deepbass_jax.workdir import checkpoint
from experiments import reporting
from experiments.configs import yinyang
from studies.toy_factors import FACTORS, log_invocation, run_factor, write_report

_ROWS = flags.DEFINE_list("rows", ["initial", "semi_supervised"], "Rows of Table 1 (presets of yinyang.py).")
_FACTORS = flags.DEFINE_list("factors", None, "Factors to run (names in FACTORS; default all).")
_RUNS = flags.DEFINE_integer("runs", 10, "Runs (seeds 0..runs-1) per (row, factor).")
_OUTDIR = flags.DEFINE_string("outdir", "results/toy/ablation", "Where per-run JSON, ablation.json and README.md go.")
_WORKROOT = flags.DEFINE_string("workroot", "/tmp/deepbass_toy_ablation", "Run directories (checkpoints etc.).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rebuild README.md and ablation.json from OUTDIR/runs.")


def main(argv):
    del argv
    outdir = pathlib.Path(_OUTDIR.value)
    if not _REPORT_ONLY.value:
        factors = _FACTORS.value or list(FACTORS)
        unknown = [name for name in factors if name not in FACTORS] + \
                  [row for row in _ROWS.value if row not in yinyang.PRESETS]
        if unknown:
            raise app.UsageError(f"unknown factor(s) or row(s) {unknown}; factors: {', '.join(FACTORS)}; rows: "
                                 f"{', '.join(yinyang.PRESETS)}.")
        (outdir / "runs").mkdir(parents=True, exist_ok=True)
        for row in _ROWS.value:
            for factor in factors:
                record = run_factor(row, factor, _RUNS.value, pathlib.Path(_WORKROOT.value))
                checkpoint.write_json(outdir / "runs" / f"{row}__{factor}.json", record)
                logging.info("%s / %s: %s %% %s in %.0f s", row, factor,
                             reporting.cell(*reporting.mean_std(record["accuracy"])), record["accuracy"],
                             record["seconds"])
        log_invocation(outdir, _ROWS.value, factors, _RUNS.value)
    table = write_report(outdir)
    logging.info("Ablation: %s", json.dumps(table, indent=1))


if __name__ == "__main__":
    app.run(main)
