"""Runs of the results tables' rows, flag-free (experiments/mnist_table.py and studies use them): a preset for
consecutive seeds at once, kept as records with their command, device, commit and time."""

from __future__ import annotations

import json
import pathlib
import time
from typing import Optional

from deepbass_jax import data, driver as driver_lib
from deepbass_jax.workdir import checkpoint, runfolder
from experiments import mnist_report, provenance, reporting
from experiments.configs import mnist


def run_seeds(preset: str, seeds: list[int], dataset: data.Dataset, data_dir: Optional[str],
              workroot: pathlib.Path) -> list[dict]:
    """Runs (or resumes) one preset for consecutive `seeds` at once (config.num_seeds); returns their records."""
    config = mnist.get_config(preset)
    config.seed, config.num_seeds = seeds[0], len(seeds)
    config.labels_export_every = -1  # a results table needs no labels export (nor the final pass over the pool)
    config.data.name = dataset.name
    config.data.data_dir = data_dir
    workdir = workroot / dataset.name / preset / f"seeds_{seeds[0]}_{seeds[-1]}"
    started = time.time()
    commit = provenance.commit()  # the code that runs: taken now, not when the run ends hours later
    folders = [runfolder.seed_folder(workdir, seed, len(seeds)) for seed in seeds]
    if not all((folder / runfolder.SUMMARY).exists() for folder in folders):
        driver_lib.Driver(config, workdir, dataset=dataset).run()
    seconds = (time.time() - started) / len(seeds)  # the seeds ran at once: each gets its share
    records = []
    for seed, folder in zip(seeds, folders):
        summary = json.loads((folder / runfolder.SUMMARY).read_text())
        seed_config = json.loads(config.to_json_best_effort(sort_keys=True))
        seed_config.update(seed=seed, num_seeds=1)
        command = (f"python -m experiments.main --config=experiments/configs/mnist.py:{preset} --config.seed={seed} "
                   f"--config.data.name={dataset.name}" + (f" --config.data.data_dir={data_dir}" if data_dir else "")
                   + f" --workdir=/tmp/{dataset.name}_{preset}_seed{seed}")
        records.append({
            "row": mnist_report.table_row(preset),
            "preset": preset,
            "seed": seed,
            "dataset": dataset.name,
            "scale": "cpu" if preset.startswith(mnist.CPU_PREFIX) else "paper",
            "test_accuracy": 100 * summary["test_accuracy"],
            "config": seed_config,
            "summary": summary,
            "metrics": checkpoint.read_jsonl(folder / runfolder.METRICS),
            "command": command,  # the same run as one seed of the seed axis (lax.map on the CPU: bit for bit)
            "device": provenance.device(),
            "commit": commit,
            "seconds": seconds,
        })
        records[-1:] = reporting.with_restart(records[-1], summary.get("restart"))
    return records


def consecutive(seeds: list[int]) -> list[list[int]]:
    """[0, 1, 2, 5, 6] -> [[0, 1, 2], [5, 6]]."""
    blocks = []
    for seed in seeds:
        if blocks and seed == blocks[-1][-1] + 1:
            blocks[-1].append(seed)
        else:
            blocks.append([seed])
    return blocks
