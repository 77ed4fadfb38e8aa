"""Reproduces Table 1 and Figs. 1-2 of the paper (the yin-yang toy) and writes them under results/toy/.

  python -m experiments.toy_table --runs=10 --outdir=results/toy

Each row of Table 1 is a preset of experiments/configs/yinyang.py, run with seeds 0..runs-1 (the seed
re-samples the data, the 8 initial labels and the network). The four rows of Figs. 1-2 share their initial
model for a given seed. The easiest and the most ill-posed seed (highest / lowest initial accuracy) get a
four-panel figure each.
"""

import json
import pathlib
import platform
import subprocess
import time

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from deepbass_jax import active, checkpoint, plots  # noqa: E402
from experiments.configs import yinyang  # noqa: E402

_RUNS = flags.DEFINE_integer("runs", 10, "Runs (seeds 0..runs-1) per row.")
_OUTDIR = flags.DEFINE_string("outdir", "results/toy", "Where the table, per-run JSON and figures go.")
_WORKROOT = flags.DEFINE_string("workroot", "/tmp/deepbass_toy_table", "Run directories (checkpoints etc.).")

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


def _run(row: str, seed: int, workroot: pathlib.Path) -> active.Driver:
    config = yinyang.get_config(row)
    config.seed = seed
    workdir = workroot / row / f"seed_{seed}"
    if (workdir / active.SUMMARY).exists():  # a previous invocation finished it: start it afresh
        for path in sorted(workdir.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    driver = active.Driver(config, workdir)
    driver.run()
    return driver


def _figure(drivers: dict, path: pathlib.Path, title: str) -> None:
    figure, axes = plt.subplots(1, 4, figsize=(18, 4.8))
    for axis, row, panel_title in zip(axes, FIGURE_ROWS, FIGURE_TITLES):
        driver = drivers[row]
        accuracy = checkpoint.read_jsonl(driver.workdir / active.METRICS)[-1]["test_accuracy"]
        plots.draw_decision_boundary(
            axis, driver.apply_fn, driver.state.train_state.params, np.asarray(driver.pool_images),
            driver.state.labeled, driver.hidden_labels, f"{panel_title}: {100 * accuracy:.1f}%",
        )
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv):
    del argv
    outdir, workroot = pathlib.Path(_OUTDIR.value), pathlib.Path(_WORKROOT.value)
    (outdir / "runs").mkdir(parents=True, exist_ok=True)
    accuracies = {row: [] for row in PAPER}
    figure_drivers = {}  # seed -> {row: driver}, for the figure rows only
    started = time.time()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "deepbass_jax", "experiments"], capture_output=True,
                           text=True).stdout.strip()
    commit += " (with uncommitted changes)" if dirty else ""
    for seed in range(_RUNS.value):
        for row in PAPER:
            driver = _run(row, seed, workroot)
            summary = json.loads((driver.workdir / active.SUMMARY).read_text())
            accuracies[row].append(100 * summary["test_accuracy"])
            record = {"row": row, "seed": seed, "summary": summary,
                      "metrics": checkpoint.read_jsonl(driver.workdir / active.METRICS)}
            checkpoint.write_json(outdir / "runs" / f"{row}_seed{seed}.json", record)
            if row in FIGURE_ROWS:
                figure_drivers.setdefault(seed, {})[row] = driver
            logging.info("%s seed %d: %.2f%% (%.0f s so far)", row, seed, accuracies[row][-1], time.time() - started)
        # Keep only what the figures can still need: the current best and worst initial models.
        initial = {s: accuracies["initial"][s] for s in figure_drivers}
        keep = {max(initial, key=initial.get), min(initial, key=initial.get)}
        figure_drivers = {s: d for s, d in figure_drivers.items() if s in keep}

    table = {
        row: {"mean": float(np.mean(v)), "std": float(np.std(v)), "runs": len(v), "paper": PAPER[row]}
        for row, v in accuracies.items()
    }
    checkpoint.write_json(outdir / "table.json", table)
    initial = {s: accuracies["initial"][s] for s in figure_drivers}
    easy, hard = max(initial, key=initial.get), min(initial, key=initial.get)
    _figure(figure_drivers[easy], outdir / "fig1_easy.png", f"Fig. 1 style: seed {easy} (easy initial labels)")
    _figure(figure_drivers[hard], outdir / "fig2_ill_posed.png", f"Fig. 2 style: seed {hard} (ill-posed initial labels)")
    _write_readme(outdir, table, easy, hard, time.time() - started, commit)


def _write_readme(outdir: pathlib.Path, table: dict, easy: int, hard: int, seconds: float, commit: str) -> None:
    lines = [
        "# Table 1 of the paper: the yin-yang toy",
        "",
        "Generated by `experiments/toy_table.py`; do not edit by hand.",
        "",
        "| row | preset | ours: mean (std) % | runs | paper % |",
        "|---|---|---|---|---|",
    ]
    for row, entry in table.items():
        lines.append(f"| {row.replace('_', ' ')} | `yinyang.py:{row}` | {entry['mean']:.2f} ({entry['std']:.2f}) "
                     f"| {entry['runs']} | {entry['paper']:.2f} |")
    runs = table["initial"]["runs"]
    lines += [
        "",
        "Test accuracy on a held-out sample of 1,000 points drawn like the pool, after the last iteration.",
        f"Seeds 0..{runs - 1}; each seed re-samples the pool, the test sample, the 8 initial labels and the network.",
        "",
        "Commands:",
        "",
        "```bash",
        f"python -m experiments.toy_table --runs={runs} --outdir={outdir}",
        "# one run of one row, e.g.:",
        "python -m experiments.main --config=experiments/configs/yinyang.py:active_semi_supervised "
        "--config.seed=0 --workdir=/tmp/toy",
        "```",
        "",
        f"Figures: `fig1_easy.png` (seed {easy}, the highest initial accuracy) and `fig2_ill_posed.png` "
        f"(seed {hard}, the lowest), panels as in Figs. 1-2: initial model, semi-supervised, active, "
        "active semi-supervised; crosses mark ground-truth labels, the white line is the decision boundary.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {jax.devices()[0].platform.upper()}, JAX {jax.__version__}; "
        f"commit {commit}; {seconds / 60:.0f} minutes in all.",
    ]
    (outdir / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    app.run(main)
