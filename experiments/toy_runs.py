"""The yin-yang toy's runs and Table 1's report, without flags: the authors' draws (`authors_draw`,
`authors_sample`), a fresh run and its per-seed records (`run_fresh`, `seed_records`), and README.md and
table.json from the records alone (`write_report`). experiments/toy_table.py (Table 1) and
studies/toy_ablation.py run these.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import ml_collections
import numpy as np

from deepbass_jax import data, driver as driver_lib
from deepbass_jax.workdir import checkpoint, runfolder
from experiments import reporting


PAPER = {  # Table 1, mean test accuracy over 10 runs, %
    "initial": 83.27,
    "semi_supervised": 84.33,
    "active": 90.19,
    "active_semi_supervised": 90.33,
    "supervised_80": 88.65,
    "supervised_1000": 91.37,
}
INVOCATION = "invocation.json"  # in OUTDIR/runs: commit, device and minutes of the run that made the records
DRAWS = {  # --draws -> the record file's tag (ROW_{tag}S.json) and the README's words
    "authors": ("authors", "the authors' draws"),
    "seeds": ("seed", "own draws"),
}


def run_fresh(config, workdir: pathlib.Path, dataset=None) -> driver_lib.Driver:
    """Runs `config` (seeds config.seed ... + num_seeds - 1 at once) in `workdir`, emptied first; the driver."""
    if workdir.exists():  # a previous invocation's run: start afresh
        shutil.rmtree(workdir)
    driver = driver_lib.Driver(config, workdir, dataset)
    driver.run()
    return driver


def seed_records(driver: driver_lib.Driver) -> list[dict]:
    """Per seed of a finished run: {"seed", "summary", "metrics"} (its summary.json and metrics.jsonl)."""
    return [{"seed": seed.config.seed, "summary": json.loads((seed.folder / runfolder.SUMMARY).read_text()),
             "metrics": checkpoint.read_jsonl(seed.folder / runfolder.METRICS)} for seed in driver.seeds]


def authors_draw(resample_id: int, per_class: int, num_per_class: int = 500):
    """The pool, test sample and initial labels of the authors' run `resample_id` (deepbass.py EM with
    test_case='2D', num_gt = 2 * per_class), drawn as they drew them with numpy's legacy generator: seed
    1000 * resample_id; helpers.generate2Dcase draws P1 (radii, then angles) and P2 for the pool, then both for
    the test sample; EM then permutes the pool and takes the first `per_class` of each class as ground truth.

    Returns pool [2n, 2] float32, labels [2n] int32, test [2n, 2], test labels [2n] and the initial
    [2 * per_class] sorted pool indices, labels in this package's convention (red, the authors' P2 / class 1, is
    0); the pool is in the authors' permuted order.
    """
    rng = np.random.RandomState(1000 * resample_id)

    def arc(sign: float):  # P1 (sign -1): (-0.33, 0.1) + r (cos, -sin); P2 (sign +1): (0.33, -0.1) + r (cos, sin)
        radius = 1 + 0.25 * rng.randn(num_per_class)
        angle = np.pi * (0.5 + 0.33 * rng.randn(num_per_class))
        return np.stack([sign * 0.33 + radius * np.cos(angle), -sign * 0.1 + sign * radius * np.sin(angle)], 1)

    labels = np.repeat(np.array([1, 0], np.int32), num_per_class)  # P1 is blue (1), P2 red (0)
    pool = np.concatenate([arc(-1.0), arc(1.0)]).astype(np.float32)
    test = np.concatenate([arc(-1.0), arc(1.0)]).astype(np.float32)
    order = rng.permutation(2 * num_per_class)
    pool, pool_labels = pool[order], labels[order]
    initial = np.concatenate([np.flatnonzero(pool_labels == authors_class)[:per_class] for authors_class in (1, 0)])
    return pool, pool_labels, test, labels, np.sort(initial)


def authors_sample(resample_id: int, config: ml_collections.ConfigDict) -> data.Dataset:
    """`authors_draw(resample_id, config.initial_per_class)` as a Dataset whose pool is ordered so that the
    driver's balanced initial labels for config.seed (`data.balanced_initial_labels`) are exactly the authors'
    initial points (each class's other points keep their order around them)."""
    pool, labels, test, test_labels, initial = authors_draw(resample_id, config.initial_per_class,
                                                            config.data.num_per_class)
    ours = data.balanced_initial_labels(labels, config.initial_per_class, config.seed, 2)
    position = np.empty(len(labels), np.int64)  # position[i]: the authors' pool index of our pool point i
    for cls in (0, 1):
        members = np.flatnonzero(labels == cls)
        slots, points = np.intersect1d(ours, members), np.intersect1d(initial, members)
        position[slots] = points
        position[np.setdiff1d(members, slots)] = np.setdiff1d(members, points)
    return data.Dataset("yinyang", pool[position], labels[position], test, test_labels, 2,
                        test_source=f"the authors' test sample of their run {resample_id}")


def easy_and_hard(initial_accuracy: dict) -> tuple[int, int]:
    """The seeds with the highest and the lowest initial accuracy."""
    return max(initial_accuracy, key=initial_accuracy.get), min(initial_accuracy, key=initial_accuracy.get)


def load_records(outdir: pathlib.Path) -> list[dict]:
    """Every run's record in OUTDIR/runs, with its "draws" and "run" (records older than --draws: "seeds")."""
    records = []
    for tag in (tag for tag, _ in DRAWS.values()):
        for path in sorted((outdir / "runs").glob(f"*_{tag}[0-9]*.json")):
            record = json.loads(path.read_text())
            record.setdefault("draws", "seeds")
            record.setdefault("run", record["seed"])
            records.append(record)
    return records


def _statistics(group: list[dict]) -> dict:
    """{mean, std, runs} of the test accuracy in %; std is the sample std over the runs (None for one)."""
    mean, std = reporting.mean_std(100 * r["summary"]["test_accuracy"] for r in group)
    return {"mean": mean, "std": std, "runs": len(group)}


def make_table(records: list[dict]) -> dict:
    """{row: {mean, std, runs, paper, authors_draws: {mean, std, runs}}}, test accuracy in %: mean, std and runs
    over the own draws (seeds), authors_draws over the authors' draws, each where run."""
    table = {}
    for row in PAPER:
        entry = {}
        for draws in DRAWS:
            group = sorted((r for r in records if r["row"] == row and r["draws"] == draws), key=lambda r: r["run"])
            if group:
                statistics = _statistics(group)
                if draws == "seeds":
                    entry.update(statistics)
                else:
                    entry[f"{draws}_draws"] = statistics
        if entry:
            table[row] = {**entry, "paper": PAPER[row]}
    return table


def _column(entry: dict, draws: str):
    return entry if draws == "seeds" else entry.get(f"{draws}_draws")


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
    present = [draws for draws in DRAWS if any(r["draws"] == draws for r in records)]
    figure_draws = invocation.get("figures", "seeds")
    initial = [r for r in records if r["row"] == "initial" and r["draws"] == figure_draws]
    easy, hard = easy_and_hard({r["run"]: 100 * r["summary"]["test_accuracy"] for r in initial})
    header = "| row | preset | paper % |" + "".join(f" {DRAWS[d][1]}: mean (std) % | runs | - paper |" for d in present)
    lines = [
        "# Table 1 of the paper: the yin-yang toy",
        "",
        "Generated by `experiments/toy_table.py` from the per-run files in `runs/`; do not edit by hand.",
        "",
        header,
        "|---|---|---|" + "---|---|---|" * len(present),
    ]
    runs = 0
    for row, entry in table.items():
        cells = []
        for draws in present:
            column = _column(entry, draws)
            if column is None:
                cells.append(" - | - | - |")
                continue
            runs = max(runs, column["runs"])
            cells.append(f" {reporting.cell(column['mean'], column['std'])} | {column['runs']} | "
                         f"{column['mean'] - entry['paper']:+.2f} |")
        lines.append(f"| {row.replace('_', ' ')} | `yinyang.py:{row}` | {entry['paper']:.2f} |" + "".join(cells))
    explained = {
        "authors": f"the authors' draws: the pool, the test sample and the initial labels of the authors' own runs "
                   f"resample_id 0..{runs - 1}, drawn as their code draws them (helpers.generate2Dcase and "
                   "deepbass.py of github.com/mrottmann/DeepBASS: numpy's legacy generator, seed 1000 i, the first "
                   "labels of each class after a permutation); the network and its dropout come from seed i.",
        "seeds": f"own draws: seeds 0..{runs - 1} of the presets; each seed re-samples the pool, the test sample, "
                 "the initial labels and the network.",
    }
    draws_flag = "" if present == list(DRAWS) else f" --draws={','.join(present)}"
    words = "the authors' draw" if figure_draws == "authors" else "seed"
    lines += [
        "",
        "Test accuracy on a held-out sample of 1,000 points drawn like the pool, after the last iteration; std is "
        "the sample standard deviation over the runs; `- paper`: our mean minus the paper's.",
        *(f"- {explained[draws]}" for draws in present),
        "",
        "The presets use the paper's initial-fit rule (until the training accuracy stagnates); `authors_fit_ROW` "
        "presets fit a fixed 100 epochs as the authors' code does (see experiments/configs/yinyang.py). The rows "
        "with 8 labels depend strongly on which 8 points are labeled (the runs' std is 5-7 points): "
        "`ablation/README.md` compares the initial-fit rules, the data generation and the draws on 10 runs, and "
        "`ablation/population/README.md` gives the 8-label rows' mean over 50-200 draws of either generator.",
        "",
        "Commands:",
        "",
        "```bash",
        f"python -m experiments.toy_table --runs={runs}{draws_flag} --outdir={reporting.shown(outdir)}",
        "# rebuild README.md and table.json from runs/:",
        f"python -m experiments.toy_table --report_only --outdir={reporting.shown(outdir)}",
        "# one run of one row (own draws), e.g.:",
        "python -m experiments.main --config=experiments/configs/yinyang.py:active_semi_supervised "
        "--config.seed=0 --workdir=/tmp/toy",
        "```",
        "",
        f"Figures: `fig1_easy.png` ({words} {easy}, the highest initial accuracy) and `fig2_ill_posed.png` "
        f"({words} {hard}, the lowest), panels as in Figs. 1-2: initial model, semi-supervised, active, "
        "active semi-supervised; crosses mark ground-truth labels, the white line is the decision boundary.",
        "",
        f"Machine: {invocation['device']}; commit {invocation['commit']}; {invocation['minutes']:.0f} minutes in all.",
    ]
    reporting.write_report(outdir, lines, table)
    return table

