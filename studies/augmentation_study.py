"""What closes the gap to the paper's "around 85 %" with 50 augmented labels (section 5, "Data Augmentation")?

  python -m studies.augmentation_study --data_dir=../shared/data/mnist             # every config variant
  python -m studies.augmentation_study --variants=augmented,plain --seeds=0,1,2,3,4 --data_dir=...
  python -m studies.augmentation_study --variants=keras_authors --data_dir=...     # a prototype warp
  python -m studies.augmentation_study --report_only                               # README.md only

The variants, their prototype warps, the runs and the report are studies/augmentation_variants.py. Each finished
variant is kept in OUTDIR/study.json and not run again; README.md is made from study.json alone. Run directories
with checkpoints live under --workroot.
"""

from __future__ import annotations

import pathlib
import shlex
import sys

from absl import app, flags, logging

from deepbass_jax import data
from deepbass_jax.workdir import checkpoint
from studies.augmentation_variants import (DEFAULT_VARIANTS, VARIANTS, load_study, pending, run_variant, seed_list,
                                           variant_config, write_report)

_VARIANTS = flags.DEFINE_list("variants", DEFAULT_VARIANTS, "Names in VARIANTS to run, in this order.")
_SEEDS = flags.DEFINE_list("seeds", None, "Seeds (consecutive); default 0 .. Variant.seeds - 1 of each variant.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder with the four MNIST IDX files (unset: download).")
_OUTDIR = flags.DEFINE_string("outdir", "results/mnist/augmentation", "Where study.json and README.md go.")
_WORKROOT = flags.DEFINE_string("workroot", "/tmp/deepbass_augmentation_study", "Run directories (checkpoints).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rebuild README.md from study.json.")


def main(argv):
    del argv
    outdir = pathlib.Path(_OUTDIR.value)
    outdir.mkdir(parents=True, exist_ok=True)
    if not _REPORT_ONLY.value:
        unknown = [name for name in _VARIANTS.value if name not in VARIANTS]
        if unknown:
            raise app.UsageError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}.")
        seeds = [int(s) for s in _SEEDS.value] if _SEEDS.value else None
        plan = {name: seed_list(name, seeds) for name in _VARIANTS.value}  # bad seeds fail now, not later
        study = load_study(outdir)
        todo = pending(plan, study)
        if len(todo) < len(plan):
            logging.info("In study.json already (skipped): %s", [n for n in plan if n not in todo])
        if todo:
            config = variant_config(todo[0], data_dir=_DATA_DIR.value)
            dataset = data.load(config.data)
            study["invocations"].append({"command": "python -m studies.augmentation_study "
                                         + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                                         "variants": todo})
        for name in todo:
            entry = run_variant(name, plan[name], dataset, _DATA_DIR.value, pathlib.Path(_WORKROOT.value))
            study["variants"][name] = entry
            checkpoint.write_json(outdir / "study.json", study)
            logging.info("%s: %s -> %.2f (%s) %%", name, entry["test_accuracy"], entry["mean"], entry["std"])
            write_report(outdir)
    write_report(outdir)


if __name__ == "__main__":
    app.run(main)
