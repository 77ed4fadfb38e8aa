"""The campaign's records: what a job leaves in its OUTDIR and how `--merge` folds it into results/.

A finished seed becomes results/DATASET/runs/PRESET/seed_S.json (scale "paper", or "reduced" for smaller
settings), a job's timings results/bench/campaign_*.json, and the one unfinished row of the campaign
results/mnist/pending.tar.gz (its run folder: checkpoint and per-seed logs), which the next job continues.
No flags: experiments/campaign.py calls these.
"""
from __future__ import annotations

import io
import json
import pathlib
import tarfile
import tempfile

from deepbass_jax.workdir import checkpoint, runfolder
from experiments import mnist_report, reporting
from experiments.configs import mnist

DATASETS = ("mnist", "fashion_mnist")
PENDING = "pending.tar.gz"  # the folder of an unfinished row: its checkpoint and per-seed logs
PENDING_ROW = "campaign_row.json"  # inside it: the preset, seeds and seed axis it runs
SCALE_FIELDS = ("pool_size", "iterations", "initial_epochs", "test_size")


def parse_row(row: str) -> tuple[str, str]:
    """A campaign row, 'PRESET' (MNIST) or 'DATASET:PRESET', -> (data set, preset of experiments/configs/mnist.py)."""
    dataset, _, preset = row.rpartition(":")
    dataset = dataset or "mnist"
    if dataset not in DATASETS:
        raise ValueError(f"campaign row {row!r} names the data set {dataset!r}; choose one of {DATASETS}.")
    return dataset, preset


def seeds_done(results_dir: pathlib.Path, config) -> set[int]:
    """Seeds of `config`'s row recorded under results_dir/DATASET/runs at its scale."""
    done = set()
    for path in (results_dir / config.data.name / "runs" / config.preset).glob("seed_*.json"):
        record = json.loads(path.read_text())
        if all(record["config"][field] == config[field] for field in SCALE_FIELDS):
            done.add(record["seed"])
    return done


def pending_path(results_dir: pathlib.Path) -> pathlib.Path:
    """The campaign's one unfinished row, whatever its data set."""
    return results_dir / "mnist" / PENDING


def seed_record(seed: int, folder: pathlib.Path) -> dict:
    """A finished seed's run folder as a record: seed, test_accuracy, every metrics line, the number of oracle
    queries (the oracle log itself, 60,000 lines for the 60,000-label row, stays in runs.tar.gz)."""
    summary = json.loads((folder / runfolder.SUMMARY).read_text())
    return {"seed": seed, "test_accuracy": summary["test_accuracy"], "restart": summary.get("restart"),
            "metrics": checkpoint.read_jsonl(folder / runfolder.METRICS),
            "oracle_queries": len(checkpoint.read_jsonl(folder / runfolder.ORACLE_LOG))}


def seed_records(workdir: pathlib.Path, config) -> list[dict]:
    """seed_record of each seed of a finished run in `workdir`."""
    return [seed_record(seed, runfolder.seed_folder(workdir, seed, config.num_seeds))
            for seed in range(config.seed, config.seed + config.num_seeds)]


def tar_folders(sources: dict, skip=(".lock", "checkpoint.prev.msgpack", runfolder.LABELS)) -> bytes:
    """A tar.gz of folders {name in the archive: path}, leaving out the lock, the previous checkpoint and the labels
    export (60,000 rows per seed that the results do not use)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, path in sources.items():
            archive.add(path, arcname=name, filter=lambda info: None if pathlib.Path(info.name).name in skip else info)
    return buffer.getvalue()


def add_block(rows: dict, report: dict, preset: str, config: dict, seed_axis: str, wall_seconds: float,
              records: list[dict]) -> None:
    """Adds a finished block of seeds of `preset` to rows (what rows.json holds): a new row, or a further block
    of a row the job ran before (its seeds, records and wall seconds are added)."""
    if preset in rows:
        row = rows[preset]
        row["seeds"] += [r["seed"] for r in records]
        row["wall_seconds"] += wall_seconds
        row["results"] += records
        return
    rows[preset] = {"row": preset, "config": config, "seeds": [r["seed"] for r in records], "seed_axis": seed_axis,
                    "device": report["device"], "commit": report["commit"], "command": report["command"],
                    "wall_seconds": wall_seconds, "results": records}


def pending_progress(results_dir: pathlib.Path):
    """The pending row of `results_dir`: {"row", "seeds", "iteration" its seeds finished}, or None."""
    path = pending_path(results_dir)
    if not path.exists():
        return None
    with tempfile.TemporaryDirectory() as folder, tarfile.open(path) as archive:
        archive.extractall(folder, filter="data")
        row = json.loads((pathlib.Path(folder) / PENDING_ROW).read_text())
        first_seed = runfolder.seed_folder(folder, row["seed"], row["num_seeds"])
        metrics = checkpoint.read_jsonl(first_seed / runfolder.METRICS)
    return {"row": row.get("row", row.get("preset")), "seeds": list(range(row["seed"], row["seed"] + row["num_seeds"])),
            "iteration": metrics[-1]["iteration"]}


def _newest_accelerator_report(results_dir: pathlib.Path, keep):
    """The newest job report in results_dir/bench from an accelerator for which keep(report) holds, or None."""
    reports = [json.loads(path.read_text()) for path in (results_dir / "bench").glob("campaign_*.json")]
    return max((r for r in reports if r["device"]["backend"] != "cpu" and keep(r)),
               key=lambda r: r.get("started_utc", ""), default=None)


def latest_accelerator_timings(results_dir: pathlib.Path):
    """The newest job report in results_dir/bench from an accelerator with micro-benchmark timings, or None."""
    return _newest_accelerator_report(results_dir, lambda report: bool(report.get("device_function_seconds")))


def latest_kernel_choice(results_dir: pathlib.Path, device: dict, max_seeds: int):
    """What the newest job in results_dir/bench on an accelerator of `device`'s kind and jax version found when it
    timed the training step of max_seeds seeds under vmap with each kernel choice: {"kernels" (the fastest),
    "kernels_step_seconds", "started_utc", "commit"}, or None."""
    def timed_the_choices(report) -> bool:
        timed = report.get("kernels_step_seconds") or {}
        seeds = max((t["seeds"] for t in report.get("device_function_seconds", [])), default=0)
        return (report["device"]["device_kind"] == device["device_kind"] and report["device"]["jax"] == device["jax"]
                and report.get("seed_axis") == "vmap" and len(timed) > 1 and report.get("kernels") in timed
                and seeds == max_seeds)

    newest = _newest_accelerator_report(results_dir, timed_the_choices)
    return None if newest is None else {key: newest[key] for key in ("kernels", "kernels_step_seconds",
                                                                     "started_utc", "commit")}


def rows_from_archive(job: pathlib.Path, report: dict) -> dict:
    """What rows.json holds, rebuilt from runs.tar.gz and campaign.json's finished jobs: for a job whose rows.json
    did not come back (a file over the transfer limit, or a job killed between the two writes)."""
    rows: dict = {}
    with tempfile.TemporaryDirectory() as folder, tarfile.open(job / "runs.tar.gz") as archive:
        archive.extractall(folder, filter="data")
        for entry in report["jobs"]:
            if "test_accuracy" not in entry:  # stopped part-way: the pending row
                continue
            folders = [pathlib.Path(folder) / entry["row"] / f"seed_{seed}" for seed in entry["seeds"]]
            add_block(rows, report, entry["row"], json.loads((folders[0] / runfolder.CONFIG).read_text()),
                      entry["seed_axis"], entry["wall_seconds"],
                      [seed_record(seed, path) for seed, path in zip(entry["seeds"], folders)])
    return rows


def merge(job: pathlib.Path, results_dir: pathlib.Path, allow_reduced: bool = False) -> list[pathlib.Path]:
    """Folds a job folder into `results_dir`: each finished row's seeds as records in DATASET/runs/PRESET/
    (scale "paper"), the job's timings into bench/, the job's pending checkpoint into mnist/ (or removes the
    one it finished), then the report of each data set it added to. Merge jobs in the order they ran. Returns
    the files written.
    Without rows.json the rows are rebuilt from runs.tar.gz (rows_from_archive).

    Rows run with smaller settings (--pool_size, --iterations, ...) are refused unless `allow_reduced`; their
    records then get scale "reduced" and never mix with the paper's setting."""
    report = json.loads((job / "campaign.json").read_text())
    if (job / "rows.json").exists():
        rows = json.loads((job / "rows.json").read_text())
    elif (job / "runs.tar.gz").exists():
        rows = rows_from_archive(job, report)
    else:
        rows = {}
    reduced = {}
    for name, row in rows.items():
        paper = mnist.get_config(parse_row(name)[1])
        reduced[name] = [f"{field}={row['config'][field]} (paper: {paper[field]})" for field in SCALE_FIELDS
                         if row["config"][field] != paper[field]]
        if reduced[name] and not allow_reduced:
            raise ValueError(f"{job} ran {name} with {', '.join(reduced[name])}: not the paper's setting, so it "
                             "is not merged into the results (--allow_reduced merges it as scale 'reduced').")
    written = []
    stamp = report.get("started_utc", "").replace(":", "").replace("-", "")
    name = f"campaign_{report['device']['backend']}_{stamp}_{report['commit'].split()[0]}.json"
    bench = results_dir / "bench" / name
    bench.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_json(bench, report)
    written.append(bench)
    for name, row in rows.items():
        dataset, preset = parse_row(name)
        num_seeds = len(row["results"])
        for result in row["results"]:
            last = result["metrics"][-1]
            record = {
                "row": mnist_report.table_row(preset), "preset": preset, "seed": result["seed"], "dataset": dataset,
                "scale": "reduced" if reduced[name] else "cpu" if preset.startswith(mnist.CPU_PREFIX) else "paper",
                "test_accuracy": 100 * result["test_accuracy"], "config": dict(row["config"], seed=result["seed"]),
                "summary": {"iterations": last["iteration"], "labels": last["labels"], "final": last,
                            "test_accuracy": result["test_accuracy"], "oracle_queries": result["oracle_queries"]},
                "metrics": result["metrics"],
                "command": (row["command"]
                            + f"  # seed {result['seed']} of {row['seeds']}, seed axis {row['seed_axis']}"),
                "device": row["device"]["description"], "jax": row["device"]["jax"], "commit": row["commit"],
                # the row's seeds ran at once: each record carries its share of the wall time of this job
                "seconds": row["wall_seconds"] / num_seeds, "row_wall_seconds": row["wall_seconds"],
            }
            if result.get("restart") is not None:
                record["summary"]["restart"] = result["restart"]
            for network in reporting.with_restart(record, result.get("restart")):
                path = reporting.record_path(results_dir / dataset, preset, network)
                path.parent.mkdir(parents=True, exist_ok=True)
                checkpoint.write_json(path, network)
                written.append(path)
    target = pending_path(results_dir)
    if (job / PENDING).exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((job / PENDING).read_bytes())
        written.append(target)
    elif target.exists() and any(j.get("resumed") for j in report["jobs"]):
        target.unlink()  # the job finished the row it continued
    for dataset in sorted({parse_row(name)[0] for name in rows}):
        mnist_report.write_report(results_dir / dataset)
        written.append(results_dir / dataset / "table.json")
    return written
