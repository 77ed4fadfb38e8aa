"""The paper-scale campaign on accelerators: a smoke check proven on first contact, then Tables 2 and 3 (and
the same rows on Fashion-MNIST) row by row across short jobs, each continuing where the last one stopped, and a
merge into results/. This module holds the flags, the rows and the job; experiments/device_check.py the reference
check and the micro-benchmark; experiments/campaign_results.py the records and the merge.

  # on the accelerator: the smoke check alone, or the smoke check and then the campaign, in one process
  python -m experiments.campaign --smoke --data_root=PATH/TO/data --outdir=/tmp/smoke
  python -m experiments.campaign --budget_s=480 --data_root=PATH/TO/data --outdir=$OUT
  # back here: fold what came back into results/ (per-seed records, table, figures, timings, pending row)
  python -m experiments.campaign --merge=DIR
  python -m experiments.campaign --status    # rows done, the pending one, what remains and its device time

--data_root holds one folder of IDX files per data set (mnist/, fashion_mnist/, as ../shared/data does);
--data_dir=PATH/TO/mnist gives MNIST's alone. A row is a preset of experiments/configs/mnist.py, on MNIST, or
DATASET:PRESET (fashion_mnist:supervised_300).

The smoke check prints the backend and device, compares the paper CNN's logits and gradient on fixed inputs
with reference numbers computed on the CPU (experiments/reference_cnn.json, `--write_reference` remakes it),
times one pool chunk and one training step for the seed axes vmap and map at 1 and --max_seeds seeds, picks
the faster axis (under vmap on an accelerator also the fastest model.kernels for training, `--kernels=fastest`:
XLA's grouped convolutions or dense blocks of seeds, `block_diagonal*`), runs `--smoke_iterations` iterations
of the first row on its full pool, and prints the per-phase times and the projected wall time of a full 10-seed
row.

With --budget_s the campaign goes on from what results/ records: first the row pending in
results/mnist/pending.tar.gz (the one unfinished row, whatever its data set), then each row of --rows
(ROW_ORDER) whose seeds 0 ... --seeds_per_row - 1 are not all recorded in results/DATASET/runs, up to
--max_seeds consecutive seeds at once (`--config.num_seeds` of the driver, in run folders under --workroot),
fewer when the projection says only fewer fit in the time left (a supervised row must finish, any other must
get through its fit and 3 iterations), block after block. Every finished iteration's lines are appended to
OUTDIR/progress.jsonl as it happens. Before the budget runs out the driver stops after a checkpoint and
OUTDIR/pending.tar.gz takes the run folder (checkpoint and per-seed logs), which --merge puts where the next
job finds it. A job with no pending row and every row's seeds recorded says so and stops before the checks.

OUTDIR ends with at most five files, one folder deep: campaign.json (device, versions, commit, reference check,
timings, projection, what each row did), progress.jsonl, rows.json (finished rows; per seed every metrics
line, the number of oracle queries and the final test accuracy), runs.tar.gz (their run folders
ROW/seed_S/: config.json, metrics.jsonl, oracle_log.jsonl, summary.json, curves.png) and pending.tar.gz; plus
any log the caller writes there.
"""
from __future__ import annotations

import json
import pathlib
import shutil
import sys
import tarfile
import time

import jax
import numpy as np
from absl import app, flags

from deepbass_jax import algorithm, config as config_lib, data, driver as driver_lib, layers
from deepbass_jax.workdir import checkpoint, runfolder
from experiments import provenance, reporting
from experiments.campaign_results import (PENDING, PENDING_ROW, add_block, latest_accelerator_timings,
                                          latest_kernel_choice, merge, parse_row, pending_path, pending_progress,
                                          seed_records, seeds_done, tar_folders)
from experiments.configs import mnist
from experiments.device_check import (REFERENCE, check_reference, device_facts, kernel_candidates,
                                      projection_from, reference_outputs, time_device_functions,
                                      time_training_step)

# The campaign's rows in order (Table 2 and Table 3; experiments/configs/mnist.py presets).
ROW_ORDER = (
    "all_data_max_entropy", "semi_supervised_100",
    "plus_300", "plus_aligned_semi_supervised_100",  # DeepBASS+ (beyond the paper), right after the pending row
    "lee_100", "deterministic_semi_supervised_100",  # the paper's comparators with 100 labels
    "all_data_max_entropy_1000", "plus_1000", "lee_1000",
    "step_wise_max_entropy", "step_wise_above_average", "all_data_above_average", "semi_supervised_300",
    "semi_supervised_600", "semi_supervised_1000", "semi_supervised_3000", "supervised_600", "supervised_1000",
    "supervised_3000", "supervised_60000",
    # Fashion-MNIST (the paper has no numbers for it): the rows results/fashion_mnist holds at CPU scale, and
    # supervised learning with ten times the labels.
    "fashion_mnist:all_data_max_entropy", "fashion_mnist:step_wise_max_entropy", "fashion_mnist:supervised_300",
    "fashion_mnist:supervised_3000",
    # Gal et al.'s DBAL protocol (Table 3's comparators): active learning alone, retrained after each acquisition.
    "dbal_bald", "dbal_max_entropy", "dbal_variation_ratio", "dbal_random",
)
START_MARGIN_S = 20.0  # compilation and set-up of a new row, beyond its projected initial fit
SAVE_MARGIN_S = 10.0  # writing the snapshot, rows.json and runs.tar.gz at the end of a job

_SMOKE = flags.DEFINE_bool("smoke", False, "Run the smoke check alone.")
_BUDGET_S = flags.DEFINE_float("budget_s", 0.0, "Wall seconds for everything: smoke check, then the row.")
_OUTDIR = flags.DEFINE_string("outdir", None, "Where campaign.json, progress.jsonl, row.json, runs.tar.gz go.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder with MNIST's four IDX files (unset: DATA_ROOT/mnist, "
                                "else the download cache).")
_DATA_ROOT = flags.DEFINE_string("data_root", None, "Folder with a folder of IDX files per data set: "
                                 "mnist/, fashion_mnist/ (unset: the download cache).")
_ROWS = flags.DEFINE_list("rows", list(ROW_ORDER), "Presets of experiments/configs/mnist.py, in campaign "
                          "order; DATASET:PRESET runs one on another data set (e.g. fashion_mnist:supervised_300).")
_SEEDS_PER_ROW = flags.DEFINE_integer("seeds_per_row", 10, "Seeds 0 ... S-1 of every row (the paper: 10 runs).")
_MAX_SEEDS = flags.DEFINE_integer("max_seeds", 10, "At most this many seeds run at once.")
_MAX_ITERATIONS = flags.DEFINE_integer("max_iterations", 0, "Stop after this many iterations (initial fits aside) "
                                       "in this job, e.g. for fixed-length job slots (0: no limit).")
_SEED_AXIS = flags.DEFINE_enum("seed_axis", "auto", ("auto",) + algorithm.SEED_AXES,
                               "How seeds share the program; auto: the faster of vmap and map, measured.")
_KERNELS = flags.DEFINE_enum("kernels", "fastest", ("fastest", "measure") + layers.KERNELS,
                             "model.kernels of every row; fastest: under the vmap seed axis, whichever of "
                             "auto and the block_diagonal choices trains --max_seeds seeds fastest, as a job "
                             "on this device kind and jax version recorded in --results/bench found (only it "
                             "is checked and timed beside auto), else measured now (else auto); measure: "
                             "measured now in any case.")
_SMOKE_ITERATIONS = flags.DEFINE_integer("smoke_iterations", 3, "Iterations of the row the smoke check runs.")
_CHUNK_SIZE = flags.DEFINE_integer("chunk_size", 0, "Pool inference chunk per seed (0: by backend).")
# Smaller settings for tests on the CPU; 0 keeps the preset's value.
_POOL_SIZE = flags.DEFINE_integer("pool_size", 0, "Override config.pool_size (0: the preset's, all 60,000).")
_ITERATIONS = flags.DEFINE_integer("iterations", 0, "Override config.iterations (0: the preset's).")
_INITIAL_EPOCHS = flags.DEFINE_integer("initial_epochs", 0, "Override config.initial_epochs (0: the preset's).")
_TEST_SIZE = flags.DEFINE_integer("test_size", 0, "Override config.test_size (0: the preset's, all 10,000).")
_MERGE = flags.DEFINE_string("merge", None, "Fold a job's OUTDIR into --results (then do nothing else).")
_RESULTS = flags.DEFINE_string("results", "results", "The results folder: done seeds and the pending row are read "
                               "from it; --merge writes into it.")
_ALLOW_REDUCED = flags.DEFINE_bool("allow_reduced", False, "--merge a job run with smaller settings (scale 'reduced').")
_WORKROOT = flags.DEFINE_string("workroot", "/tmp/deepbass_campaign", "Run folders of this job (checkpoints).")
_STATUS = flags.DEFINE_bool("status", False, "Print which rows --results holds and which remain, with their "
                            "projected device time (then do nothing else).")
_WRITE_REFERENCE = flags.DEFINE_bool("write_reference", False, "Write experiments/reference_cnn.json (CPU only).")

POOL_CHUNK = {"cpu": 256}  # per seed; other backends: DEVICE_POOL_CHUNK
DEVICE_POOL_CHUNK = 1024
LABELED_CHUNK = {"cpu": 64}
DEVICE_LABELED_CHUNK = 128


# --------------------------------------------------------------------------------------- the rows
def row_name(config) -> str:
    """The campaign's name of `config`'s row (what parse_row reads)."""
    return config.preset if config.data.name == "mnist" else f"{config.data.name}:{config.preset}"


def data_dir(dataset: str):
    """The IDX folder of `dataset` the flags give (None: the download cache)."""
    if dataset == "mnist" and _DATA_DIR.value:
        return _DATA_DIR.value
    return str(pathlib.Path(_DATA_ROOT.value) / dataset) if _DATA_ROOT.value else None


def row_config(row: str):
    dataset, preset = parse_row(row)
    config = mnist.get_config(preset)
    config.data.name = dataset
    config.data.data_dir = data_dir(dataset)
    backend = jax.default_backend()
    config.chunk_size = _CHUNK_SIZE.value or POOL_CHUNK.get(backend, DEVICE_POOL_CHUNK)
    config.labeled_chunk_size = LABELED_CHUNK.get(backend, DEVICE_LABELED_CHUNK)
    config.labels_export_every = -1  # a results table needs no labels export: neither host time nor a final pass
    for flag, field in ((_POOL_SIZE, "pool_size"), (_ITERATIONS, "iterations"), (_INITIAL_EPOCHS, "initial_epochs"),
                        (_TEST_SIZE, "test_size")):
        if flag.value:
            config[field] = flag.value
    return config


def run_config(row: str, first_seed: int, num_seeds: int, seed_axis: str, kernels: str = "auto"):
    config = row_config(row)
    config.seed, config.num_seeds, config.seed_axis = first_seed, num_seeds, seed_axis
    config.model.kernels = kernels
    return config


def _stash_pending(workdir: pathlib.Path, config, outdir: pathlib.Path) -> None:
    """OUTDIR/pending.tar.gz: the unfinished run folder (checkpoint, per-seed logs) and how to run it on."""
    (workdir / PENDING_ROW).write_text(json.dumps({"row": row_name(config), "seed": config.seed,
                                                   "num_seeds": config.num_seeds, "seed_axis": config.seed_axis}))
    (outdir / PENDING).write_bytes(tar_folders({".": workdir}))


def _unstash_pending(archive: pathlib.Path, workroot: pathlib.Path):
    """Extracts a pending run folder; returns (its config, its workdir)."""
    with tarfile.open(archive) as pending:
        row = json.loads(pending.extractfile(f"./{PENDING_ROW}").read())
        name = row.get("row", row.get("preset"))  # "preset": an MNIST row stashed before rows named data sets
        workdir = workroot / name
        shutil.rmtree(workdir, ignore_errors=True)
        pending.extractall(workdir, filter="data")
    return run_config(name, row["seed"], row["num_seeds"], row["seed_axis"]), workdir


def _missing_block(done: set, seeds_per_row: int, max_seeds: int) -> list[int]:
    """The first run of consecutive seeds (at most max_seeds) of 0 ... seeds_per_row - 1 not yet done."""
    missing = [s for s in range(seeds_per_row) if s not in done]
    block = missing[:1]
    for seed in missing[1:max_seeds]:
        if seed != block[-1] + 1:
            break
        block.append(seed)
    return block


def next_block(results_dir: pathlib.Path, rows, finished: dict, max_seeds: int):
    """The first row of `rows` with seeds of 0 ... --seeds_per_row - 1 neither recorded under results_dir nor
    finished in this job, and the first run of them (`_missing_block`): (row, seeds), or None."""
    for row in rows:
        done = seeds_done(results_dir, row_config(row))
        done |= {r["seed"] for r in finished.get(row, {}).get("results", [])}
        block = _missing_block(done, _SEEDS_PER_ROW.value, max_seeds)
        if block:
            return row, block
    return None


# ------------------------------------------------------------------------------------------- a job
def phase_summary(metrics: list[dict]) -> dict:
    """Mean per-phase seconds of iterations (all seeds together: any one seed's metrics lines hold them), leaving
    out the first one a process ran (it compiles). A phase is averaged over the lines that time it: a row resumed
    from an older job holds lines from before a phase was split off (e.g. "accuracy" from "metrics")."""
    timed = [line for line in metrics if "phase_seconds" in line]
    later = timed[1:] or timed
    if not later:
        return {}
    names = dict.fromkeys(phase for line in later for phase in line["phase_seconds"])
    phases = {phase: float(np.mean([line["phase_seconds"][phase] for line in later if phase in line["phase_seconds"]]))
              for phase in names}
    phases["iteration_total"] = float(np.mean([sum(line["phase_seconds"].values()) for line in later]))
    return phases


def seeds_that_fit(config, block_size: int, seconds_left: float, projection) -> int:
    """The most seeds (at most block_size) of `config`'s row to start with seconds_left: a supervised row (no
    iterations) must finish, any other must get through its initial fit and 3 iterations (it checkpoints after
    each and a later job continues it). 0 when not even one seed fits. projection(config, seeds) -> seconds."""
    for seeds in range(block_size, 0, -1):
        estimate = projection(config, seeds)
        needed = estimate["initial_fit"] + min(3, config.iterations) * estimate["iteration"] + START_MARGIN_S
        if needed <= seconds_left:
            return seeds
    return 0


def _optional(work, report: dict, kernels: str):
    """work() for an alternative kernel choice, or None (the error noted in report["kernel_errors"]) if it raises:
    an optional speed-up, new to the device's jax, must not cost the job."""
    try:
        return work()
    except Exception as error:  # noqa: BLE001 (any failure rules the choice out; the default kernels go on)
        report.setdefault("kernel_errors", {})[kernels] = repr(error)
        print(f"{kernels} kernels ruled out: {error!r}", flush=True)
        return None


class _Job:
    """One job: its report (what OUTDIR/campaign.json holds), its clock and budget, and the data sets loaded."""

    def __init__(self, outdir: pathlib.Path, budget_s: float):
        self.outdir, self.started = outdir, time.time()
        self.deadline = self.started + budget_s if budget_s else None
        self.report = {"command": " ".join(["python -m experiments.campaign"] + sys.argv[1:]),
                       "commit": provenance.commit(), "device": device_facts(), "budget_s": budget_s, "jobs": [],
                       "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started))}
        self._datasets: dict = {}  # data set name -> Dataset, loaded when a row first needs it

    def save(self) -> None:
        self.report["wall_seconds"] = time.time() - self.started
        checkpoint.write_json(self.outdir / "campaign.json", self.report)

    def dataset(self, config) -> data.Dataset:
        if config.data.name not in self._datasets:
            self._datasets[config.data.name] = data.load(config.data)
        return self._datasets[config.data.name]

    def pool_size(self, config) -> int:
        return config.pool_size or len(self.dataset(config).train_images)


def _recorded_choice(job: _Job, results_dir: pathlib.Path, candidates: tuple[str, ...], max_seeds: int):
    """`candidates` (the default kernels first) cut to the default and the choice an earlier job on this device kind
    and jax version timed fastest for max_seeds seeds (campaign_results.latest_kernel_choice), so that the others
    are neither checked nor timed again; all of them when no such job is recorded."""
    recorded = latest_kernel_choice(results_dir, job.report["device"], max_seeds)
    if recorded is None or recorded["kernels"] not in candidates:
        return candidates
    job.report["kernels_recorded"] = recorded
    print(f"kernels: {recorded['kernels']} trained {max_seeds} seeds fastest in the job of {recorded['started_utc']} "
          f"(commit {recorded['commit']}) on this device kind and jax; only it is checked and timed beside the "
          "default (--kernels=measure times every choice)", flush=True)
    return tuple(dict.fromkeys((candidates[0], recorded["kernels"])))


def _checked_kernels(job: _Job, candidates: tuple[str, ...]) -> tuple[str, ...]:
    """The reference check of every kernel choice in `candidates` (the default first); returns the default and the
    alternatives that passed.

    The default kernels are checked as they run (TF32 on a GPU); an alternative in float32 throughout, where a
    wrong computation stands out from TF32's round-off (up to 3 % on the first gradient entries): one that fails
    is not used. A failure of the default is reported, and the job goes on."""
    checks = [check_reference(candidates[0])]
    for kernels in candidates[1:]:
        checks.append(_optional(lambda: check_reference(kernels, exact=True), job.report, kernels)
                      or {"kernels": kernels, "precision": "float32", "passed": False})
    job.report["reference"] = {"passed": checks[0]["passed"], "checks": checks}
    for check in checks:
        print(f"reference check ({check['kernels']} kernels, {check['precision']} precision): {check}", flush=True)
    return candidates[:1] + tuple(c["kernels"] for c in checks[1:] if c["passed"])


def _measure(job: _Job, config, axes, candidates: tuple[str, ...], max_seeds: int):
    """The micro-benchmark on `config` (the first row's, with the default kernels): which seed axis of `axes`,
    which kernels of `candidates`, and how the time grows with the number of seeds. Returns (seed axis, kernels,
    projection(config, seeds) -> projected seconds)."""
    first_row, dataset = row_name(config), job.dataset(config)
    # One step a call as well, what the epochs did before train.steps_per_call, tells the dispatch cost that saves:
    # on an accelerator, for the seeds the job trains (a compilation each; a CPU step of ~80 ms dwarfs its dispatch).
    timings = [time_device_functions(config, dataset, seeds, axis,
                                     single_step=seeds == max_seeds and job.report["device"]["backend"] != "cpu")
               for axis in axes for seeds in sorted({1, max_seeds})]
    job.report["device_function_seconds"] = timings
    for timing in timings:
        alone = timing["single_step_seconds"]
        print(f"  {timing['seed_axis']:>4} x{timing['seeds']:>2} seeds: pool chunk of {config.chunk_size} "
              f"{1e3 * timing['chunk_seconds']:.2f} ms, training step {1e3 * timing['step_seconds']:.2f} ms "
              f"({timing['steps_per_call']} per call" + (f"; alone {1e3 * alone:.2f} ms)" if alone else ")"), flush=True)
    projections = {axis: projection_from(timings, axis, job.pool_size) for axis in axes}
    seed_axis = min(axes, key=lambda axis: projections[axis](config, max_seeds)["row"])
    job.report["seed_axis"] = seed_axis

    # Which kernels train max_seeds seeds at once the fastest (the choices differ under vmap alone).
    kernels = candidates[0]
    if seed_axis == "vmap" and len(candidates) > 1:
        most = next(t for t in timings if t["seed_axis"] == seed_axis and t["seeds"] == max_seeds)
        steps = {kernels: {key: most[key] for key in ("step_seconds", "steps_per_call", "single_step_seconds")}}
        for other in candidates[1:]:
            # Without the one-step-a-call timing, which informs and decides nothing: a compilation less.
            timing = _optional(lambda: time_training_step(run_config(first_row, 0, max_seeds, seed_axis, other),
                                                          dataset, max_seeds, seed_axis, single_step=False),
                               job.report, other)
            if timing:
                steps[other] = timing
        kernels = min(steps, key=lambda k: steps[k]["step_seconds"])
        most.update(steps[kernels], kernels=kernels)
        job.report["kernels_step_seconds"] = {k: v["step_seconds"] for k, v in steps.items()}
        print(f"training step of {max_seeds} seeds by kernels: "
              + ", ".join(f"{k} {1e3 * v['step_seconds']:.2f} ms" for k, v in steps.items()) + f"; using {kernels}",
              flush=True)
        projections[seed_axis] = projection_from(timings, seed_axis, job.pool_size)
    job.report["kernels"] = kernels
    projection = projections[seed_axis]
    job.report["projected_from_device_functions"] = {str(r): projection(config, r) for r in sorted({1, max_seeds, 10})}
    print(f"seed axis {seed_axis}; projected {first_row} ({config.iterations} iterations): "
          + ", ".join(f"{r} seeds {v['row']:.0f} s" for r, v in job.report["projected_from_device_functions"].items()),
          flush=True)
    return seed_axis, kernels, projection


def _smoke(job: _Job, config, seed_axis: str, kernels: str, projection, max_seeds: int) -> None:
    """The smoke check proper: --smoke_iterations iterations of `config`'s row (the first) on its full pool, with
    per-phase times and the projected wall time of the 10-seed row in the report."""
    first_row = row_name(config)
    smoke_config = run_config(first_row, 0, max_seeds, seed_axis, kernels)
    smoke_config.iterations = _SMOKE_ITERATIONS.value
    smoke_dir = pathlib.Path(_WORKROOT.value) / "smoke"
    shutil.rmtree(smoke_dir, ignore_errors=True)
    started = time.time()
    driver_lib.Driver(smoke_config, smoke_dir, dataset=job.dataset(config)).run()
    records = seed_records(smoke_dir, smoke_config)
    phases = phase_summary(records[0]["metrics"])
    num_pool = job.pool_size(config)
    smoke = job.report["smoke"] = {"row": first_row, "seeds": max_seeds, "iterations": smoke_config.iterations,
                                   "pool": num_pool, "wall_seconds": time.time() - started, "phase_seconds": phases,
                                   "test_accuracy": [r["test_accuracy"] for r in records]}
    if phases:
        # Per-seed cost grows at most linearly: scaled by 10/R when R < 10 (an upper bound).
        row_10 = (config.iterations * phases["iteration_total"] * max(10 / max_seeds, 1.0)
                  + projection(config, 10)["initial_fit"])
        smoke["projected_10_seed_row_seconds"] = row_10
        print(f"smoke: {max_seeds} seeds x {smoke_config.iterations} iterations of {first_row} on {num_pool:,} "
              f"images in {smoke['wall_seconds']:.1f} s (with compilation); per iteration "
              + ", ".join(f"{k} {v:.3f} s" for k, v in phases.items())
              + f"; projected 10-seed row ({config.iterations} iterations): {row_10:.0f} s", flush=True)


def _run_rows(job: _Job, pending, seed_axis: str, kernels: str, projection, max_seeds: int) -> None:
    """The campaign proper: the pending row (config, workdir) if any, then blocks of the rows in order, until
    every row has its seeds or the budget is spent (the unfinished row then goes to OUTDIR/pending.tar.gz)."""
    report, outdir, deadline = job.report, job.outdir, job.deadline
    results_dir, workroot = pathlib.Path(_RESULTS.value), pathlib.Path(_WORKROOT.value)
    finished: dict = {}  # preset -> row finished in this job (its seeds, from one or more blocks)
    seed_folders: dict = {}  # "PRESET/seed_S" -> the run folder of a finished seed, for runs.tar.gz
    iterations_run = 0
    while True:
        if pending is not None:
            config, workdir = pending
            resumed = True
        else:
            resumed = False
            found = next_block(results_dir, _ROWS.value, finished, max_seeds)
            if found is None:
                print("campaign: every row has its seeds", flush=True)
                break
            row, block = found
            config = run_config(row, block[0], len(block), seed_axis, kernels)
            if deadline is not None:
                fits = seeds_that_fit(config, config.num_seeds, deadline - time.time(), projection)
                if not fits:
                    print(f"campaign: no time left to start {row_name(config)}", flush=True)
                    break
                config.num_seeds = fits
            workdir = workroot / f"{row_name(config)}_from_seed_{config.seed}"
            shutil.rmtree(workdir, ignore_errors=True)
        pending = None
        row = row_name(config)
        seeds = list(range(config.seed, config.seed + config.num_seeds))
        entry = {"row": row, "seeds": seeds, "seed_axis": config.seed_axis, "resumed": resumed}
        report["jobs"].append(entry)
        print(f"{row}: seeds {seeds}, " + ("continuing" if resumed else "from the start"), flush=True)
        row_started = time.time()
        clock = {"last": None, "recent": []}

        def should_stop() -> bool:  # asked after every checkpoint: stop before the budget or the iteration limit
            nonlocal iterations_run
            now = time.time()
            if clock["last"] is not None:
                clock["recent"].append(now - clock["last"])
                iterations_run += 1
            clock["last"] = now
            folders = [runfolder.seed_folder(workdir, seed, config.num_seeds) for seed in seeds]
            lines = [checkpoint.read_jsonl(folder / runfolder.METRICS)[-1] for folder in folders]
            checkpoint.append_jsonl(outdir / "progress.jsonl", [{"row": row, "time": now - job.started,
                                                                 "seeds": seeds, "lines": lines}])
            entry["iteration"] = lines[0]["iteration"]
            typical = float(np.median(clock["recent"][-5:])) if clock["recent"] else 0.0
            out_of_time = deadline is not None and now + 1.5 * typical + SAVE_MARGIN_S > deadline
            return out_of_time or (bool(_MAX_ITERATIONS.value) and iterations_run >= _MAX_ITERATIONS.value)

        summary = driver_lib.Driver(config, workdir, dataset=job.dataset(config)).run(should_stop=should_stop)
        entry["wall_seconds"] = time.time() - row_started
        if summary is None:
            _stash_pending(workdir, config, outdir)
            entry["pending"] = True
            print(f"{row}: stopped part-way; {outdir / PENDING} continues it", flush=True)
            job.save()
            break
        records = seed_records(workdir, config)
        entry["iteration"] = records[0]["metrics"][-1]["iteration"]
        entry["phase_seconds"] = phase_summary(records[0]["metrics"])
        accuracies = [r["test_accuracy"] for r in records]
        mean, std = reporting.mean_std(accuracies)
        entry.update(test_accuracy=accuracies, mean=mean, std=std)
        print(f"{row} done: mean {entry['mean']:.4f} over seeds {seeds}: {accuracies}", flush=True)
        add_block(finished, report, row, json.loads(config.to_json_best_effort(sort_keys=True)),
                  config.seed_axis, entry["wall_seconds"], records)
        seed_folders.update({f"{row}/seed_{seed}": runfolder.seed_folder(workdir, seed, config.num_seeds)
                             for seed in seeds})
        checkpoint.write_json(outdir / "rows.json", finished)
        (outdir / "runs.tar.gz").write_bytes(tar_folders(seed_folders, skip=(".lock", runfolder.CHECKPOINT,
                                                                             "checkpoint.prev.msgpack", PENDING_ROW)))
        job.save()
        if _MAX_ITERATIONS.value and iterations_run >= _MAX_ITERATIONS.value:
            break


def campaign(outdir: pathlib.Path, budget_s: float, smoke_only: bool) -> dict:
    """The smoke check, then (with a budget) rows of the campaign until the budget is spent; see the module
    docstring. Returns what campaign.json holds."""
    outdir.mkdir(parents=True, exist_ok=True)
    job = _Job(outdir, budget_s)
    device = job.report["device"]
    print(f"backend {device['backend']}, device {device['device_kind']} (x{device['devices']}), jax {jax.__version__}, "
          f"commit {job.report['commit']}", flush=True)
    for row in _ROWS.value:  # a misspelt row, a missing data folder or (rows to run) a budget over the pool fails now
        row_settings = row_config(row)
        folder = row_settings.data.data_dir
        if folder and not pathlib.Path(folder).is_dir():
            raise FileNotFoundError(f"campaign row {row!r} reads {folder}, which is not a folder: give "
                                    "--data_root=DIR holding mnist/ and fashion_mnist/ (or --data_dir=MNIST_DIR).")
        try:
            if not smoke_only:
                config_lib.check_budget(row_settings, row_settings.pool_size or FULL_POOL)
        except config_lib.ConfigError as error:
            raise config_lib.ConfigError(f"campaign row {row!r}: {error} (--rows lists the rows run)") from None
    results_dir = pathlib.Path(_RESULTS.value)
    pending = None
    if pending_path(results_dir).exists():
        pending = _unstash_pending(pending_path(results_dir), pathlib.Path(_WORKROOT.value))
    elif not smoke_only and next_block(results_dir, _ROWS.value, {}, 1) is None:
        print("campaign: every row has its seeds; nothing to check or run", flush=True)
        job.save()  # before the reference check and the micro-benchmark: a device's time is not spent on them
        return job.report
    first_row = row_name(pending[0]) if pending is not None else _ROWS.value[0]
    config = row_config(first_row)
    max_seeds = _MAX_SEEDS.value
    axes = algorithm.SEED_AXES if _SEED_AXIS.value == "auto" else (_SEED_AXIS.value,)
    candidates = kernel_candidates("fastest" if _KERNELS.value == "measure" else _KERNELS.value,
                                   "vmap" if "vmap" in axes else "map", max_seeds)
    if _KERNELS.value == "fastest" and len(candidates) > 1:
        candidates = _recorded_choice(job, results_dir, candidates, max_seeds)
    candidates = _checked_kernels(job, candidates)
    config.model.kernels = candidates[0]
    job.save()
    seed_axis, kernels, projection = _measure(job, config, axes, candidates, max_seeds)
    if pending is not None:
        pending[0].model.kernels = kernels
    job.save()
    if _SMOKE_ITERATIONS.value:
        _smoke(job, config, seed_axis, kernels, projection, max_seeds)
        job.save()
    if not smoke_only:
        _run_rows(job, pending, seed_axis, kernels, projection, max_seeds)
        job.save()
    return job.report


# ------------------------------------------------------------------------------------------ status
FULL_POOL = 60_000  # the training images of MNIST and of Fashion-MNIST: a paper-scale row's pool


def status(results_dir: pathlib.Path, rows, seeds_per_row: int, max_seeds: int) -> dict:
    """Per row: the seeds recorded at paper scale, the pending seeds and their iteration, the seeds not started,
    and the device seconds projected for what remains (pool inference and training, blocks of max_seeds, at the
    speed the newest accelerator job measured; host work aside, so a lower bound)."""
    pending, timings = pending_progress(results_dir), latest_accelerator_timings(results_dir)
    projection = None if timings is None else projection_from(
        timings["device_function_seconds"], timings["seed_axis"], lambda config: config.pool_size or FULL_POOL)
    entries = []
    for row in rows:
        config = row_config(row)
        if timings is not None:  # the chunk the timings are of (jobs before it was recorded: the device default)
            config.chunk_size = timings["device_function_seconds"][0].get("chunk_size", DEVICE_POOL_CHUNK)
        done = seeds_done(results_dir, config)
        running = pending["seeds"] if pending is not None and pending["row"] == row else []
        to_start = [seed for seed in range(seeds_per_row) if seed not in done and seed not in running]
        entry = {"row": row, "labels": config.budget, "iterations": config.iterations, "seeds": seeds_per_row,
                 "seeds_done": sorted(done), "pending": None, "seeds_to_start": to_start, "projected_seconds": None}
        if running:
            entry["pending"] = {"seeds": running, "iteration": pending["iteration"]}
        if projection is not None:
            seconds = sum(projection(config, len(to_start[start: start + max_seeds]))["row"]
                          for start in range(0, len(to_start), max_seeds))
            if running:
                seconds += (config.iterations - pending["iteration"]) * projection(config, len(running))["iteration"]
            entry["projected_seconds"] = seconds
        entries.append(entry)
    return {"rows": entries, "timings": None if timings is None else {
        "device": timings["device"]["description"], "commit": timings["commit"], "started_utc": timings["started_utc"],
        "seed_axis": timings["seed_axis"]},
        "projected_seconds": None if projection is None else sum(e["projected_seconds"] for e in entries)}


def print_status(report: dict) -> None:
    print(f"{'row':<38} {'labels':>6} {'iter.':>5}  {'seeds done':<10} {'pending':<22} {'projected':>9}")
    for entry in report["rows"]:
        pending = entry["pending"]
        pending = (f"seeds {pending['seeds'][0]}-{pending['seeds'][-1]} at {pending['iteration']}"
                   if pending else "-")
        seconds = "?" if entry["projected_seconds"] is None else f"{entry['projected_seconds']:.0f} s"
        print(f"{entry['row']:<38} {entry['labels']:>6} {entry['iterations']:>5}  "
              f"{len(entry['seeds_done']):>2} of {entry['seeds']:<5} {pending:<22} {seconds:>9}")
    if report["timings"] is None:
        print("no accelerator job in results/bench yet: no projection")
        return
    timings = report["timings"]
    print(f"remaining: {report['projected_seconds']:.0f} device seconds of pool inference and training (a lower bound: "
          f"host work aside) at the speed measured on {timings['device']} ({timings['started_utc']}, commit "
          f"{timings['commit']}, seed axis {timings['seed_axis']})")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _WRITE_REFERENCE.value:
        if jax.default_backend() != "cpu":
            raise app.UsageError("--write_reference writes the CPU's numbers: run it on the CPU.")
        checkpoint.write_json(REFERENCE, reference_outputs(layers.resolve_kernels("auto")))
        print(f"wrote {REFERENCE}")
        return
    if _MERGE.value:
        for path in merge(pathlib.Path(_MERGE.value), pathlib.Path(_RESULTS.value), _ALLOW_REDUCED.value):
            print(f"wrote {path}")
        return
    if _STATUS.value:
        print_status(status(pathlib.Path(_RESULTS.value), _ROWS.value, _SEEDS_PER_ROW.value, _MAX_SEEDS.value))
        return
    if _SMOKE.value == bool(_BUDGET_S.value):
        raise app.UsageError("give one of --smoke (the check alone), --budget_s=SECONDS (the check, then the row) "
                             "or --merge=DIR.")
    if not _OUTDIR.value:
        raise app.UsageError("give --outdir=DIR for campaign.json, progress.jsonl, row.json and runs.tar.gz.")
    campaign(pathlib.Path(_OUTDIR.value), _BUDGET_S.value, smoke_only=_SMOKE.value)


if __name__ == "__main__":
    app.run(main)
