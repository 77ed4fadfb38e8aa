"""The paper-scale campaign on accelerators: a smoke check proven on first contact, then Tables 2 and 3 (and
the same rows on Fashion-MNIST) row by row across short jobs, each continuing where the last one stopped, and a
merge into results/.

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

import contextlib
import io
import json
import math
import os
import pathlib
import platform
import shutil
import sys
import tarfile
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from deepbass_jax import (active, algorithm, checkpoint, config as config_lib, data, layers, models, runfolder,
                          train)
from experiments import flagdefs, mnist_report, provenance
from experiments.configs import mnist

# The campaign's rows in order (Table 2 and Table 3; experiments/configs/mnist.py presets).
ROW_ORDER = (
    "all_data_max_entropy", "semi_supervised_100", "all_data_max_entropy_1000",
    "step_wise_max_entropy", "step_wise_above_average", "all_data_above_average", "semi_supervised_300",
    "semi_supervised_600", "semi_supervised_1000", "semi_supervised_3000", "supervised_600", "supervised_1000",
    "supervised_3000", "supervised_60000",
    # Fashion-MNIST (the paper has no numbers for it): the rows results/fashion_mnist holds at CPU scale, and
    # supervised learning with ten times the labels.
    "fashion_mnist:all_data_max_entropy", "fashion_mnist:step_wise_max_entropy", "fashion_mnist:supervised_300",
    "fashion_mnist:supervised_3000",
)
DATASETS = ("mnist", "fashion_mnist")
PENDING = "pending.tar.gz"  # the folder of an unfinished row: its checkpoint and per-seed logs
PENDING_ROW = "campaign_row.json"  # inside it: the preset, seeds and seed axis it runs
START_MARGIN_S = 20.0  # compilation and set-up of a new row, beyond its projected initial fit
SAVE_MARGIN_S = 10.0  # writing the snapshot, rows.json and runs.tar.gz at the end of a job


_SMOKE = flagdefs.define(flags.DEFINE_bool, "smoke", False, "Run the smoke check alone.")
_BUDGET_S = flagdefs.define(flags.DEFINE_float, "budget_s", 0.0, "Wall seconds for everything: smoke check, then the row.")
_OUTDIR = flagdefs.define(flags.DEFINE_string, "outdir", None, "Where campaign.json, progress.jsonl, row.json, runs.tar.gz go.")
_DATA_DIR = flagdefs.define(flags.DEFINE_string, "data_dir", None, "Folder with MNIST's four IDX files (unset: DATA_ROOT/mnist, "
                               "else the download cache).")
_DATA_ROOT = flagdefs.define(flags.DEFINE_string, "data_root", None, "Folder with a folder of IDX files per data set: "
                               "mnist/, fashion_mnist/ (unset: the download cache).")
_ROWS = flagdefs.define(flags.DEFINE_list, "rows", list(ROW_ORDER), "Presets of experiments/configs/mnist.py, in campaign "
                         "order; DATASET:PRESET runs one on another data set (e.g. fashion_mnist:supervised_300).")
_SEEDS_PER_ROW = flagdefs.define(flags.DEFINE_integer, "seeds_per_row", 10, "Seeds 0 ... S-1 of every row (the paper: 10 runs).")
_MAX_SEEDS = flagdefs.define(flags.DEFINE_integer, "max_seeds", 10, "At most this many seeds run at once.")
_MAX_ITERATIONS = flagdefs.define(flags.DEFINE_integer, "max_iterations", 0, "Stop after this many iterations (initial fits aside) "
                                       "in this job, e.g. for fixed-length job slots (0: no limit).")
_SEED_AXIS = flagdefs.define(flags.DEFINE_enum, "seed_axis", "auto", ("auto",) + algorithm.SEED_AXES,
                               "How seeds share the program; auto: the faster of vmap and map, measured.")
_KERNELS = flagdefs.define(flags.DEFINE_enum, "kernels", "fastest", ("fastest",) + layers.KERNELS,
                            "model.kernels of every row; fastest: under the vmap seed axis, whichever of "
                            "auto and the block_diagonal choices trains --max_seeds seeds fastest, measured "
                            "(else auto).")
_SMOKE_ITERATIONS = flagdefs.define(flags.DEFINE_integer, "smoke_iterations", 3, "Iterations of the row the smoke check runs.")
_CHUNK_SIZE = flagdefs.define(flags.DEFINE_integer, "chunk_size", 0, "Pool inference chunk per seed (0: by backend).")
# Smaller settings for tests on the CPU; 0 keeps the preset's value.
_POOL_SIZE = flagdefs.define(flags.DEFINE_integer, "pool_size", 0, "Override config.pool_size (0: the preset's, all 60,000).")
_ITERATIONS = flagdefs.define(flags.DEFINE_integer, "iterations", 0, "Override config.iterations (0: the preset's).")
_INITIAL_EPOCHS = flagdefs.define(flags.DEFINE_integer, "initial_epochs", 0, "Override config.initial_epochs (0: the preset's).")
_TEST_SIZE = flagdefs.define(flags.DEFINE_integer, "test_size", 0, "Override config.test_size (0: the preset's, all 10,000).")
_MERGE = flagdefs.define(flags.DEFINE_string, "merge", None, "Fold a job's OUTDIR into --results (then do nothing else).")
_RESULTS = flagdefs.define(flags.DEFINE_string, "results", "results", "The results folder: done seeds and the pending row are read "
                               "from it; --merge writes into it.")
_ALLOW_REDUCED = flagdefs.define(flags.DEFINE_bool, "allow_reduced", False, "--merge a job run with smaller settings (scale 'reduced').")
_WORKROOT = flagdefs.define(flags.DEFINE_string, "workroot", "/tmp/deepbass_campaign", "Run folders of this job (checkpoints).")
_STATUS = flagdefs.define(flags.DEFINE_bool, "status", False, "Print which rows --results holds and which remain, with their "
                           "projected device time (then do nothing else).")
_WRITE_REFERENCE = flagdefs.define(flags.DEFINE_bool, "write_reference", False, "Write experiments/reference_cnn.json (CPU only).")

REFERENCE = pathlib.Path(__file__).with_name("reference_cnn.json")
# TF32 convolutions (XLA's default for float32 on recent GPUs) carry about 3 decimal digits.
REFERENCE_RTOL = 2e-2
# In float32 throughout only the order of the sums differs from the CPU's (a choice that mixed seeds was off by 0.15).
EXACT_RTOL = 1e-3
POOL_CHUNK = {"cpu": 256}  # per seed; other backends: DEVICE_POOL_CHUNK
DEVICE_POOL_CHUNK = 1024
LABELED_CHUNK = {"cpu": 64}
DEVICE_LABELED_CHUNK = 128


# ------------------------------------------------------------------------------------------ provenance
commit = provenance.commit


def device_facts() -> dict:
    device = jax.devices()[0]
    return {"backend": jax.default_backend(), "device_kind": device.device_kind, "devices": jax.device_count(),
            "jax": jax.__version__, "python": platform.python_version(), "host_cores": os.cpu_count(),
            "description": provenance.device()}


# ------------------------------------------------------------------------------ reference numbers
def _reference_inputs():
    x = ((np.arange(8 * 28 * 28) * 37) % 256).reshape(8, 28, 28, 1).astype(np.float32) / 255.0
    labels = np.arange(8, dtype=np.int32) % 10
    return jnp.asarray(x), jnp.asarray(labels)


def reference_outputs(kernels: str) -> dict:
    """The paper CNN (parameters from key 0) on fixed inputs [8, 28, 28, 1]: deterministic logits, logits with
    the dropout masks of key 1, and per-leaf norms and first values of the gradient of the mean cross-entropy.
    The gradient is taken as the campaign trains, under vmap over seeds: beside three more seeds that see the
    images flipped (a kernel choice that mixed seeds would change it; four, so that blocks of two seeds are
    two groups)."""
    module = models.PaperCNN(num_classes=10, kernels=kernels)
    apply_fn = models.make_apply(module)
    params = models.init_params(module, jax.random.key(0), (28, 28, 1))
    x, labels = _reference_inputs()
    dropout_key = jax.random.key(1)

    def loss(params, x):
        logits = apply_fn(params, x, dropout_key)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))

    seeds_params = jax.tree_util.tree_map(lambda leaf: jnp.stack([leaf] * 4), params)
    seeds_images = jnp.stack([x, jnp.flip(x, 1), jnp.flip(x, 2), jnp.flip(x, (1, 2))])
    seeds_grads = jax.jit(jax.vmap(jax.grad(loss)))(seeds_params, seeds_images)
    grads = jax.tree_util.tree_map(lambda leaf: leaf[0], seeds_grads)
    flat = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in
            jax.tree_util.tree_flatten_with_path(grads)[0]}
    return {
        "logits": np.asarray(jax.jit(apply_fn)(params, x)).round(6).tolist(),
        "dropout_logits": np.asarray(jax.jit(apply_fn)(params, x, dropout_key)).round(6).tolist(),
        "grad_norms": {name: float(np.linalg.norm(g)) for name, g in flat.items()},
        "grad_first": {name: g.ravel()[:8].round(8).tolist() for name, g in flat.items()},
    }


def _relative_error(ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.max(np.abs(ours - reference)) / max(np.max(np.abs(reference)), 1e-12))


def check_reference(kernels: str, exact: bool = False) -> dict:
    """This backend's `reference_outputs` against REFERENCE (computed on the CPU): the largest relative error of
    each quantity, and whether all lie within REFERENCE_RTOL; with `exact`, in float32 throughout (no TF32) and
    within EXACT_RTOL, which tells a kernel choice that computes something else from TF32's round-off."""
    expected = json.loads(REFERENCE.read_text())
    with jax.default_matmul_precision("float32") if exact else contextlib.nullcontext():
        ours = reference_outputs(kernels)
    errors = {key: _relative_error(ours[key], expected[key]) for key in ("logits", "dropout_logits")}
    errors["grad_norms"] = max(_relative_error(ours["grad_norms"][name], expected["grad_norms"][name])
                               for name in expected["grad_norms"])
    # First gradient entries relative to their leaf's norm: a small entry carries TF32's error of large ones.
    errors["grad_first"] = max(
        float(np.max(np.abs(np.subtract(ours["grad_first"][name], expected["grad_first"][name]))))
        / expected["grad_norms"][name] for name in expected["grad_first"])
    rtol = EXACT_RTOL if exact else REFERENCE_RTOL
    return {"kernels": kernels, "precision": "float32" if exact else "default", "relative_errors": errors,
            "rtol": rtol, "passed": all(e <= rtol for e in errors.values())}


# --------------------------------------------------------------------------------------- the config
def parse_row(row: str) -> tuple[str, str]:
    """A campaign row, 'PRESET' (MNIST) or 'DATASET:PRESET', -> (data set, preset of experiments/configs/mnist.py)."""
    dataset, _, preset = row.rpartition(":")
    dataset = dataset or "mnist"
    if dataset not in DATASETS:
        raise ValueError(f"campaign row {row!r} names the data set {dataset!r}; choose one of {DATASETS}.")
    return dataset, preset


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


def _steps_per_epoch(config, num_pool: int, num_classes: int = 10) -> tuple[int, int]:
    """Training steps of one iteration at the most labels (an upper bound) and of one initial-fit epoch."""
    initial = num_pool if config.initial_all else config.initial_per_class * num_classes
    labels = config.budget if config.active else initial
    unlabeled = num_pool - labels if config.semi_supervised else 0
    batch, upsample = config.train.batch_size, config.train.upsample
    return -(-(labels * upsample + unlabeled) // batch), -(-(initial * upsample) // batch)


# ---------------------------------------------------------------------------------- micro-benchmark
def _timed(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    started = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - started) / repeats


def _initial_states(config, dataset: data.Dataset, num_seeds: int):
    module = models.build(config.model, dataset.num_classes)
    apply_fn = models.make_apply(module)
    return apply_fn, algorithm.stack([algorithm.initial_train_state(module, apply_fn, jax.random.key(r),
                                                                    dataset.input_shape, config.train)
                                      for r in range(num_seeds)])


def time_device_functions(config, dataset: data.Dataset, num_seeds: int, seed_axis: str,
                          single_step: bool = True) -> dict:
    """Seconds of one pool chunk of MC inference and of one training step (of train.steps_per_call in one call) for
    `num_seeds` seeds at once, with config.model.kernels; `single_step` as in `time_training_step`."""
    apply_fn, states = _initial_states(config, dataset, num_seeds)
    chunk = config.chunk_size
    images = jnp.asarray(dataset.train_images[:chunk])
    keys = jax.random.split(jax.random.key(0), num_seeds)
    ids = np.arange(chunk, dtype=np.uint32)
    chunk_seconds = _timed(lambda: algorithm.seeds_chunk_stats(
        apply_fn, states.params, images, ids, keys, num_passes=config.mc_passes_pool, shared_images=True,
        seed_axis=seed_axis), repeats=3)
    return {"seeds": num_seeds, "seed_axis": seed_axis, "kernels": layers.resolve_kernels(config.model.kernels),
            "chunk_size": chunk, "chunk_seconds": chunk_seconds,
            **time_training_step(config, dataset, num_seeds, seed_axis, single_step, states)}


def time_training_step(config, dataset: data.Dataset, num_seeds: int, seed_axis: str, single_step: bool = True,
                       states=None) -> dict:
    """Seconds of one training step of `num_seeds` seeds at once (step_seconds: train.steps_per_call steps in one
    call, as the epochs take them; single_step_seconds: one step a call, if `single_step`, else None), with
    config.model.kernels, from `states` (fresh ones if None).

    The steps take the arguments the run's epochs give them (its pool on the device, targets [R, N] of int32,
    config.train's augmentation), so the run that follows reuses these programs instead of compiling its own."""
    states = _initial_states(config, dataset, num_seeds)[1] if states is None else states
    pools = [algorithm.split_pool(seed_config, dataset)[2] for seed_config in config_lib.seed_configs(config, num_seeds)]
    shared = all(np.array_equal(pool, pools[0]) for pool in pools)  # all of the training set, unless pool_size
    images = jnp.asarray(dataset.train_images[pools[0]] if shared else
                         np.stack([dataset.train_images[pool] for pool in pools]))
    targets = jnp.asarray(np.stack([dataset.train_labels[pool] for pool in pools]).astype(np.int32))
    batch, per_call = config.train.batch_size, config.train.steps_per_call
    indices = np.random.default_rng(0).integers(0, len(pools[0]), (per_call, num_seeds, batch)).astype(np.int32)
    weights = np.ones((per_call, num_seeds, batch), np.float32)
    no_augment = np.zeros((per_call, num_seeds, batch), bool)
    take = np.ones((per_call, num_seeds), bool)
    holder = {"states": states, "totals": train.StepMetrics.zeros(num_seeds)}
    augment = {f"augment_{name}": config.train[f"augment_{name}"] for name in ("degrees", "scale", "shift")}

    def steps(count: int):  # `count` steps in one program, as the epochs take them
        holder["states"], holder["totals"] = algorithm.seeds_train_steps(
            holder["states"], holder["totals"], images, targets, indices[:count], weights[:count],
            no_augment[:count], take[:count], shared_images=shared, seed_axis=seed_axis, **augment)
        return holder["totals"].loss

    step_seconds = _timed(lambda: steps(per_call), repeats=max(1, 16 // per_call)) / per_call
    single_step_seconds = None if not single_step else (_timed(lambda: steps(1), repeats=10) if per_call > 1
                                                         else step_seconds)
    return {"step_seconds": step_seconds, "steps_per_call": per_call, "single_step_seconds": single_step_seconds}


def kernel_candidates(choice: str, seed_axis: str, max_seeds: int, backend: str | None = None) -> tuple[str, ...]:
    """The model.kernels choices the micro-benchmark times against each other, the default first: given
    --kernels=fastest, the seed blocks (layers.SEED_BLOCKS) beside it where they can differ (seeds trained at once
    under vmap) and may win (an accelerator: on the CPU dense convolutions of all seeds measured 16x slower), one
    choice per size of block above one seed for --max_seeds seeds, the largest first; else the one asked for."""
    backend = backend or jax.default_backend()
    if choice != "fastest":
        return (layers.resolve_kernels(choice, backend),)
    default = layers.resolve_kernels("auto", backend)
    if seed_axis != "vmap" or max_seeds < 2 or backend == "cpu":
        return (default,)
    by_size = {}  # seeds per block -> the first choice that makes it
    for name, most in layers.SEED_BLOCKS.items():
        by_size.setdefault(layers.seeds_per_block(max_seeds, most), name)
    return (default,) + tuple(by_size[size] for size in sorted(by_size, reverse=True) if size > 1)


def projected_seconds(config, num_pool: int, chunk_seconds: float, step_seconds: float) -> dict:
    """A row's wall time from per-chunk and per-step times (pool inference and training; host work aside)."""
    iteration_steps, fit_steps = _steps_per_epoch(config, num_pool)
    iteration = math.ceil(num_pool / config.chunk_size) * chunk_seconds + iteration_steps * step_seconds
    initial_fit = config.initial_epochs * fit_steps * step_seconds
    return {"iteration": iteration, "initial_fit": initial_fit, "row": initial_fit + config.iterations * iteration}


def _linear(at_one: float, at_many: float, many: int):
    """t(R) = a + b R through t(1) and t(many)."""
    slope = (at_many - at_one) / (many - 1) if many > 1 else at_one
    slope = max(slope, 0.0)
    return lambda seeds: max(at_one + slope * (seeds - 1), 0.0)


def projection_from(timings: list[dict], axis: str, pool_of):
    """projection(config, seeds) -> projected_seconds of `config`'s row for that many seeds at once, from the
    micro-benchmark's `timings` of seed axis `axis` (at 1 and at most seeds, linear between); pool_of(config) ->
    its pool size."""
    by_seeds = {t["seeds"]: t for t in timings if t["seed_axis"] == axis}
    most = max(by_seeds)
    chunk = _linear(by_seeds[min(by_seeds)]["chunk_seconds"], by_seeds[most]["chunk_seconds"], most)
    step = _linear(by_seeds[min(by_seeds)]["step_seconds"], by_seeds[most]["step_seconds"], most)
    return lambda config, seeds: projected_seconds(config, pool_of(config), chunk(seeds), step(seeds))


# ------------------------------------------------------------------------------------------ the runs
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


def run_config(row: str, first_seed: int, num_seeds: int, seed_axis: str, kernels: str = "auto"):
    config = row_config(row)
    config.seed, config.num_seeds, config.seed_axis = first_seed, num_seeds, seed_axis
    config.model.kernels = kernels
    return config


def seed_record(seed: int, folder: pathlib.Path) -> dict:
    """A finished seed's run folder as a record: seed, test_accuracy, every metrics line, the number of oracle
    queries (the oracle log itself, 60,000 lines for the 60,000-label row, stays in runs.tar.gz)."""
    summary = json.loads((folder / runfolder.SUMMARY).read_text())
    return {"seed": seed, "test_accuracy": summary["test_accuracy"],
            "metrics": checkpoint.read_jsonl(folder / runfolder.METRICS),
            "oracle_queries": len(checkpoint.read_jsonl(folder / runfolder.ORACLE_LOG))}


def seed_records(workdir: pathlib.Path, config) -> list[dict]:
    """seed_record of each seed of a finished run in `workdir`."""
    return [seed_record(seed, runfolder.seed_folder(workdir, seed, config.num_seeds))
            for seed in range(config.seed, config.seed + config.num_seeds)]


def _tar(sources: dict, skip=(".lock", "checkpoint.prev.msgpack", runfolder.LABELS)) -> bytes:
    """A tar.gz of folders {name in the archive: path}, leaving out the lock, the previous checkpoint and the labels
    export (60,000 rows per seed that the results do not use)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, path in sources.items():
            archive.add(path, arcname=name, filter=lambda info: None if pathlib.Path(info.name).name in skip else info)
    return buffer.getvalue()


def _stash_pending(workdir: pathlib.Path, config, outdir: pathlib.Path) -> None:
    """OUTDIR/pending.tar.gz: the unfinished run folder (checkpoint, per-seed logs) and how to run it on."""
    (workdir / PENDING_ROW).write_text(json.dumps({"row": row_name(config), "seed": config.seed,
                                                   "num_seeds": config.num_seeds, "seed_axis": config.seed_axis}))
    (outdir / PENDING).write_bytes(_tar({".": workdir}))


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


def campaign(outdir: pathlib.Path, budget_s: float, smoke_only: bool) -> dict:
    """The smoke check, then (with a budget) rows of the campaign until the budget is spent; see the module
    docstring. Returns what campaign.json holds."""
    started = time.time()
    deadline = started + budget_s if budget_s else None
    outdir.mkdir(parents=True, exist_ok=True)
    results_dir = pathlib.Path(_RESULTS.value)
    workroot = pathlib.Path(_WORKROOT.value)
    report = {"command": " ".join(["python -m experiments.campaign"] + sys.argv[1:]), "commit": commit(),
              "device": device_facts(), "budget_s": budget_s, "jobs": [],
              "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))}

    def save():
        report["wall_seconds"] = time.time() - started
        checkpoint.write_json(outdir / "campaign.json", report)

    print(f"backend {report['device']['backend']}, device {report['device']['device_kind']} "
          f"(x{report['device']['devices']}), jax {jax.__version__}, commit {report['commit']}", flush=True)
    for row in _ROWS.value:  # a misspelt row or a missing data folder fails now, not hours into a job
        folder = row_config(row).data.data_dir
        if folder and not pathlib.Path(folder).is_dir():
            raise FileNotFoundError(f"campaign row {row!r} reads {folder}, which is not a folder: give "
                                    "--data_root=DIR holding mnist/ and fashion_mnist/ (or --data_dir=MNIST_DIR).")
    pending = None
    if pending_path(results_dir).exists():
        pending = _unstash_pending(pending_path(results_dir), workroot)
    elif not smoke_only and next_block(results_dir, _ROWS.value, {}, 1) is None:
        print("campaign: every row has its seeds; nothing to check or run", flush=True)
        save()  # before the reference check and the micro-benchmark: a device's time is not spent on them
        return report
    first_row = row_name(pending[0]) if pending is not None else _ROWS.value[0]
    config = row_config(first_row)
    max_seeds = _MAX_SEEDS.value
    axes = algorithm.SEED_AXES if _SEED_AXIS.value == "auto" else (_SEED_AXIS.value,)
    candidates = kernel_candidates(_KERNELS.value, "vmap" if "vmap" in axes else "map", max_seeds)
    # The default kernels as they run (TF32 on a GPU); an alternative in float32 throughout, where a wrong
    # computation stands out from TF32's round-off (up to 3 % on the first gradient entries): one that fails is not
    # used. A failure of the default is reported, and the job goes on.
    checks = [check_reference(candidates[0])]
    for kernels in candidates[1:]:
        checks.append(_optional(lambda: check_reference(kernels, exact=True), report, kernels)
                      or {"kernels": kernels, "precision": "float32", "passed": False})
    report["reference"] = {"passed": checks[0]["passed"], "checks": checks}
    for check in checks:
        print(f"reference check ({check['kernels']} kernels, {check['precision']} precision): {check}", flush=True)
    candidates = candidates[:1] + tuple(c["kernels"] for c in checks[1:] if c["passed"])
    config.model.kernels = candidates[0]
    save()

    datasets: dict = {}  # data set name -> Dataset, loaded when a row first needs it

    def dataset_for(config_) -> data.Dataset:
        if config_.data.name not in datasets:
            datasets[config_.data.name] = data.load(config_.data)
        return datasets[config_.data.name]

    def pool_of(config_) -> int:
        return config_.pool_size or len(dataset_for(config_).train_images)

    dataset = dataset_for(config)
    num_pool = pool_of(config)

    # Which seed axis, and how the time grows with the number of seeds.
    # One step a call as well, what the epochs did before train.steps_per_call, tells the dispatch cost that saves:
    # on an accelerator, for the seeds the job trains (a compilation each; a CPU step of ~80 ms dwarfs its dispatch).
    timings = [time_device_functions(config, dataset, seeds, axis,
                                     single_step=seeds == max_seeds and report["device"]["backend"] != "cpu")
               for axis in axes for seeds in sorted({1, max_seeds})]
    report["device_function_seconds"] = timings
    for timing in timings:
        alone = timing["single_step_seconds"]
        print(f"  {timing['seed_axis']:>4} x{timing['seeds']:>2} seeds: pool chunk of {config.chunk_size} "
              f"{1e3 * timing['chunk_seconds']:.2f} ms, training step {1e3 * timing['step_seconds']:.2f} ms "
              f"({timing['steps_per_call']} per call" + (f"; alone {1e3 * alone:.2f} ms)" if alone else ")"), flush=True)

    projections = {axis: projection_from(timings, axis, pool_of) for axis in axes}
    seed_axis = min(axes, key=lambda axis: projections[axis](config, max_seeds)["row"])
    report["seed_axis"] = seed_axis

    # Which kernels train max_seeds seeds at once the fastest (the choices differ under vmap alone).
    kernels = candidates[0]
    if seed_axis == "vmap" and len(candidates) > 1:
        most = next(t for t in timings if t["seed_axis"] == seed_axis and t["seeds"] == max_seeds)
        steps = {kernels: {key: most[key] for key in ("step_seconds", "steps_per_call", "single_step_seconds")}}
        for other in candidates[1:]:
            # Without the one-step-a-call timing, which informs and decides nothing: a compilation less.
            timing = _optional(lambda: time_training_step(run_config(first_row, 0, max_seeds, seed_axis, other),
                                                          dataset, max_seeds, seed_axis, single_step=False),
                               report, other)
            if timing:
                steps[other] = timing
        kernels = min(steps, key=lambda k: steps[k]["step_seconds"])
        most.update(steps[kernels], kernels=kernels)
        report["kernels_step_seconds"] = {k: v["step_seconds"] for k, v in steps.items()}
        print(f"training step of {max_seeds} seeds by kernels: "
              + ", ".join(f"{k} {1e3 * v['step_seconds']:.2f} ms" for k, v in steps.items()) + f"; using {kernels}",
              flush=True)
        projections[seed_axis] = projection_from(timings, seed_axis, pool_of)
    report["kernels"] = kernels
    projection = projections[seed_axis]
    if pending is not None:
        pending[0].model.kernels = kernels
    report["projected_from_device_functions"] = {str(r): projection(config, r) for r in sorted({1, max_seeds, 10})}
    print(f"seed axis {seed_axis}; projected {first_row} ({config.iterations} iterations): "
          + ", ".join(f"{r} seeds {v['row']:.0f} s" for r, v in report["projected_from_device_functions"].items()),
          flush=True)
    save()

    # The smoke check proper: a few real iterations of the first row on its full pool.
    if _SMOKE_ITERATIONS.value:
        smoke_config = run_config(first_row, 0, max_seeds, seed_axis, kernels)
        smoke_config.iterations = _SMOKE_ITERATIONS.value
        smoke_dir = workroot / "smoke"
        shutil.rmtree(smoke_dir, ignore_errors=True)
        smoke_started = time.time()
        active.Driver(smoke_config, smoke_dir, dataset=dataset).run()
        records = seed_records(smoke_dir, smoke_config)
        phases = phase_summary(records[0]["metrics"])
        report["smoke"] = {"row": first_row, "seeds": max_seeds, "iterations": smoke_config.iterations,
                           "pool": num_pool, "wall_seconds": time.time() - smoke_started, "phase_seconds": phases,
                           "test_accuracy": [r["test_accuracy"] for r in records]}
        if phases:
            # Per-seed cost grows at most linearly: scaled by 10/R when R < 10 (an upper bound).
            row_10 = (config.iterations * phases["iteration_total"] * max(10 / max_seeds, 1.0)
                      + projection(config, 10)["initial_fit"])
            report["smoke"]["projected_10_seed_row_seconds"] = row_10
            print(f"smoke: {max_seeds} seeds x {smoke_config.iterations} iterations of {first_row} on {num_pool:,} "
                  f"images in {report['smoke']['wall_seconds']:.1f} s (with compilation); per iteration "
                  + ", ".join(f"{k} {v:.3f} s" for k, v in phases.items())
                  + f"; projected 10-seed row ({config.iterations} iterations): {row_10:.0f} s", flush=True)
        save()
    if smoke_only:
        return report

    # The campaign: continue the pending row, then the rows in order, until the budget is spent.
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
        job = {"row": row, "seeds": seeds, "seed_axis": config.seed_axis, "resumed": resumed}
        report["jobs"].append(job)
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
            checkpoint.append_jsonl(outdir / "progress.jsonl", [{"row": row, "time": now - started,
                                                                 "seeds": seeds, "lines": lines}])
            job["iteration"] = lines[0]["iteration"]
            typical = float(np.median(clock["recent"][-5:])) if clock["recent"] else 0.0
            out_of_time = deadline is not None and now + 1.5 * typical + SAVE_MARGIN_S > deadline
            return out_of_time or (bool(_MAX_ITERATIONS.value) and iterations_run >= _MAX_ITERATIONS.value)

        summary = active.Driver(config, workdir, dataset=dataset_for(config)).run(should_stop=should_stop)
        job["wall_seconds"] = time.time() - row_started
        if summary is None:
            _stash_pending(workdir, config, outdir)
            job["pending"] = True
            print(f"{row}: stopped part-way; {outdir / PENDING} continues it", flush=True)
            save()
            break
        records = seed_records(workdir, config)
        job["iteration"] = records[0]["metrics"][-1]["iteration"]
        job["phase_seconds"] = phase_summary(records[0]["metrics"])
        accuracies = [r["test_accuracy"] for r in records]
        job.update(test_accuracy=accuracies, mean=float(np.mean(accuracies)),
                   std=float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else None)
        print(f"{row} done: mean {job['mean']:.4f} over seeds {seeds}: {accuracies}", flush=True)
        add_block(finished, report, row, json.loads(config.to_json_best_effort(sort_keys=True)),
                  config.seed_axis, job["wall_seconds"], records)
        seed_folders.update({f"{row}/seed_{seed}": runfolder.seed_folder(workdir, seed, config.num_seeds)
                             for seed in seeds})
        checkpoint.write_json(outdir / "rows.json", finished)
        (outdir / "runs.tar.gz").write_bytes(_tar(seed_folders, skip=(".lock", runfolder.CHECKPOINT,
                                                                      "checkpoint.prev.msgpack", PENDING_ROW)))
        save()
        if _MAX_ITERATIONS.value and iterations_run >= _MAX_ITERATIONS.value:
            break
    save()
    return report


# ------------------------------------------------------------------------------------------ status
FULL_POOL = 60_000  # the training images of MNIST and of Fashion-MNIST: a paper-scale row's pool


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


def latest_accelerator_timings(results_dir: pathlib.Path):
    """The newest job report in results_dir/bench from an accelerator with micro-benchmark timings, or None."""
    reports = [json.loads(path.read_text()) for path in (results_dir / "bench").glob("campaign_*.json")]
    reports = [r for r in reports if r["device"]["backend"] != "cpu" and r.get("device_function_seconds")]
    return max(reports, key=lambda r: r.get("started_utc", ""), default=None)


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


# ------------------------------------------------------------------------------------------- merge
SCALE_FIELDS = ("pool_size", "iterations", "initial_epochs", "test_size")


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
            path = results_dir / dataset / "runs" / preset / f"seed_{result['seed']}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.write_json(path, record)
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
