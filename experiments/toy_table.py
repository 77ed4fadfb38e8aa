"""Reproduces Table 1 and Figs. 1-2 of the paper (the yin-yang toy) and writes them under results/toy/.

  python -m experiments.toy_table --runs=10 --outdir=results/toy
  python -m experiments.toy_table --report_only --outdir=results/toy   # README.md and table.json only

Each row of Table 1 is a preset of experiments/configs/yinyang.py, run on two sets of draws (--draws):
  authors  the pool, test sample and initial labels of the authors' own runs resample_id 0..runs-1
           (`toy_runs.authors_draw`: their deepbass.py / helpers.generate2Dcase with numpy's legacy generator,
           seed 1000 i); the network and its dropout come from seed i. One Driver per run (a Driver takes one
           data set for all its seeds).
  seeds    seeds 0..runs-1 of the preset itself (the seed re-samples the data, the initial labels and the
           network), all at once on the seed axis.
The four rows of Figs. 1-2 share their initial model for a given run. The easiest and the most ill-posed run
of the first draws (highest / lowest initial accuracy) get a four-panel figure each. Every run is kept as
`OUTDIR/runs/ROW_seedS.json` or `OUTDIR/runs/ROW_authorsS.json` (summary and metrics lines) and the
invocation's commit, device and duration as `OUTDIR/runs/invocation.json`; README.md and table.json are made
from those files alone (experiments/toy_runs.py). The figures need the trained networks, so only a full run
redraws them.
"""

import json
import pathlib
import time

from absl import app, flags, logging

from deepbass_jax import driver as driver_lib, plots
from deepbass_jax.workdir import checkpoint, runfolder
from experiments import provenance
from experiments.configs import yinyang
from experiments.toy_runs import (DRAWS, INVOCATION, PAPER, authors_sample, easy_and_hard, run_fresh, seed_records,
                                  write_report)

plt = provenance.pyplot()

_RUNS = flags.DEFINE_integer("runs", 10, "Runs (seeds 0..runs-1) per row.")
_OUTDIR = flags.DEFINE_string("outdir", "results/toy", "Where the table, per-run JSON and figures go.")
_WORKROOT = flags.DEFINE_string("workroot", "/tmp/deepbass_toy_table", "Run directories (checkpoints etc.).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rebuild README.md and table.json from OUTDIR/runs.")
_DRAWS = flags.DEFINE_list("draws", ["authors", "seeds"], "Which draws to run (DRAWS), the figures' first.")

FIGURE_ROWS = ("initial", "semi_supervised", "active", "active_semi_supervised")
FIGURE_TITLES = ("8 labels", "8 labels + pseudo-labels", "active, 80 labels", "active semi-supervised, 80 labels")


def _run(row: str, runs: int, workroot: pathlib.Path, draws: str) -> list[tuple[driver_lib.Driver, int]]:
    """Runs 0..runs-1 of `row` on `draws`: per run, the driver that ran it and the run's index in it."""
    if draws == "seeds":  # seeds 0..runs-1 at once (the seed axis)
        config = yinyang.get_config(row)
        config.seed, config.num_seeds = 0, runs
        driver = run_fresh(config, workroot / row)
        return [(driver, r) for r in range(runs)]
    handles = []
    for s in range(runs):  # the authors' draw s, the network of seed s
        config = yinyang.get_config(row)
        config.seed = s
        handles.append((run_fresh(config, workroot / f"{row}_authors" / f"run_{s}", authors_sample(s, config)), 0))
    return handles


def _figure(panels: dict, path: pathlib.Path, title: str) -> None:
    """panels: {row: (driver, run index in it)} for FIGURE_ROWS."""
    figure, axes = plt.subplots(1, 4, figsize=(18, 4.8))
    for axis, row, panel_title in zip(axes, FIGURE_ROWS, FIGURE_TITLES):
        driver, r = panels[row]
        seed, state = driver.seeds[r], driver.seed_state(r)
        accuracy = checkpoint.read_jsonl(seed.folder / runfolder.METRICS)[-1]["test_accuracy"]
        plots.draw_decision_boundary(
            axis, driver.apply_fn, state.train_state.params, seed.pool_images, state.labeled, seed.hidden_labels,
            f"{panel_title}: {100 * accuracy:.1f}%",
        )
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv):
    del argv
    outdir = pathlib.Path(_OUTDIR.value)
    if not _REPORT_ONLY.value:
        unknown = [name for name in _DRAWS.value if name not in DRAWS]
        if unknown or not _DRAWS.value:
            raise app.UsageError(f"--draws={','.join(_DRAWS.value)}: choose one or more of {', '.join(DRAWS)}.")
        _run_all(outdir, pathlib.Path(_WORKROOT.value), _RUNS.value, _DRAWS.value)
    table = write_report(outdir)
    logging.info("Table: %s", json.dumps(table, indent=1))


def _run_all(outdir: pathlib.Path, workroot: pathlib.Path, runs: int, draws_list=tuple(DRAWS)) -> None:
    """Runs every row on each of `draws_list`, keeps each run's record and draws the two figures from the first."""
    (outdir / "runs").mkdir(parents=True, exist_ok=True)
    for stale in (outdir / "runs").glob("*.json"):  # the report describes this invocation's runs only
        stale.unlink()
    started = time.time()
    figure_draws = draws_list[0]
    panels = {}
    for draws in draws_list:
        tag = DRAWS[draws][0]
        for row in PAPER:
            handles = _run(row, runs, workroot, draws)
            accuracies = []
            for s, (driver, r) in enumerate(handles):
                record = seed_records(driver)[r]
                checkpoint.write_json(outdir / "runs" / f"{row}_{tag}{s}.json", {"row": row, "draws": draws,
                                                                                   "run": s, **record})
                accuracies.append(round(100 * record["summary"]["test_accuracy"], 2))
            logging.info("%s, %s: %s %% (%.0f s so far)", row, draws, accuracies, time.time() - started)
            if draws == figure_draws and row in FIGURE_ROWS:
                panels[row] = handles
    initial_accuracy = {s: checkpoint.read_jsonl(driver.seeds[r].folder / runfolder.METRICS)[-1]["test_accuracy"]
                        for s, (driver, r) in enumerate(panels["initial"])}
    easy, hard = easy_and_hard(initial_accuracy)
    words = "the authors' draw" if figure_draws == "authors" else "seed"
    for s, path, title in ((easy, "fig1_easy.png", f"Fig. 1 style: {words} {easy} (easy initial labels)"),
                           (hard, "fig2_ill_posed.png", f"Fig. 2 style: {words} {hard} (ill-posed initial labels)")):
        _figure({row: panels[row][s] for row in FIGURE_ROWS}, outdir / path, title)
    invocation = {"commit": provenance.commit(), "device": provenance.device(), "minutes": (time.time() - started) / 60,
                  "draws": list(draws_list), "figures": figure_draws}
    checkpoint.write_json(outdir / "runs" / INVOCATION, invocation)


if __name__ == "__main__":
    app.run(main)
