"""How much of DBAL's gap to Gal et al. is the training of its networks, not its choice of labels (issue 30)?

A finished DBAL run (config.retrain_epochs) bought its labels; its last network was a fresh one trained 50 epochs
on them. This study takes the labels a run bought (its oracle_log.jsonl) and trains fresh networks on them again:
with the run's own key and upsample 1 (the run's last retraining again: bit for bit on one machine with the same
threads; 0.02 points of test accuracy apart for MNIST runs pinned to one core and retrained on two, where XLA's CPU
convolutions add in another order), then with the same key and epochs but each label repeated `upsample` times per
epoch (x 20: the upsampling of the paper's supervised rows). Every network's test accuracy (the run's test set)
and its accuracy on its own labels (whether it fits them) go to OUT/table.json after each network, so a killed
study resumes; OUT/README.md reports.

  python -m studies.dbal_training --data_dir=../shared/data/mnist \
      --runs=WORKROOT/mnist/dbal_bald/seeds_0_0,WORKROOT/mnist/dbal_random/seeds_0_0   # results/mnist/dbal_training/
"""

from __future__ import annotations

import json
import pathlib
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from deepbass_jax import algorithm, data, models, train
from deepbass_jax.workdir import checkpoint, runfolder
from experiments import mnist_report, provenance, reporting
from studies import dbal_mnist

UPSAMPLE = (1, 5, 20)


def _define_flags() -> None:
    """The study's flags, defined only when it runs (a test imports it beside entry points with a --data_dir)."""
    global _DATA_DIR, _RUNS, _OUT, _UPSAMPLE
    _DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder of the runs' data set (MNIST's four IDX files).")
    _RUNS = flags.DEFINE_list("runs", None, "Seed folders of finished DBAL runs (WORKDIR, or WORKDIR/seed_S).",
                              required=True)
    _OUT = flags.DEFINE_string("out", "results/mnist/dbal_training", "Folder of table.json and README.md.")
    _UPSAMPLE = flags.DEFINE_list("upsample", [str(u) for u in UPSAMPLE], "Repetitions of each label per epoch.")


class FinishedRun:
    """What the study needs of a finished DBAL run's seed folder: its config, its bought labels, its last line."""

    def __init__(self, folder: pathlib.Path, data_dir: Optional[str] = None):
        self.folder = pathlib.Path(folder)
        self.config = ml_collections.ConfigDict(json.loads((self.folder / runfolder.CONFIG).read_text()))
        if not self.config.retrain_epochs:
            raise ValueError(f"{self.folder} is not a DBAL run (config.retrain_epochs is 0): its last network was "
                             "not trained afresh on its labels.")
        lines = checkpoint.read_jsonl(self.folder / runfolder.METRICS)
        if not (self.folder / runfolder.SUMMARY).exists() or lines[-1]["iteration"] != self.config.iterations:
            raise ValueError(f"{self.folder} holds no finished run (no {runfolder.SUMMARY}, or its last metrics line "
                             f"is not iteration {self.config.iterations}).")
        self.last_line = lines[-1]
        if data_dir:
            self.config.data.data_dir = data_dir
        bought = {entry["index"]: entry["label"] for entry in checkpoint.read_jsonl(self.folder / runfolder.ORACLE_LOG)}
        self.indices = np.array(sorted(bought), np.int64)  # pool positions
        self.labels = np.array([bought[i] for i in self.indices], np.int32)
        if len(self.indices) != self.last_line["labels"]:
            raise ValueError(f"{self.folder}: the oracle log holds {len(self.indices)} labels, the last metrics line "
                             f"{self.last_line['labels']}.")

    @property
    def name(self) -> str:
        return f"{self.config.preset} seed {self.config.seed}"

    def run_key(self) -> jax.Array:
        """The key of the run's last retrained network (`algorithm.retrain_key` of its last iteration)."""
        return algorithm.retrain_key(jax.random.key(self.config.seed), self.config.iterations)


def retrained_state(apply_fn, pool_images, labeled: np.ndarray, targets: np.ndarray, key: jax.Array, epochs: int,
                    upsample: int, train_config) -> train.TrainState:
    """A fresh network of run key `key` trained `epochs` epochs on the labeled pool samples, each `upsample` times
    an epoch, as `Driver._fit_fresh` trains DBAL's (states of one seed). pool_images [N, ...], labeled [N] bool,
    targets [N] (-1 where not labeled)."""
    states = algorithm.initial_train_states(apply_fn, [key], pool_images.shape[1:], train_config)
    plan_key = algorithm.setup_keys(key)[2]
    for epoch in range(epochs):
        plan = train.sampling_plan(labeled, np.zeros_like(labeled), jax.random.fold_in(plan_key, epoch), upsample)
        if train_config.even_batches:
            plan = train.even_batches(*plan, train_config.batch_size)
        states, _ = algorithm.train_epoch(states, pool_images, jnp.asarray(targets)[None], [plan],
                                          train_config.batch_size, True, "map",
                                          steps_per_call=train_config.steps_per_call)
    return states


def accuracies(run: FinishedRun, dataset: data.Dataset, pool_images, apply_fn, upsample: int) -> dict:
    """Test accuracy and accuracy on its own labels (both %) of the run's last network retrained x `upsample`."""
    labeled = np.zeros(len(pool_images), bool)
    labeled[run.indices] = True
    targets = np.full(len(pool_images), -1, np.int32)
    targets[run.indices] = run.labels
    states = retrained_state(apply_fn, pool_images, labeled, targets, run.run_key(), run.config.retrain_epochs,
                             upsample, run.config.train)
    test = algorithm.seeds_accuracy(apply_fn, states.params, dataset.test_images, dataset.test_labels, True, "map")
    own = algorithm.seeds_accuracy(apply_fn, states.params, np.asarray(pool_images)[run.indices], run.labels, True,
                                   "map", "own labels")
    return {"test_accuracy": 100 * float(test[0]), "own_label_accuracy": 100 * float(own[0]),
            "steps": int(states.step[0])}


def study(runs: Sequence[FinishedRun], upsample: Sequence[int], table_path: pathlib.Path) -> dict:
    """Every run x upsample not yet in table_path (JSON, rewritten after each network); returns the table. Data
    sets load and networks build once per config, and only for runs with a network to train, so that runs of one
    data set and network share their compiled steps."""
    table = json.loads(table_path.read_text()) if table_path.exists() else {"runs": {}}
    datasets, apply_fns = {}, {}
    for run in runs:
        entry = table["runs"].setdefault(run.name, {"networks": {}})
        entry.update({  # read from the run folder again each time
            "dataset": run.config.data.name, "preset": run.config.preset, "policy": run.config.policy,
            "folder": str(run.folder), "seed": run.config.seed, "labels": len(run.indices),
            "epochs": run.config.retrain_epochs, "upsample": run.config.train.upsample,
            "run_test_accuracy": 100 * run.last_line["test_accuracy"],
            "run_own_label_accuracy": 100 * run.last_line["ground_truth_accuracy"],
            "bought": run.indices.tolist()})
        missing = [times for times in upsample if str(times) not in entry["networks"]]
        if not missing:
            continue
        data_key = run.config.data.to_json(sort_keys=True)
        if data_key not in datasets:
            datasets[data_key] = data.load(run.config.data)
        dataset, _, pool_indices = algorithm.split_pool(run.config, datasets[data_key])
        if not np.array_equal(dataset.train_labels[pool_indices[run.indices]], run.labels):
            raise ValueError(f"{run.folder}: its oracle's labels are not the data set's; is --data_dir its data?")
        pool_images = jnp.asarray(dataset.train_images[pool_indices])
        model_key = (run.config.model.to_json(sort_keys=True), dataset.num_classes)
        if model_key not in apply_fns:
            apply_fns[model_key] = models.make_apply(models.build(run.config.model, dataset.num_classes))
        for times in missing:
            entry["networks"][str(times)] = accuracies(run, dataset, pool_images, apply_fns[model_key], times)
            print(f"{run.name}, labels x {times}: {entry['networks'][str(times)]}", flush=True)
            entry.update(commit=provenance.commit(), device=provenance.device())  # the code of its latest network
            checkpoint.write_json(table_path, table)
    return table


def report(table: dict, outdir: pathlib.Path, command: str) -> str:
    """OUT/README.md (and table.json): per run, test accuracy and fit of its own labels after each training."""
    counts = sorted({int(t) for entry in table["runs"].values() for t in entry["networks"]})
    pathlib.Path(outdir).mkdir(parents=True, exist_ok=True)
    lines = ["# DBAL's labels, trained longer", "",
             "Fresh networks trained on the labels that finished DBAL runs bought (`studies/dbal_training.py`). "
             "Each network starts from the run's last retraining (its key: the same initialization and dropout "
             "stream) and trains its epochs; x N repeats each label N times an epoch. With the run's own N (DBAL's "
             "x 1) it is the run's last network again, up to the order in which XLA's CPU convolutions add when the "
             "study has other cores than the run had. Each cell: test accuracy in % (in brackets: accuracy on the "
             "network's own training labels, %).", "",
             "Table 3: the paper's DBAL test accuracy with 1,000 labels; Gal et al.'s curves: theirs at the run's "
             "labels (each the mean of 3 runs; `studies/dbal_mnist.py`).", "",
             "| run | labels | the run's last network | " + " | ".join(f"retrained x {t}" for t in counts)
             + " | Table 3 | Gal et al.'s curves |", "|---|---|---|" + "---|" * (len(counts) + 2)]
    for name, entry in table["runs"].items():
        cells = [f"{n['test_accuracy']:.2f} ({n['own_label_accuracy']:.1f})" if (n := entry["networks"].get(str(t)))
                 else "-" for t in counts]
        lines.append(f"| {name} | {entry['labels']} | {entry['run_test_accuracy']:.2f} "
                     f"({entry['run_own_label_accuracy']:.1f}) | " + " | ".join(cells) + f" | {_published(entry)} |")
    trained = {}  # (commit, device) -> the runs whose networks it trained
    for name, entry in table["runs"].items():
        trained.setdefault((entry.get("commit"), entry.get("device")), []).append(name)
    lines += [""] + [f"Networks of {', '.join(names)} trained at commit {commit}; {device}."
                     for (commit, device), names in trained.items()]
    lines += ["", f"Generated by `{command}`."]
    return reporting.write_report(outdir, lines, table)


def command(table: dict, data_dir: Optional[str], upsample: Sequence[str], out: pathlib.Path) -> str:
    """The command that makes the table again: every run in it, those of earlier invocations too."""
    data_flag = f"--data_dir={data_dir} " if data_dir else ""
    folders = ",".join(entry["folder"] for entry in table["runs"].values())
    return (f"python -m studies.dbal_training {data_flag}--runs={folders} --upsample={','.join(upsample)} "
            f"--out={reporting.shown(out)}")


def _published(entry: dict) -> str:
    """The cells "Table 3 | Gal et al.'s curves" of an MNIST run's acquisition function at its labels ("-" where
    none)."""
    if entry["dataset"] != "mnist":
        return "- | -"
    table_3 = mnist_report.PAPER.get(f"{entry['preset']}_{entry['labels']}", (None,))[0]
    labels, curves = dbal_mnist.published_curves(entry["policy"])
    at = np.flatnonzero(labels == entry["labels"])
    theirs = " / ".join(f"{c[at[0]]:.2f}" for c in curves) if len(at) and len(curves) else "-"
    return f"{reporting.cell(table_3)} | {theirs}"


def main(argv):
    del argv
    out = pathlib.Path(_OUT.value)
    out.mkdir(parents=True, exist_ok=True)
    runs = [FinishedRun(pathlib.Path(folder), _DATA_DIR.value) for folder in _RUNS.value]
    table = study(runs, [int(u) for u in _UPSAMPLE.value], out / "table.json")
    report(table, out, command(table, _DATA_DIR.value, _UPSAMPLE.value, out))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
