"""BatchBALD against BALD on MNIST at CPU scale, on the same seeds, beside Kirsch, van Amersfoort, Gal 2019
("BatchBALD: Efficient and Diverse Batch Acquisition for Deep Bayesian Active Learning": Table 1, the labels needed
for 90 % / 95 % test accuracy, and the MNIST figure of accuracy against acquired labels).

  python -m studies.batchbald_mnist --seeds=0,1,2 --data_dir=../shared/data/mnist   # runs, then the report
  python -m studies.batchbald_mnist --report_only                                   # README.md, figure only

Runs cpu_bald_mnist and cpu_batchbald_mnist (experiments/configs/mnist.py: 20 balanced labels, 28 acquisitions of
10, a network trained afresh after each, a 6,000-image pool) for every seed; a seed's pool, initial labels and
initial network are the same under both policies. Each finished run is kept as OUTDIR/runs/PRESET/seed_S.json (the
records of experiments/mnist_table.py) and not run again; run directories with checkpoints live under --workroot,
so an interrupted invocation resumes. README.md, table.json and learning_curves.png are made from those records
and the published runs (studies/kirsch_2019_mnist.json) alone.
"""

from __future__ import annotations

import json
import math
import pathlib
import shlex
import sys
from typing import Optional

import numpy as np
from absl import app, flags, logging

from deepbass_jax import data
from deepbass_jax.workdir import checkpoint
from experiments import provenance, reporting, table_runs
from experiments.configs import mnist
from studies import curves as curves_lib
from studies.curves import (accuracy_at, curve, held_out_words, labels_to_reach, policy_of, reached_cell,
                            reached_summary, scale_words)

# The flags replace experiments/mnist_table.py's of the same names (imported above for run_seeds): this study's
# defaults and help.
plt = provenance.pyplot()

PRESETS = {"bald": "cpu_bald_mnist", "batchbald": "cpu_batchbald_mnist"}  # policy -> preset, in run order
NAMES = {"bald": "BALD", "batchbald": "BatchBALD"}
COLOURS = {"bald": "tab:purple", "batchbald": "tab:orange"}
THRESHOLDS = (90, 95)  # test accuracy in %
LABEL_COUNTS = (20, 50, 100, 150, 200, 250, 290, 300)  # the accuracy table's columns
PUBLISHED = pathlib.Path(__file__).with_name("kirsch_2019_mnist.json")
FIGURE = "learning_curves.png"
SOURCES = (
    "Protocol and runs: github.com/BlackHC/BatchBALD (commit 2ab8d74): `src/run_experiment.py`, "
    "`src/dataset_enum.py`, `src/train_model.py`, `src/mnist_model.py`, `src/multi_bald.py`, and the MNIST runs "
    "`laaos_results/paper/mnist_{multibald,independent}_bald_k100_b10_*.py` (6 seeds each; their arguments: "
    "num_inference_samples 100, available_sample_k 10, epochs 30, early_stopping_patience 3, epoch_samples 5056, "
    "batch_size 64, validation_set_size 1024, target_num_acquired_samples 300, target_accuracy 0.96, 20 fixed "
    "initial samples, 2 per class, the same for every seed).",
    "Table 1 (labels for 90 % / 95 % accuracy, quartiles) as `notebooks/paper/visualizations.ipynb` prints it for "
    "these runs, in the cell that draws `MNIST_BALD_BATCHBALD.png` (the paper's MNIST figure: BatchBALD and BALD "
    "with acquisition size 10, BALD with size 1). Its counts are one acquisition short of the labels the network "
    "was trained on (`src/al_notebook/results_loader.py`: `get_marks` takes the index before the first batch "
    "label whose accuracy reaches the threshold): recomputed from the runs, the labels trained on are Table 1 "
    "+ 10. Their runs stop at 96 % (target_accuracy): a stopped run keeps its last accuracy, as their notebook "
    "fills it.",
)
DEVIATIONS = (
    "Pool: a seeded subset of the training set (CPU scale: 6,000 images); theirs the 58,956 training images left "
    "after 20 initial labels and 1,024 validation images.",
    "Network: the paper's CNN (4 convs 3x3, LeakyReLU, dropout 0.33, l2 1e-3); theirs 2 convs 5x5 (32, 64) with "
    "max-pool, dense 128, dropout 0.5, no weight decay.",
    "Training: a fresh network after each acquisition, 6 epochs of the labels x 20 in batches of 64 (120 passes, "
    "what their early-stopped network had seen: median 126 BatchBALD / 110 BALD passes over their runs' "
    "iterations); theirs up to 30 epochs of 5,056 draws, early stopping with patience 3 on 1,024 validation "
    "images, the best epoch kept. No validation set here. Measured with this network (supervised on balanced "
    "labels, seeds 0-2, 6,000-image pool): 30 epochs instead of 6 raise the test accuracy from 49.4 to 53.1 % "
    "with 20 labels and from 79.2 to 80.3 % with 100.",
    "BatchBALD chooses among the 1,000 samples of top BALD (config.batch_candidates) from 100 consistent passes; "
    "theirs scored the whole pool. The joint is exact up to 10,000 configurations (4 chosen), then estimated "
    "from 10,000 sampled ones; theirs up to 40,000.",
    "Initial labels: 2 per class drawn per seed; theirs one fixed set for all runs.",
    "Test accuracy: the network without dropout on the 10,000 test images; theirs the mean of 100 MC-dropout "
    "passes.",
)


# ------------------------------------------------------------------------------------------------ the numbers
def published() -> dict:
    """Kirsch et al.'s MNIST runs (acquisition size 10) and Table 1: {"table_1", "runs": {policy: {seed: ...}}}."""
    return json.loads(PUBLISHED.read_text())


def published_curves(policy: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels [I] and their runs' test accuracy in % [runs, I]; a run that stopped (at 96 %) keeps its last value."""
    runs = list(published()["runs"][policy].values())
    labels = max((np.array(r["labels"]) for r in runs), key=len)
    values = np.array([r["test_accuracy"] + r["test_accuracy"][-1:] * (len(labels) - len(r["labels"])) for r in runs])
    return labels, 100 * values


def load_records(outdir: pathlib.Path) -> list[dict]:
    """The study's records under OUTDIR/runs, the policies in PRESETS order, then by seed."""
    return curves_lib.load_records(pathlib.Path(outdir) / "runs", list(PRESETS.values()))


def batch_diversity(outdir: pathlib.Path) -> dict:
    """{policy: {seed: mean number of distinct classes among each acquisition's labels}} from the runs' oracle logs
    kept as OUTDIR/oracle_logs/PRESET/seed_S.jsonl (a run folder's oracle_log.jsonl; the initial labels left out)."""
    diversity = {}
    for policy, preset in PRESETS.items():
        for path in sorted((pathlib.Path(outdir) / "oracle_logs" / preset).glob("seed_*.jsonl")):
            batches: dict = {}
            for entry in checkpoint.read_jsonl(path):
                if entry["iteration"] > 0:
                    batches.setdefault(entry["iteration"], set()).add(entry["label"])
            seed = int(path.stem.removeprefix("seed_"))
            diversity.setdefault(policy, {})[seed] = float(np.mean([len(b) for b in batches.values()]))
    return diversity


def make_table(records: list[dict]) -> dict:
    """Per policy: each seed's labels to 90 / 95 % and accuracy at LABEL_COUNTS, their summaries, and Kirsch et
    al.'s (Table 1 as printed, and the same computed from their runs in labels trained on)."""
    paper, table = published(), {}
    for policy in PRESETS:
        runs = [r for r in records if policy_of(r) == policy]
        curves = {r["seed"]: curve(r["metrics"]) for r in runs}
        theirs = published_curves(policy)
        ours_reach = {str(t): {str(s): labels_to_reach(*c, t) for s, c in curves.items()} for t in THRESHOLDS}
        their_reach = {str(t): [labels_to_reach(theirs[0], values, t) for values in theirs[1]] for t in THRESHOLDS}
        table[policy] = {
            "preset": PRESETS[policy], "seeds": sorted(curves),
            "labels_to_reach": {t: {"per_seed": v, **reached_summary(list(v.values()))} for t, v in ours_reach.items()},
            "accuracy_at": {str(n): [accuracy_at(*curves[s], n) for s in sorted(curves)] for n in LABEL_COUNTS},
            "kirsch": {
                "table_1": paper["table_1"][policy],
                "labels_to_reach": {t: {"per_run": v, **reached_summary(v)} for t, v in their_reach.items()},
                "accuracy_at": {str(n): (reporting.mean(theirs[1][:, list(theirs[0]).index(n)])
                                         if n in theirs[0] else None) for n in LABEL_COUNTS},
            },
        }
    return table


# ------------------------------------------------------------------------------------------------ the figure
def plot(records: list[dict], path: pathlib.Path) -> list[str]:
    """Test accuracy against labels: ours per policy (mean, +-1 sample std band; runs of one length per curve),
    Kirsch et al.'s median of 6 runs dashed, their Table 1 medians (quartile whiskers) at 90 / 95 %, in labels
    trained on. Returns the curves' labels."""
    figure, axis = plt.subplots(figsize=(9, 6))
    drawn, low = [], 100.0
    for policy in PRESETS:
        groups: dict = {}
        for record in (r for r in records if policy_of(r) == policy):
            groups.setdefault(len(record["metrics"]), []).append(record)
        for length, group in sorted(groups.items()):
            labels = curve(group[0]["metrics"])[0]
            values = np.array([curve(r["metrics"])[1] for r in group])
            mean = values.mean(axis=0)
            more = f", {length - 1} acquisitions" if len(groups) > 1 else ""
            label = f"{NAMES[policy]}, this code ({len(group)} run{'s' if len(group) > 1 else ''}{more})"
            axis.plot(labels, mean, color=COLOURS[policy], marker="o", markersize=3, label=label)
            if len(group) > 1:
                std = values.std(axis=0, ddof=1)
                axis.fill_between(labels, mean - std, mean + std, color=COLOURS[policy], alpha=0.2)
            drawn.append(label)
            low = min(low, float(values.min()))
        labels, theirs = published_curves(policy)
        label = f"{NAMES[policy]}, Kirsch et al.: median of 6 runs (58,956-image pool)"
        axis.plot(labels, np.median(theirs, axis=0), color=COLOURS[policy], linestyle="--", linewidth=1.2,
                  label=label)
        drawn.append(label)
        low = min(low, float(np.median(theirs, axis=0).min()))
        offset = 0.4 if policy == "batchbald" else -0.4  # the two policies' marks side by side at a threshold
        for threshold in THRESHOLDS:
            q25, q50, q75 = [None if q is None else q + 10 for q in published()["table_1"][policy][str(threshold)]]
            right = (q75 if q75 is not None else 300) - q50
            axis.errorbar([q50], [threshold + offset], xerr=[[q50 - q25], [right]], color=COLOURS[policy],
                          marker="D", markersize=6, capsize=4, linestyle="none",
                          label=(f"{NAMES[policy]}, Kirsch et al. Table 1: median (quartiles) + 10"
                                 if threshold == THRESHOLDS[0] else None))
    for threshold in THRESHOLDS:
        axis.axhline(threshold, color="grey", linestyle=":", linewidth=1)
    axis.set_title(f"MNIST, {scale_words(records)}: BatchBALD vs BALD, 10 labels per acquisition", fontsize=11)
    axis.set_xlabel("labels the network was trained on (20 initial + 10 per acquisition)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_xlim(15, 305)
    axis.set_ylim(max(0.0, 5 * math.floor(low / 5) - 2), 100)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    figure.text(0.01, 0.005, "Table 1's counts are one acquisition short of the labels trained on (see README); "
                "a whisker to the right edge: not reached by 290 labels.", fontsize=7, color="dimgrey")
    figure.tight_layout(rect=(0, 0.02, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return drawn


# ------------------------------------------------------------------------------------------------ the report
def _quartiles(values: list) -> str:
    return " / ".join("not reached" if v is None else str(v) for v in values)


def write_report(outdir: pathlib.Path) -> dict:
    """README.md, table.json and learning_curves.png from OUTDIR/runs; returns the table."""
    outdir = pathlib.Path(outdir)
    records = load_records(outdir)
    if not records:
        raise ValueError(f"{outdir / 'runs'} holds no runs of {', '.join(PRESETS.values())}: run the study first "
                         "(python -m studies.batchbald_mnist --data_dir=...).")
    table = make_table(records)
    plot(records, outdir / FIGURE)
    lines = [f"# BatchBALD against BALD on MNIST, {scale_words(records)}, beside Kirsch et al. 2019", "",
             "Active learning alone: 20 balanced initial labels, then 10 labels per acquisition up to "
             f"{records[0]['config']['budget']}, a network trained afresh after each acquisition "
             "(`experiments/configs/mnist.py`: `cpu_batchbald_mnist`, `cpu_bald_mnist`; "
             f"{scale_words(records)}, {held_out_words(records)}). A seed's pool, initial labels and "
             "initial network are the same under both policies. Numbers of Kirsch, van Amersfoort, Gal 2019 "
             "(\"BatchBALD\", Table 1 and the MNIST figure) come from their published runs (sources below; "
             "`studies/kirsch_2019_mnist.json`).", "",
             "## Labels to reach 90 % and 95 % test accuracy", "",
             "Labels the network was trained on when its test accuracy first reached the threshold (the 20 initial "
             "ones included); mean (sample std) over the seeds that reached it. Kirsch et al.: Table 1 as printed "
             "(quartiles 25 / 50 / 75 % of 6 runs; one acquisition short of the labels trained on), and the mean "
             "of their 6 runs in labels trained on.", "",
             "| policy | accuracy | per seed | mean (std) | Kirsch et al. Table 1 (25 / 50 / 75 %) | "
             "Kirsch et al. runs, mean (std) |", "|---|---|---|---|---|---|"]
    for policy, row in table.items():
        for threshold in map(str, THRESHOLDS):
            ours, theirs = row["labels_to_reach"][threshold], row["kirsch"]
            per_seed = ", ".join(f"s{s}: {'-' if v is None else v}" for s, v in ours["per_seed"].items())
            lines.append(f"| {NAMES[policy]} | {threshold} % | {per_seed or '-'} | "
                         f"{reached_cell(ours) if ours['runs'] else '-'} | "
                         f"{_quartiles(theirs['table_1'][threshold])} | "
                         f"{reached_cell(theirs['labels_to_reach'][threshold])} |")
    paired = [(s, table["batchbald"]["labels_to_reach"][t]["per_seed"][str(s)],
               table["bald"]["labels_to_reach"][t]["per_seed"][str(s)], t)
              for t in map(str, THRESHOLDS) for s in table["batchbald"]["seeds"] if s in table["bald"]["seeds"]]
    if paired:
        lines += ["", "Paired on the seeds both ran, BatchBALD - BALD in labels (negative: BatchBALD needs fewer): " +
                  "; ".join(f"{t} % s{s}: " + ("-" if None in (b, a) else f"{b - a:+d}") for s, b, a, t in paired)
                  + "."]
    diversity = batch_diversity(outdir)
    if diversity:
        lines += ["", "## Diversity of the batches", "",
                  "Distinct classes among each acquisition's 10 labels, mean over a run's acquisitions "
                  "(`oracle_logs/`, the runs' oracle_log.jsonl):", ""]
        lines += [f"- {NAMES[policy]}: " + ", ".join(f"s{s}: {v:.2f}" for s, v in sorted(seeds.items()))
                  + f"; mean {np.mean(list(seeds.values())):.2f}" for policy, seeds in diversity.items()]
        table = {policy: {**row, "batch_diversity": {str(s): v for s, v in diversity.get(policy, {}).items()}}
                 for policy, row in table.items()}
    lines += ["", "## Test accuracy (%) by labels", "",
              "Ours: mean (sample std) over the seeds; Kirsch et al.: mean of their 6 runs (a run stopped at 96 % "
              "keeps its last accuracy; their last network had 290 labels).", "",
              "| labels | " + " | ".join(f"{NAMES[p]}, this code | {NAMES[p]}, Kirsch et al." for p in table) + " |",
              "|---|" + "---|---|" * len(table)]
    for count in map(str, LABEL_COUNTS):
        cells = []
        for row in table.values():
            values = [v for v in row["accuracy_at"][count] if v is not None]
            cells += [reporting.cell(*reporting.mean_std(values)) if values else "-",
                      reporting.cell(row["kirsch"]["accuracy_at"][count])]
        lines.append(f"| {count} | " + " | ".join(cells) + " |")
    hours = sum(r["seconds"] for r in records) / 3600
    lines += ["", f"`{FIGURE}`: test accuracy against labels, ours (mean and +-1 sample std band) beside Kirsch et "
              "al.'s median curve (dashed) and their Table 1 medians with quartile whiskers, moved to labels "
              "trained on (+ 10).", "",
              "## Where this differs from Kirsch et al.", "", *[f"- {d}" for d in DEVIATIONS], "",
              "## Sources", "", *[f"- {s}" for s in SOURCES], "",
              f"{reporting.machines(records)} {hours:.1f} hours of runs in all. One run: `{records[0]['command']}`.",
              "", f"Generated by `python -m studies.batchbald_mnist --seeds=... --data_dir=... "
              f"--outdir={reporting.shown(outdir)}` (`--report_only` for this report alone)."]
    reporting.write_report(outdir, lines, table)
    return table


# ------------------------------------------------------------------------------------------------ the runs
def run(outdir: pathlib.Path, seeds: list[int], data_dir: Optional[str], workroot: pathlib.Path) -> None:
    """Runs each preset of PRESETS for the seeds not yet recorded (consecutive seeds at once), writing each
    record as it comes and the report after each block."""
    config = mnist.get_config(PRESETS["batchbald"])
    config.data.data_dir = data_dir
    dataset = data.load(config.data)
    for preset in PRESETS.values():
        missing = [s for s in seeds if not (outdir / "runs" / preset / f"seed_{s}.json").exists()]
        if len(missing) < len(seeds):
            logging.info("%s: seeds %s done before.", preset, sorted(set(seeds) - set(missing)))
        for block in table_runs.consecutive(missing):
            for record in table_runs.run_seeds(preset, block, dataset, data_dir, workroot):
                path = reporting.record_path(outdir, preset, record)
                path.parent.mkdir(parents=True, exist_ok=True)
                checkpoint.write_json(path, record)
                logging.info("%s seed %d: %.2f %% test accuracy with %d labels.", preset, record["seed"],
                             record["test_accuracy"], record["metrics"][-1]["labels"])
            write_report(outdir)


def _define_flags() -> None:
    """The study's flags, defined only when it runs (its tests import it beside entry points of the same flag
    names)."""
    global _SEEDS, _DATA_DIR, _OUTDIR, _WORKROOT, _REPORT_ONLY
    _SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; each re-samples the pool, initial labels and "
                               "network (the same for both policies).")
    _DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder with MNIST's four IDX files (unset: download).")
    _OUTDIR = flags.DEFINE_string("outdir", "results/mnist/batchbald", "Where runs/, README.md, table.json and "
                                  "learning_curves.png go.")
    _WORKROOT = flags.DEFINE_string("workroot", "/tmp/deepbass_batchbald_mnist", "Run directories (checkpoints).")
    _REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rebuild the report from OUTDIR/runs.")


def main(argv):
    del argv
    outdir = pathlib.Path(_OUTDIR.value)
    if not _REPORT_ONLY.value:
        seeds = sorted(int(s) for s in _SEEDS.value)
        logging.info("python -m studies.batchbald_mnist %s", " ".join(shlex.quote(a) for a in sys.argv[1:]))
        run(outdir, seeds, _DATA_DIR.value, pathlib.Path(_WORKROOT.value))
    try:
        table = write_report(outdir)
    except ValueError as error:  # no runs yet: one line, no traceback
        raise app.UsageError(str(error)) from None
    logging.info("Labels to 90 / 95 %%: %s", {p: {t: v["mean"] for t, v in row["labels_to_reach"].items()}
                                               for p, row in table.items()})


if __name__ == "__main__":
    _define_flags()
    app.run(main)
