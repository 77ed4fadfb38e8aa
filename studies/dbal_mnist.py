"""DBAL (Gal, Islam, Ghahramani 2017, "Deep Bayesian Active Learning with Image Data") on MNIST at the paper
setting, beside the curves their repository publishes and the test errors the paper's Table 3 quotes.

  python -m experiments.mnist_table --rows=dbal_bald,dbal_max_entropy,dbal_variation_ratio,dbal_random \
      --seeds=0,1,2 --data_dir=../shared/data/mnist                        # the runs (records in results/mnist/runs)
  python -m studies.dbal_mnist                                             # README.md, table.json, the figure

The runs are Table 3's rows, so experiments/mnist_table.py runs and records them (one per preset and seed, as
results/mnist/runs/PRESET/seed_S.json); this study reads those records alone, with Gal et al.'s curves
(studies/gal_2017_mnist.json: two per acquisition function, each the mean of 3 runs) and Table 3's figures
(experiments/mnist_report.PAPER), and writes its report to --outdir.
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
from absl import app, flags, logging

from experiments import mnist_report, provenance, reporting
from studies.curves import (accuracy_at, curve, held_out_words, labels_to_reach, load_records, policy_of,
                            reached_cell, reached_summary)

plt = provenance.pyplot()

PRESETS = {"bald": "dbal_bald", "max_entropy": "dbal_max_entropy", "variation_ratio": "dbal_variation_ratio",
           "random": "dbal_random"}  # acquisition function -> preset
ROWS = {policy: f"{preset}_1000" for policy, preset in PRESETS.items()}  # their rows in results/mnist/table.json
NAMES = {"bald": "BALD", "max_entropy": "max entropy", "variation_ratio": "variation ratio", "random": "random"}
COLOURS = {"bald": "tab:red", "max_entropy": "black", "variation_ratio": "tab:blue", "random": "tab:orange"}
BUDGET = 1000
THRESHOLDS = (90, 95)  # test accuracy in %
LABEL_COUNTS = (20, 50, 100, 200, 300, 500, 700, 1000)  # the accuracy table's columns
KERAS_BATCH = 128  # Gal et al.'s batch size: Keras trains n labels as n // 128 full batches and one of n % 128
SMALL_BATCH = 10  # a last batch of at most this many samples: "small"
ZOOM = (300, 90.0)  # the right panel: from this many labels, from this accuracy (%)
PUBLISHED = pathlib.Path(__file__).with_name("gal_2017_mnist.json")
FIGURE = "learning_curves.png"
DEVIATIONS = (
    "Network: the paper's CNN (4 convs 3x3 with LeakyReLU, dropout 0.33 after each, l2 1e-3 on every kernel); "
    "theirs 2 convs 3x3 of 32 filters, a 5x5 max-pool, dropout 0.25, dense 128 with weight decay 3.5 / N, "
    "dropout 0.5. In 50 epochs this CNN does not fit the labels an acquisition function buys: on seed 0's 1,000 "
    "it gets 92-95 % of them right, and trained on each label 5 times an epoch instead it fits them and passes "
    "Table 3 (`results/mnist/dbal_training/`).",
    "Batches: ceil(n / 128) per epoch of even size (65 + 65 for 130 labels); theirs Keras's, 128 and the rest "
    "(128 + 2). With this CNN the batch of 2 cost 16 points at 130 labels (`results/mnist/dbal_last_batch.json`).",
    "Data: the initial labels (2 per class) and the pool are the whole training set, and an acquired image "
    "leaves the pool; theirs take the initial labels from 10,000 other images, pool 40,000, and put the scored "
    "subset back, acquired images included.",
    "Runs: 3 seeds per function here; their curves are 2 files per function, each the mean of 3 runs.",
)
SOURCES = (
    "Protocol: github.com/Riashat/Deep-Bayesian-Active-Learning (commit e4e970c), "
    "`MC_Dropout_Keras/Dropout_{Bald,Max_Entropy,VarRatio}_Q10_N1000_Paper.py`, `Random_Paper_Q10_N1000.py`: "
    "20 balanced initial labels, 98 acquisitions of 10, each among a random 2,000 of the pool scored with 100 "
    "MC-dropout passes, a network trained afresh for 50 epochs (batches of 128, Adam) after each, the test "
    "accuracy of the network without dropout on the 10,000 test images.",
    "Curves: the same repository's `MC_Dropout_Keras/Results/Queries=10/Dropout_{Bald,Max_Entropy,VarRatio}"
    "{,_2}.npy` (`studies/gal_2017_mnist.json`), each its script's mean over 3 runs (every value a multiple of "
    "1 / 30,000); none for random acquisition.",
    "Table 3 of Rottmann, Kahl, Gottschalk 2018 quotes DBAL's test error with 1,000 labels: BALD 1.80 %, max "
    "entropy 1.74 %, variation ratio 1.64 %.",
)


# ------------------------------------------------------------------------------------------------ the numbers
def published() -> dict:
    """Gal et al.'s curves: {"labels": [99], "curves": {policy: {file: [99] test accuracy in [0, 1]}}, ...}."""
    return json.loads(PUBLISHED.read_text())


def published_curves(policy: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels [I] and their curves' test accuracy in % [files, I] (each file the mean of 3 runs); [0, I] for an
    acquisition function without a published curve (random)."""
    paper = published()
    files = list(paper["curves"].get(policy, {}).values())
    return np.array(paper["labels"]), 100 * np.array(files).reshape(len(files), len(paper["labels"]))


def small_last_batch(labels, most: int = SMALL_BATCH) -> list[int]:
    """The label counts n [k] (beyond the first batch, before the last network) at which Keras's last batch holds
    1 to `most` samples."""
    labels = np.asarray(labels)[1:-1]
    return [int(n) for n in labels if n > KERAS_BATCH and 0 < n % KERAS_BATCH <= most]


def drops(labels, accuracy) -> dict[int, float]:
    """{n: the mean of the neighbours' test accuracy (%) less the network's at n} for each inner n of a curve."""
    labels, accuracy = np.asarray(labels), np.asarray(accuracy)
    return {int(n): float((accuracy[i - 1] + accuracy[i + 1]) / 2 - accuracy[i])
            for i, n in enumerate(labels) if 0 < i < len(labels) - 1}


def drop_summary(curves: list) -> dict:
    """Over curves [(labels [I], accuracy [I])]: the mean drop at each small_last_batch count, and elsewhere (away
    from those counts and their neighbours, which a dip lifts)."""
    if not curves:
        return {}
    per_curve = [drops(*c) for c in curves]
    small = small_last_batch(curves[0][0])
    near = {n + step for n in small for step in (-10, 0, 10)}
    return {**{str(n): reporting.mean(d[n] for d in per_curve) for n in small},
            "elsewhere": reporting.mean(v for d in per_curve for n, v in d.items() if n not in near)}


def make_table(records: list[dict]) -> dict:
    """Per acquisition function: each seed's accuracy at BUDGET labels and at LABEL_COUNTS, its labels to reach
    THRESHOLDS, their summaries, Table 3's figure and the same read from Gal et al.'s curves."""
    table = {}
    for policy, preset in PRESETS.items():
        curves = {r["seed"]: curve(r["metrics"]) for r in records if policy_of(r) == policy}
        final = {str(s): accuracy_at(*c, BUDGET) for s, c in curves.items()}
        labels, theirs = published_curves(policy)
        mean, std = reporting.mean_std([v for v in final.values() if v is not None]) if final else (None, None)
        table[policy] = {
            "preset": preset, "row": ROWS[policy], "seeds": sorted(curves),
            "accuracy_at_budget": {"per_seed": final, "mean": mean, "std": std, "runs": len(final)},
            "labels_to_reach": {str(t): {"per_seed": (v := {str(s): labels_to_reach(*c, t) for s, c in curves.items()}),
                                         **reached_summary(list(v.values()))} for t in THRESHOLDS},
            "accuracy_at": {str(n): [accuracy_at(*curves[s], n) for s in sorted(curves)] for n in LABEL_COUNTS},
            "table_3": mnist_report.PAPER.get(ROWS[policy], (None,))[0],
            "gal": {"curves": len(theirs),
                    "accuracy_at": {str(n): [float(c[list(labels).index(n)]) for c in theirs] for n in LABEL_COUNTS},
                    "labels_to_reach": {str(t): [labels_to_reach(labels, c, t) for c in theirs] for t in THRESHOLDS},
                    "drops": drop_summary([(labels, c) for c in theirs])},
            "drops": drop_summary(list(curves.values())),
        }
    return table


# ------------------------------------------------------------------------------------------------ the figure
def _draw(axis, records: list[dict]) -> float:
    """Ours per function (mean, +-1 sample std band), Gal et al.'s mean of their curves dashed, Table 3 starred;
    returns the lowest accuracy drawn (%)."""
    low = 100.0
    for policy in PRESETS:
        group, colour = [r for r in records if policy_of(r) == policy], COLOURS[policy]
        if group:
            labels = curve(group[0]["metrics"])[0]
            values = np.array([curve(r["metrics"])[1] for r in group])
            mean = values.mean(axis=0)
            low = min(low, float(values.min()))
            axis.plot(labels, mean, color=colour, linewidth=1.4,
                      label=f"{NAMES[policy]}, this code ({len(group)} run{'s' * (len(group) > 1)})")
            if len(group) > 1:
                std = values.std(axis=0, ddof=1)
                axis.fill_between(labels, mean - std, mean + std, color=colour, alpha=0.15)
        labels, theirs = published_curves(policy)
        if len(theirs):
            low = min(low, float(theirs.mean(axis=0).min()))
            axis.plot(labels, theirs.mean(axis=0), color=colour, linestyle="--", linewidth=1.0,
                      label=f"{NAMES[policy]}, Gal et al.'s code (mean of {3 * len(theirs)} runs)")
        if (paper := mnist_report.PAPER.get(ROWS[policy], (None,))[0]) is not None:
            axis.plot([BUDGET], [paper], color=colour, marker="*", markersize=12, linestyle="none",
                      label=f"{NAMES[policy]}, Table 3 ({100 - paper:.2f} % error)")
    for threshold in THRESHOLDS:
        axis.axhline(threshold, color="grey", linestyle=":", linewidth=1)
    return low


def plot(records: list[dict], path: pathlib.Path) -> None:
    """Test accuracy against labels, 20-1,000 (left) and from ZOOM (right)."""
    figure, (whole, zoom) = plt.subplots(1, 2, figsize=(14, 6))
    for axis in (whole, zoom):
        low = _draw(axis, records)
        axis.set_xlabel("labels the network was trained on (20 initial + 10 per acquisition)")
        axis.set_ylabel("test accuracy (%)")
        axis.grid(alpha=0.3)
    whole.set_xlim(0, BUDGET + 20)
    whole.set_ylim(5 * math.floor(low / 5) - 2, 100)
    whole.set_title("20 to 1,000 labels", fontsize=10)
    whole.legend(loc="lower right", fontsize=8)
    zoom.set_xlim(ZOOM[0], BUDGET + 20)
    zoom.set_ylim(ZOOM[1], 99.5)
    zoom.set_title(f"from {ZOOM[0]} labels", fontsize=10)
    figure.suptitle("MNIST, paper setting (60,000-image pool): DBAL, active learning alone, a network trained "
                    "afresh after each acquisition of 10", fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 0.96))
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ------------------------------------------------------------------------------------------------ the report
def _gal_cell(values: list, spec: str = "d") -> str:
    """Gal et al.'s curves' values, one per curve ("-" for a function without curves)."""
    return " / ".join("not reached" if v is None else format(v, spec) for v in values) or "-"


def write_report(runs: pathlib.Path, outdir: pathlib.Path) -> dict:
    """README.md, table.json and learning_curves.png in `outdir` from the records under `runs`; returns the table."""
    records = load_records(runs, list(PRESETS.values()))
    if len(lengths := {len(r["metrics"]) for r in records}) > 1:  # no curve or table averages runs of two lengths
        raise ValueError(f"the DBAL runs under {runs} differ in length ({sorted(lengths)} metrics lines): each must "
                         "have run all its acquisitions.")
    if not records:
        raise ValueError(f"{runs} holds no runs of {', '.join(PRESETS.values())}: run them first (python -m "
                         "experiments.mnist_table --rows=dbal_bald,... --seeds=0,1,2 --data_dir=...).")
    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    table = make_table(records)
    plot(records, outdir / FIGURE)
    lines = ["# DBAL on MNIST at the paper setting, beside Gal et al. 2017 and the paper's Table 3", "",
             "Active learning alone (Gal, Islam, Ghahramani 2017): 20 balanced initial labels, then 98 acquisitions "
             "of 10 labels, each chosen among a random 2,000 unlabeled pool images scored with 100 MC-dropout "
             "passes, after each a network trained afresh for 50 epochs on the labels "
             f"(`experiments/configs/mnist.py`: `dbal_*`; the 60,000-image pool, {held_out_words(records)}). "
             "Each seed draws its own initial labels, subsets and networks; a seed's initial labels and first "
             "network are the same under every function.", "",
             f"## Test accuracy (%) with {BUDGET:,} labels", "",
             "Ours: mean (sample std) over the seeds. Table 3: DBAL's test error as Rottmann et al. quote it, as "
             "accuracy. Gal et al.'s curves: the value at 1,000 labels of each published curve (each the mean of "
             "3 runs).", "",
             "| acquisition | per seed | mean (std) | runs | Table 3 | Gal et al.'s curves |",
             "|---|---|---|---|---|---|"]
    for policy, row in table.items():
        final = row["accuracy_at_budget"]
        per_seed = ", ".join(f"s{s}: {'-' if v is None else f'{v:.2f}'}" for s, v in final["per_seed"].items())
        lines.append(f"| {NAMES[policy]} | {per_seed or '-'} | "
                     f"{reporting.cell(final['mean'], final['std']) if final['runs'] else '-'} | {final['runs']} | "
                     f"{reporting.cell(row['table_3'])} | "
                     f"{_gal_cell(row['gal']['accuracy_at'][str(BUDGET)], '.2f')} |")
    small = small_last_batch(published()["labels"])
    lines += ["", "## The last batch", "",
              f"Test accuracy (points) the network at n labels falls below the mean of its neighbours (n - 10, "
              f"n + 10), where Keras's batching leaves a last batch of at most {SMALL_BATCH} samples (n = "
              f"{KERAS_BATCH} k + r), and the mean elsewhere (away from those n and their neighbours). Gal et al.: "
              "the mean over their curves; this code "
              "(batches of even size, `train.even_batches`): the mean over its runs.", "",
              "| | " + " | ".join(f"{n} = {n // KERAS_BATCH} x {KERAS_BATCH} + {n % KERAS_BATCH}" for n in small)
              + " | elsewhere |", "|---|" + "---|" * (len(small) + 1)]
    for policy, row in table.items():
        for who, summary in ((f"{NAMES[policy]}, Gal et al.", row["gal"]["drops"]),
                             (f"{NAMES[policy]}, this code", row["drops"])):
            if summary:
                lines.append(f"| {who} | " + " | ".join(f"{summary[k]:+.2f}" for k in [*map(str, small), "elsewhere"])
                             + " |")
    lines += ["", "## Labels to reach 90 % and 95 % test accuracy", "",
              "Labels the network was trained on when its test accuracy first reached the threshold; mean (sample "
              "std) over the seeds that reached it. Gal et al.: where each published curve (a mean of 3 runs) "
              "first reaches it.", "",
              "| acquisition | accuracy | per seed | mean (std) | Gal et al.'s curves |", "|---|---|---|---|---|"]
    for policy, row in table.items():
        for threshold in map(str, THRESHOLDS):
            ours = row["labels_to_reach"][threshold]
            per_seed = ", ".join(f"s{s}: {'-' if v is None else v}" for s, v in ours["per_seed"].items())
            lines.append(f"| {NAMES[policy]} | {threshold} % | {per_seed or '-'} | "
                         f"{reached_cell(ours) if ours['runs'] else '-'} | "
                         f"{_gal_cell(row['gal']['labels_to_reach'][threshold])} |")
    lines += ["", "## Test accuracy (%) by labels", "",
              "Ours: mean (sample std) over the seeds; Gal et al.: the mean of their curves (6 runs).", "",
              "| labels | " + " | ".join(f"{NAMES[p]}, this code | {NAMES[p]}, Gal et al." for p in table) + " |",
              "|---|" + "---|---|" * len(table)]
    for count in map(str, LABEL_COUNTS):
        cells = []
        for row in table.values():
            ours, theirs = [v for v in row["accuracy_at"][count] if v is not None], row["gal"]["accuracy_at"][count]
            cells += [reporting.cell(*reporting.mean_std(ours)) if ours else "-",
                      reporting.cell(reporting.mean(theirs)) if theirs else "-"]
        lines.append(f"| {count} | " + " | ".join(cells) + " |")
    hours = sum(r["seconds"] for r in records) / 3600
    lines += ["", f"`{FIGURE}`: test accuracy against labels, ours (mean and +-1 sample std band) beside the mean of "
              "Gal et al.'s curves (dashed) and Table 3's figures (stars); left 20 to 1,000 labels, right from "
              f"{ZOOM[0]}.", "",
              "## Where this differs from Gal et al.", "", *[f"- {d}" for d in DEVIATIONS], "",
              "## Sources", "", *[f"- {s}" for s in SOURCES], "",
              f"{reporting.machines(records)} {hours:.1f} hours of runs in all. One run: `{records[0]['command']}`.",
              "", f"Generated by `python -m studies.dbal_mnist --runs={reporting.shown(runs)} "
              f"--outdir={reporting.shown(outdir)}`."]
    reporting.write_report(outdir, lines, table)
    return table


def _define_flags() -> None:
    """The study's flags, defined only when it runs (its tests import it beside other entry points)."""
    global _RUNS, _OUTDIR
    _RUNS = flags.DEFINE_string("runs", "results/mnist/runs", "experiments/mnist_table.py's records: "
                                "RUNS/dbal_*/seed_S.json.")
    _OUTDIR = flags.DEFINE_string("outdir", "results/mnist/dbal", "Where README.md, table.json and "
                                  "learning_curves.png go.")


def main(argv):
    del argv
    try:
        table = write_report(pathlib.Path(_RUNS.value), pathlib.Path(_OUTDIR.value))
    except ValueError as error:  # no runs yet: one line, no traceback
        raise app.UsageError(str(error)) from None
    logging.info("Test accuracy with %d labels: %s", BUDGET,
                 {p: row["accuracy_at_budget"]["mean"] for p, row in table.items()})


if __name__ == "__main__":
    _define_flags()
    app.run(main)
