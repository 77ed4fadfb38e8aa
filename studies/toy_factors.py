"""The factors of the yin-yang toy's ablation (studies/toy_ablation.py), their runs and the report, without flags.

Every (row, factor) runs seeds 0..runs-1 of the row's preset in experiments/configs/yinyang.py with ONE factor
changed (FACTORS; `preset` changes nothing). Config factors run the seeds at once (the seed axis, as
experiments/toy_table.py); data factors give each seed its own sample (a `data.yinyang` variant, or the authors'
draw of the same number) and run the seeds one after another (a Driver takes one data set for all its seeds); on
the CPU both ways give seed s exactly what `--config.seed=s` alone gives on the same data. Each (row, factor) is
kept as OUTDIR/runs/ROW__FACTOR.json: per seed the final test accuracy, the initial model's test accuracy and the
training steps taken (for rows without iterations: the steps of the initial fit). README.md and ablation.json are
made from those files alone; a later invocation adds to or replaces (row, factor) entries and keeps the others.
"""

from __future__ import annotations

import functools
import json
import pathlib
import time
from typing import Callable, NamedTuple, Optional

import ml_collections
import numpy as np

from deepbass_jax import data
from deepbass_jax.workdir import checkpoint
from experiments import provenance, reporting, toy_runs
from experiments.configs import yinyang

INVOCATIONS = "invocations.json"  # in OUTDIR/runs: every invocation's command, commit and device


class Factor(NamedTuple):
    axis: str  # what kind of setting it changes
    what: str  # the change, in words
    overrides: dict  # config field path -> value, on top of the row's preset
    # (seed, the seed's config) -> that seed's data set (None: the preset's, loaded by the driver)
    dataset: Optional[Callable[[int, ml_collections.ConfigDict], data.Dataset]] = None


def _yinyang(seed: int, config: ml_collections.ConfigDict, **kwargs) -> data.Dataset:
    """Seed `seed`'s yin-yang sample with `data.yinyang` keyword arguments `kwargs`."""
    return data.yinyang(config.data.num_per_class, seed, **kwargs)


FACTORS = {
    "preset": Factor("-", "the row's preset as it is", {}),
    # The initial fit (line 2): the authors' code fits init_epochs / weight_gt = 2000 / 20 = 100 epochs over the
    # x20-upsampled ground truth; with 8 labels (160 views) an epoch is one batch of 256, so 100 Adam steps.
    "fixed_100": Factor("initial fit", "fixed 100 epochs (authors' code; `authors_fit_` presets)",
                        {"initial_epochs": 100, "initial_patience": 0}),
    "fixed_200": Factor("initial fit", "fixed 200 epochs", {"initial_epochs": 200, "initial_patience": 0}),
    "fixed_300": Factor("initial fit", "fixed 300 epochs", {"initial_epochs": 300, "initial_patience": 0}),
    "fixed_1000": Factor("initial fit", "fixed 1000 epochs", {"initial_epochs": 1000, "initial_patience": 0}),
    "fixed_3000": Factor("initial fit", "fixed 3000 epochs (the preset's upper bound)",
                         {"initial_epochs": 3000, "initial_patience": 0}),
    "patience_50": Factor("initial fit", "training-accuracy patience 50 epochs (not 200)", {"initial_patience": 50}),
    # The data (eqs. 10-12 against the authors' helpers.generate2Dcase).
    "angle_radians": Factor("data", "eq. 10 read literally: phi ~ N(1/2, (1/3)^2) in radians, not units of pi", {},
                            functools.partial(_yinyang, angle="radians")),
    "authors_constants": Factor("data", "the authors' constants: centres (+-0.33, -+0.1), phi std 0.33", {},
                                functools.partial(_yinyang, constants="authors")),
    "test_10000": Factor("data", "a test sample of 10,000 points (not 1,000)", {},
                         functools.partial(_yinyang, test_per_class=5000)),
    "authors_draws": Factor("data", "the authors' own draws: seed i takes the pool, test sample and initial labels "
                            "of their resample_id i (legacy numpy, seed 1000 i)", {}, toy_runs.authors_sample),
    # The optimizer, for scale (neither the paper nor the authors' code suggests another setting).
    "batch_64": Factor("training", "mini-batch 64 (paper and authors: 256)", {"train.batch_size": 64}),
}


def factor_config(row: str, factor: str, seed: int = 0, num_seeds: int = 1):
    """The config of `row` with `factor` applied, for seeds seed ... seed + num_seeds - 1."""
    config = yinyang.get_config(row)
    config.update_from_flattened_dict(FACTORS[factor].overrides)
    config.seed, config.num_seeds = seed, num_seeds
    return config


def factor_dataset(factor: str, config: ml_collections.ConfigDict) -> Optional[data.Dataset]:
    """The data set of the seed `config.seed` under `factor` (None: the preset's, loaded by the driver)."""
    make = FACTORS[factor].dataset
    return None if make is None else make(config.seed, config)


def run_factor(row: str, factor: str, runs: int, workroot: pathlib.Path) -> dict:
    """Seeds 0..runs-1 of `row` under `factor`: {"row", "factor", "seeds", "accuracy", "initial_accuracy",
    "steps", "seconds"} (accuracies in %)."""
    started = time.time()
    workdir = workroot / f"{row}__{factor}"
    if FACTORS[factor].dataset is None:
        drivers = [toy_runs.run_fresh(factor_config(row, factor, 0, runs), workdir)]
    else:
        drivers = []
        for s in range(runs):
            config = factor_config(row, factor, s)
            drivers.append(toy_runs.run_fresh(config, workdir / f"seed_{s}", factor_dataset(factor, config)))
    records, steps = [], []
    for driver in drivers:
        records += toy_runs.seed_records(driver)
        steps += np.asarray(driver.states.step).reshape(-1).tolist()
    return {
        "row": row, "factor": factor, "seeds": [r["seed"] for r in records],
        "accuracy": [round(100 * r["summary"]["test_accuracy"], 2) for r in records],
        "initial_accuracy": [round(100 * r["metrics"][0]["test_accuracy"], 2) for r in records],
        "steps": [int(s) for s in steps], "seconds": round(time.time() - started, 1),
    }


def summarize(records: list[dict]) -> dict:
    """{row: {factor: {mean, std, initial_mean, initial_std, delta, steps_median, runs, seconds}}}, in %;
    delta is the mean minus the `preset` factor's mean of the same row (None without it)."""
    table = {}
    for record in records:
        mean, std = reporting.mean_std(record["accuracy"])
        initial_mean, initial_std = reporting.mean_std(record["initial_accuracy"])
        table.setdefault(record["row"], {})[record["factor"]] = {
            "mean": mean, "std": std, "initial_mean": initial_mean, "initial_std": initial_std,
            "steps_median": float(np.median(record["steps"])), "runs": len(record["accuracy"]),
            "seconds": record["seconds"]}
    for row in table.values():
        base = row.get("preset")
        for entry in row.values():
            entry["delta"] = None if base is None else entry["mean"] - base["mean"]
    return {row: dict(sorted(factors.items(), key=lambda item: list(FACTORS).index(item[0])))
            for row, factors in sorted(table.items(), key=lambda item: list(toy_runs.PAPER).index(item[0]))}


def load_records(outdir: pathlib.Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted((outdir / "runs").glob("*__*.json"))]


def write_report(outdir: pathlib.Path) -> dict:
    """README.md and ablation.json of `outdir` from `outdir/runs` alone; returns the summary."""
    records = load_records(outdir)
    if not records:
        raise FileNotFoundError(f"no runs under {outdir / 'runs'}; run the ablation first (without --report_only).")
    table = summarize(records)
    path = outdir / "runs" / INVOCATIONS
    invocations = json.loads(path.read_text()) if path.exists() else []
    lines = [
        "# Ablation of the yin-yang toy (Table 1)",
        "",
        "Generated by `studies/toy_ablation.py` from the per-(row, factor) files in `runs/`; do not edit by "
        "hand. Each cell: mean (sample std) of the final test accuracy over seeds 0..runs-1 (the last column) in %, "
        "one factor changed against the row's preset in `experiments/configs/yinyang.py`; delta: against the "
        "`preset` line of the same row (the same seeds: a paired difference); initial model: the test accuracy "
        "after the initial fit of the same runs; steps: the median number of training steps (rows without "
        "iterations: the initial fit's).",
        "",
    ]
    for row, factors in table.items():
        lines += [f"## {row} (paper: {toy_runs.PAPER[row]:.2f} %)", "",
                  "| factor | axis | change | mean (std) % | delta | initial model % | steps | runs |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, entry in factors.items():
            factor = FACTORS[name]
            delta = "" if entry["delta"] is None or name == "preset" else f"{entry['delta']:+.2f}"
            lines.append(f"| `{name}` | {factor.axis} | {factor.what} | {reporting.cell(entry['mean'], entry['std'])} "
                         f"| {delta} | {reporting.cell(entry['initial_mean'], entry['initial_std'])} | "
                         f"{entry['steps_median']:.0f} | {entry['runs']} |")
        lines.append("")
    lines += [
        "Commands (each invocation adds or replaces its (row, factor) entries):",
        "",
        "```bash",
        *(reporting.runnable(invocation["command"]) for invocation in invocations),
        f"python -m studies.toy_ablation --report_only --outdir={reporting.shown(outdir)}",
        "```",
        "",
        reporting.machines(invocations),
    ]
    reporting.write_report(outdir, lines, table, "ablation.json")
    return table


def log_invocation(outdir: pathlib.Path, rows: list[str], factors: list[str], runs: int) -> None:
    """Appends an invocation's command, commit and device to OUTDIR/runs/invocations.json."""
    path = outdir / "runs" / INVOCATIONS
    invocations = json.loads(path.read_text()) if path.exists() else []
    command = (f"python -m studies.toy_ablation --rows={','.join(rows)} --factors={','.join(factors)} "
               f"--runs={runs} --outdir={reporting.shown(outdir)}")
    invocations.append({"command": command, "commit": provenance.commit(), "device": provenance.device()})
    checkpoint.write_json(path, invocations)
