"""Reproduces Table 1 and Figs. 1-2 of the paper (the yin-yang toy) and writes them under results/toy/.

  python -m experiments.toy_table --runs=10 --outdir=results/toy
  python -m experiments.toy_table --report_only --outdir=results/toy   # README.md and table.json only

Each row of Table 1 is a preset of experiments/configs/yinyang.py, run with seeds 0..runs-1 (the seed
re-samples the data, the 8 initial labels and the network). The four rows of Figs. 1-2 share their initial
model for a given seed. The easiest and the most ill-posed seed (highest / lowest initial accuracy) get a
four-panel figure each. Every run is kept as `OUTDIR/runs/ROW_seedS.json` (summary and metrics lines) and the
invocation's commit, device and duration as `OUTDIR/runs/invocation.json`; README.md and table.json are made
from those files alone. The figures need the trained networks, so only a full run redraws them.
"""

import json
import pathlib
import shutil
import time

import numpy as np
from absl import app, flags, logging

from deepbass_jax import active, checkpoint, plots, runfolder
from experiments import provenance
from experiments.configs import yinyang

plt = provenance.pyplot()

_RUNS = flags.DEFINE_integer("runs", 10, "Runs (seeds 0..runs-1) per row.")
_OUTDIR = flags.DEFINE_string("outdir", "results/toy", "Where the table, per-run JSON and figures go.")
_WORKROOT = flags.DEFINE_string("workroot", "/tmp/deepbass_toy_table", "Run directories (checkpoints etc.).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rebuild README.md and table.json from OUTDIR/runs.")

PAPER = {  # Table 1, mean test accuracy over 10 runs, %
    "initial": 83.27,
    "semi_supervised": 84.33,
    "active": 90.19,
    "active_semi_supervised": 90.33,
    "supervised_80": 88.65,
    "supervised_1000": 91.37,
}
FIGURE_ROWS = ("initial", "semi_supervised", "active", "active_semi_supervised")
FIGURE_TITLES = ("8 labels", "8 labels + pseudo-labels", "active, 80 labels", "active semi-supervised, 80 labels")
INVOCATION = "invocation.json"  # in OUTDIR/runs: commit, device and minutes of the run that made the records


def _run(row: str, runs: int, workroot: pathlib.Path) -> active.Driver:
    """Seeds 0..runs-1 of `row` at once (the seed axis): the driver, after its run."""
    config = yinyang.get_config(row)
    config.seed, config.num_seeds = 0, runs
    workdir = workroot / row
    if workdir.exists():  # a previous invocation's run: start afresh
        shutil.rmtree(workdir)
    driver = active.Driver(config, workdir)
    driver.run()
    return driver


def _figure(panels: dict, path: pathlib.Path, title: str) -> None:
    """panels: {row: (driver, seed index)} for FIGURE_ROWS."""
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
        _run_all(outdir, pathlib.Path(_WORKROOT.value), _RUNS.value)
    table = write_report(outdir)
    logging.info("Table: %s", json.dumps(table, indent=1))


def _run_all(outdir: pathlib.Path, workroot: pathlib.Path, runs: int) -> None:
    """Runs every row with seeds 0..runs-1, keeps each run's record and draws the two figures."""
    (outdir / "runs").mkdir(parents=True, exist_ok=True)
    for stale in (outdir / "runs").glob("*.json"):  # the report describes this invocation's runs only
        stale.unlink()
    started = time.time()
    drivers = {}
    for row in PAPER:
        drivers[row] = driver = _run(row, runs, workroot)
        accuracies = []
        for seed in driver.seeds:
            summary = json.loads((seed.folder / runfolder.SUMMARY).read_text())
            record = {"row": row, "seed": seed.config.seed, "summary": summary,
                      "metrics": checkpoint.read_jsonl(seed.folder / runfolder.METRICS)}
            checkpoint.write_json(outdir / "runs" / f"{row}_seed{seed.config.seed}.json", record)
            accuracies.append(round(100 * summary["test_accuracy"], 2))
        logging.info("%s: %s %% (%.0f s so far)", row, accuracies, time.time() - started)
        if row not in FIGURE_ROWS:
            drivers.pop(row)
    initial_accuracy = {s.config.seed: checkpoint.read_jsonl(s.folder / runfolder.METRICS)[-1]["test_accuracy"]
                        for s in drivers["initial"].seeds}
    easy, hard = _easy_and_hard(initial_accuracy)
    for seed, path, title in ((easy, "fig1_easy.png", f"Fig. 1 style: seed {easy} (easy initial labels)"),
                              (hard, "fig2_ill_posed.png", f"Fig. 2 style: seed {hard} (ill-posed initial labels)")):
        _figure({row: (drivers[row], seed) for row in FIGURE_ROWS}, outdir / path, title)
    invocation = {"commit": provenance.commit(), "device": provenance.device(), "minutes": (time.time() - started) / 60}
    checkpoint.write_json(outdir / "runs" / INVOCATION, invocation)


def _easy_and_hard(initial_accuracy: dict) -> tuple[int, int]:
    """The seeds with the highest and the lowest initial accuracy."""
    return max(initial_accuracy, key=initial_accuracy.get), min(initial_accuracy, key=initial_accuracy.get)


def load_records(outdir: pathlib.Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted((outdir / "runs").glob("*_seed*.json"))]


def make_table(records: list[dict]) -> dict:
    """{row: {mean, std, runs, paper}}, test accuracy in %; std is the sample std over the seeds (None for one)."""
    table = {}
    for row in PAPER:
        group = sorted((r for r in records if r["row"] == row), key=lambda r: r["seed"])
        if not group:
            continue
        accuracies = np.array([100 * r["summary"]["test_accuracy"] for r in group])
        table[row] = {"mean": float(np.mean(accuracies)),
                      "std": float(np.std(accuracies, ddof=1)) if len(group) > 1 else None,
                      "runs": len(group), "paper": PAPER[row]}
    return table


def write_report(outdir: pathlib.Path) -> dict:
    """README.md and table.json of `outdir`, from `outdir/runs` alone; returns the table."""
    records = load_records(outdir)
    if not records:
        raise FileNotFoundError(f"no runs under {outdir / 'runs'}; run the table first (without --report_only).")
    if not (outdir / "runs" / INVOCATION).exists():
        raise FileNotFoundError(f"{outdir / 'runs' / INVOCATION} is missing: the run that made {outdir / 'runs'} "
                                "did not finish; run the table again (without --report_only).")
    invocation = json.loads((outdir / "runs" / INVOCATION).read_text())
    table = make_table(records)
    checkpoint.write_json(outdir / "table.json", table)
    initial = sorted((r for r in records if r["row"] == "initial"), key=lambda r: r["seed"])
    easy, hard = _easy_and_hard({r["seed"]: 100 * r["summary"]["test_accuracy"] for r in initial})
    lines = [
        "# Table 1 of the paper: the yin-yang toy",
        "",
        "Generated by `experiments/toy_table.py` from the per-run files in `runs/`; do not edit by hand.",
        "",
        "| row | preset | ours: mean (std) % | runs | paper % |",
        "|---|---|---|---|---|",
    ]
    for row, entry in table.items():
        ours = f"{entry['mean']:.2f}" + (f" ({entry['std']:.2f})" if entry["std"] is not None else "")
        lines.append(f"| {row.replace('_', ' ')} | `yinyang.py:{row}` | {ours} | {entry['runs']} | "
                     f"{entry['paper']:.2f} |")
    runs = max(entry["runs"] for entry in table.values())
    lines += [
        "",
        "Test accuracy on a held-out sample of 1,000 points drawn like the pool, after the last iteration; std is "
        "the sample standard deviation over the runs.",
        f"Seeds 0..{runs - 1}; each seed re-samples the pool, the test sample, the 8 initial labels and the network.",
        "",
        "Commands:",
        "",
        "```bash",
        f"python -m experiments.toy_table --runs={runs} --outdir={provenance.shown(outdir)}",
        "# rebuild README.md and table.json from runs/:",
        f"python -m experiments.toy_table --report_only --outdir={provenance.shown(outdir)}",
        "# one run of one row, e.g.:",
        "python -m experiments.main --config=experiments/configs/yinyang.py:active_semi_supervised "
        "--config.seed=0 --workdir=/tmp/toy",
        "```",
        "",
        f"Figures: `fig1_easy.png` (seed {easy}, the highest initial accuracy) and `fig2_ill_posed.png` "
        f"(seed {hard}, the lowest), panels as in Figs. 1-2: initial model, semi-supervised, active, "
        "active semi-supervised; crosses mark ground-truth labels, the white line is the decision boundary.",
        "",
        f"Machine: {invocation['device']}; commit {invocation['commit']}; {invocation['minutes']:.0f} minutes in all.",
    ]
    (outdir / "README.md").write_text("\n".join(lines) + "\n")
    return table


if __name__ == "__main__":
    app.run(main)
