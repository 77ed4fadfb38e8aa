"""Paper-scale MNIST on an accelerator: a smoke check proven on first contact, then as many seeds of the
headline row (all data + max entropy, 300 labels) as a time budget holds, and a merge into results/.

  # on the accelerator: the smoke check alone, or the smoke check and then the row, in one process
  python -m experiments.campaign --smoke --data_dir=PATH/TO/mnist --outdir=/tmp/smoke
  python -m experiments.campaign --budget_s=500 --data_dir=PATH/TO/mnist --outdir=$OUT
  # back here: fold what came back into results/mnist (per-seed records, table, figures) and results/bench
  python -m experiments.campaign --merge=DIR

The smoke check prints the backend and device, compares the paper CNN's logits and gradient on fixed inputs
with reference numbers computed on the CPU (experiments/reference_cnn.json, `--write_reference` remakes it),
times one pool chunk and one training step for the seed axes vmap and map at R seeds and at one seed, runs
`--smoke_iterations` iterations of the row on the 60,000-image pool with the chosen seed axis, and prints the
per-phase times and the projected wall time of a full 10-seed row.

With --budget_s the number of seeds R (at most --max_seeds) is chosen from those measurements so that the row
ends before the budget; every finished iteration is appended to OUTDIR/progress.jsonl as it happens, so a job
killed at its time limit still returns what it did. If the row would overrun after all, it stops cleanly and
records the iterations done. There is no resume across jobs yet: an unfinished row starts again.

OUTDIR ends with at most five files, one folder deep: campaign.json (device, versions, commit, reference check,
timings, projection, choices), progress.jsonl, row.json (per seed: every metrics line, the oracle log, the
final test accuracy), runs.tar.gz (per-seed run folders: config.json, metrics.jsonl, oracle_log.jsonl,
summary.json, curves.png) and whatever log the caller redirects there.
"""

from __future__ import annotations

import io
import json
import math
import os
import pathlib
import platform
import sys
import tarfile
import time
from typing import Optional

from absl import app, flags, logging

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402

from deepbass_jax import active, checkpoint, data, layers, models, multi_seed, plots  # noqa: E402
from experiments import mnist_report  # noqa: E402
from experiments.configs import mnist  # noqa: E402

_SMOKE = flags.DEFINE_bool("smoke", False, "Run the smoke check alone.")
_BUDGET_S = flags.DEFINE_float("budget_s", 0.0, "Wall seconds for everything: smoke check, then the row.")
_OUTDIR = flags.DEFINE_string("outdir", None, "Where campaign.json, progress.jsonl, row.json, runs.tar.gz go.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder with MNIST's four IDX files (unset: the download cache).")
_ROW = flags.DEFINE_string("row", "all_data_max_entropy", "Preset of experiments/configs/mnist.py to run.")
_MAX_SEEDS = flags.DEFINE_integer("max_seeds", 10, "At most this many seeds, run at once.")
_FIRST_SEED = flags.DEFINE_integer("first_seed", 0, "Seeds first_seed ... first_seed + R - 1 (a later job adds seeds).")
_SEED_AXIS = flags.DEFINE_enum("seed_axis", "auto", ("auto",) + multi_seed.SEED_AXES,
                               "How seeds share the program; auto: the faster of vmap and map, measured.")
_SMOKE_ITERATIONS = flags.DEFINE_integer("smoke_iterations", 3, "Iterations of the row the smoke check runs.")
_CHUNK_SIZE = flags.DEFINE_integer("chunk_size", 0, "Pool inference chunk per seed (0: by backend).")
# Smaller settings for tests on the CPU; 0 keeps the preset's value.
_POOL_SIZE = flags.DEFINE_integer("pool_size", 0, "Override config.pool_size (0: the preset's, all 60,000).")
_ITERATIONS = flags.DEFINE_integer("iterations", 0, "Override config.iterations (0: the preset's).")
_INITIAL_EPOCHS = flags.DEFINE_integer("initial_epochs", 0, "Override config.initial_epochs (0: the preset's).")
_TEST_SIZE = flags.DEFINE_integer("test_size", 0, "Override config.test_size (0: the preset's, all 10,000).")
_MERGE = flags.DEFINE_string("merge", None, "Fold a job's OUTDIR into --results (then do nothing else).")
_RESULTS = flags.DEFINE_string("results", "results", "The results folder --merge writes into.")
_ALLOW_REDUCED = flags.DEFINE_bool("allow_reduced", False, "--merge a job run with smaller settings (scale 'reduced').")
_WRITE_REFERENCE = flags.DEFINE_bool("write_reference", False, "Write experiments/reference_cnn.json (CPU only).")

REFERENCE = pathlib.Path(__file__).with_name("reference_cnn.json")
# TF32 convolutions (XLA's default for float32 on recent GPUs) carry about 3 decimal digits.
REFERENCE_RTOL = 2e-2
POOL_CHUNK = {"cpu": 256}  # per seed; other backends: DEVICE_POOL_CHUNK
DEVICE_POOL_CHUNK = 1024
LABELED_CHUNK = {"cpu": 64}
DEVICE_LABELED_CHUNK = 128
SAFETY = 0.9  # share of the remaining budget the row is planned to fill


# ------------------------------------------------------------------------------------------ provenance
def commit() -> str:
    """The commit the code came from: $DEEPBASS_COMMIT (set where the checkout has no .git), else git's."""
    if os.environ.get("DEEPBASS_COMMIT"):
        return os.environ["DEEPBASS_COMMIT"]
    try:
        return mnist_report.commit() or "unknown"
    except OSError:
        return "unknown"


def device_facts() -> dict:
    device = jax.devices()[0]
    return {"backend": jax.default_backend(), "device_kind": device.device_kind, "devices": jax.device_count(),
            "jax": jax.__version__, "python": platform.python_version(), "host_cores": os.cpu_count(),
            "description": mnist_report.device()}


# ------------------------------------------------------------------------------ reference numbers
def _reference_inputs():
    x = ((np.arange(8 * 28 * 28) * 37) % 256).reshape(8, 28, 28, 1).astype(np.float32) / 255.0
    labels = np.arange(8, dtype=np.int32) % 10
    return jnp.asarray(x), jnp.asarray(labels)


def reference_outputs(kernels: str) -> dict:
    """The paper CNN (parameters from key 0) on fixed inputs [8, 28, 28, 1]: deterministic logits, logits with
    the dropout masks of key 1, and per-leaf norms and first values of the gradient of the mean cross-entropy."""
    module = models.PaperCNN(num_classes=10, kernels=kernels)
    apply_fn = models.make_apply(module)
    params = models.init_params(module, jax.random.key(0), (28, 28, 1))
    x, labels = _reference_inputs()
    dropout_key = jax.random.key(1)

    def loss(params):
        logits = apply_fn(params, x, dropout_key)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))

    grads = jax.jit(jax.grad(loss))(params)
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


def check_reference(kernels: str) -> dict:
    """This backend's `reference_outputs` against REFERENCE (computed on the CPU): the largest relative error of
    each quantity, and whether all lie within REFERENCE_RTOL."""
    expected = json.loads(REFERENCE.read_text())
    ours = reference_outputs(kernels)
    errors = {key: _relative_error(ours[key], expected[key]) for key in ("logits", "dropout_logits")}
    for key in ("grad_norms", "grad_first"):
        errors[key] = max(_relative_error(ours[key][name], expected[key][name]) for name in expected[key])
    return {"kernels": kernels, "relative_errors": errors, "rtol": REFERENCE_RTOL,
            "passed": all(e <= REFERENCE_RTOL for e in errors.values())}


# --------------------------------------------------------------------------------------- the config
def row_config(row: str):
    config = mnist.get_config(row)
    config.data.data_dir = _DATA_DIR.value
    backend = jax.default_backend()
    config.chunk_size = _CHUNK_SIZE.value or POOL_CHUNK.get(backend, DEVICE_POOL_CHUNK)
    config.labeled_chunk_size = LABELED_CHUNK.get(backend, DEVICE_LABELED_CHUNK)
    for flag, field in ((_POOL_SIZE, "pool_size"), (_ITERATIONS, "iterations"), (_INITIAL_EPOCHS, "initial_epochs"),
                        (_TEST_SIZE, "test_size")):
        if flag.value:
            config[field] = flag.value
    return config


def _steps_per_epoch(config, num_pool: int) -> tuple[int, int]:
    """Training steps of one iteration at the most labels (an upper bound) and of one initial-fit epoch."""
    labels = config.budget if config.active else config.initial_per_class * 10
    unlabeled = num_pool - labels if config.semi_supervised else 0
    batch = config.train.batch_size
    return -(-(labels * config.train.upsample + unlabeled) // batch), -(-(labels * config.train.upsample) // batch)


# ---------------------------------------------------------------------------------- micro-benchmark
def _timed(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    started = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - started) / repeats


def time_device_functions(config, dataset: data.Dataset, num_seeds: int, seed_axis: str) -> dict:
    """Seconds of one pool chunk of MC inference and of one training step for `num_seeds` seeds at once."""
    module = models.build(config.model, dataset.num_classes)
    apply_fn = models.make_apply(module)
    states = multi_seed._stack([active.initial_train_state(module, apply_fn, jax.random.key(r), dataset.input_shape,
                                                           config.train) for r in range(num_seeds)])
    chunk = config.chunk_size
    images = jnp.asarray(dataset.train_images[:chunk])
    keys = jax.random.split(jax.random.key(0), num_seeds)
    ids = np.arange(chunk, dtype=np.uint32)
    chunk_seconds = _timed(lambda: multi_seed._seeds_chunk_stats(
        apply_fn, states.params, images, ids, keys, num_passes=config.mc_passes_pool, shared_images=True,
        seed_axis=seed_axis), repeats=3)
    batch = config.train.batch_size
    rng = np.random.default_rng(0)
    indices = rng.integers(0, chunk, (num_seeds, batch)).astype(np.int32)
    weights = np.ones((num_seeds, batch), np.float32)
    take = np.ones(num_seeds, bool)
    targets = jnp.asarray(np.tile(dataset.train_labels[:chunk], (num_seeds, 1)))
    holder = {"states": states}

    def step():
        holder["states"], metrics = multi_seed._seeds_train_step(
            holder["states"], images, targets, indices, weights, take, shared_images=True, seed_axis=seed_axis)
        return metrics.loss

    step_seconds = _timed(step, repeats=10)
    return {"seeds": num_seeds, "seed_axis": seed_axis, "chunk_seconds": chunk_seconds, "step_seconds": step_seconds}


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


# ------------------------------------------------------------------------------------------ the runs
class OutOfBudget(Exception):
    """The row would not end before the budget: stopped after the iteration it names."""


def run_row(config, seeds: list[int], seed_axis: str, dataset, progress_path: Optional[pathlib.Path],
            deadline: Optional[float]):
    """Runs `config` for `seeds` at once; appends each iteration's lines to `progress_path`; stops with
    OutOfBudget once the projected end (from the iterations so far) lies past `deadline` (time.time()).
    Returns (results or None, lines per iteration, stop reason or None)."""
    lines: list[list[dict]] = []
    clock = {"start": time.time(), "first": None}

    def on_iteration(iteration: int, seed_lines: list[dict]):
        lines.append(seed_lines)
        now = time.time()
        if progress_path is not None:
            checkpoint.append_jsonl(progress_path, [{"iteration": iteration, "time": now - clock["start"],
                                                     "seeds": seeds, "lines": seed_lines}])
        if iteration == 1:
            clock["first"] = now  # the first iteration carries the compilations: project from the later ones
        left = config.iterations - iteration
        if deadline is not None and iteration >= 2 and left:
            per_iteration = (now - clock["first"]) / (iteration - 1)
            if now + left * per_iteration > deadline:
                raise OutOfBudget(f"stopped after iteration {iteration} of {config.iterations}: "
                                  f"{left} more at {per_iteration:.2f} s each would pass the budget")
        seed_lines_done = seed_lines[0]
        logging.info("iteration %d: %.2f s, test accuracy %s", iteration, seed_lines_done.get("seconds", 0.0),
                     [round(100 * (line.get("test_accuracy") or 0.0), 2) for line in seed_lines])

    try:
        results = multi_seed.run_seeds(config, seeds, dataset=dataset, seed_axis=seed_axis,
                                       on_iteration=on_iteration)
        return results, lines, None
    except OutOfBudget as stop:
        logging.warning("%s", stop)
        return None, lines, str(stop)


def phase_summary(lines: list[list[dict]]) -> dict:
    """Mean per-phase seconds over the iterations after the first (which compiles), all seeds together."""
    later = [seed_lines[0] for seed_lines in lines if seed_lines[0]["iteration"] >= 2]
    if not later:
        later = [seed_lines[0] for seed_lines in lines if seed_lines[0]["iteration"] >= 1]
    if not later:
        return {}
    phases = {phase: float(np.mean([line["phase_seconds"][phase] for line in later]))
              for phase in later[0]["phase_seconds"]}
    phases["iteration_total"] = float(np.mean([sum(line["phase_seconds"].values()) for line in later]))
    return phases


def _run_folders(results: list[dict], config, device: str) -> bytes:
    """A tar.gz of per-seed run folders as the driver writes them (checkpoint aside)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for result in results:
            folder = f"seed_{result['seed']}"
            seed_config = json.loads(config.to_json_best_effort(sort_keys=True))
            seed_config["seed"] = result["seed"]
            summary = {"iterations": result["metrics"][-1]["iteration"], "labels": result["metrics"][-1]["labels"],
                       "final": result["metrics"][-1], "test_accuracy": result["test_accuracy"],
                       "oracle_queries": len(result["oracle_log"]), "device": device}
            files = {
                active.CONFIG: json.dumps(seed_config, indent=2, sort_keys=True) + "\n",
                active.METRICS: "".join(checkpoint.dumps(line) + "\n" for line in result["metrics"]),
                active.ORACLE_LOG: "".join(checkpoint.dumps(line) + "\n" for line in result["oracle_log"]),
                active.SUMMARY: json.dumps(summary, indent=2, sort_keys=True) + "\n",
            }
            figure = pathlib.Path(f"/tmp/deepbass_campaign_curves_{os.getpid()}.png")
            plots.curves(result["metrics"], figure)
            contents = {name: text.encode() for name, text in files.items()}
            contents["curves.png"] = figure.read_bytes()
            figure.unlink()
            for name, content in contents.items():
                info = tarfile.TarInfo(f"{folder}/{name}")
                info.size = len(content)
                info.mtime = int(time.time())
                archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def campaign(outdir: pathlib.Path, budget_s: float, smoke_only: bool) -> dict:
    started = time.time()
    deadline = started + budget_s if budget_s else None
    outdir.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join(["python -m experiments.campaign"] + sys.argv[1:]), "commit": commit(),
              "device": device_facts(), "budget_s": budget_s, "row": _ROW.value}

    def save():
        report["wall_seconds"] = time.time() - started
        checkpoint.write_json(outdir / "campaign.json", report)

    print(f"backend {report['device']['backend']}, device {report['device']['device_kind']} "
          f"(x{report['device']['devices']}), jax {jax.__version__}, commit {report['commit']}", flush=True)
    config = row_config(_ROW.value)
    kernels = layers.resolve_kernels(config.model.kernels)
    report["reference"] = check_reference(kernels)
    print(f"reference check ({kernels} kernels): {report['reference']}", flush=True)
    save()

    config.data.name = "mnist"
    dataset = data.load(config.data)
    num_pool = config.pool_size or len(dataset.train_images)
    max_seeds = _MAX_SEEDS.value

    # Which seed axis, and how the time grows with the number of seeds.
    axes = multi_seed.SEED_AXES if _SEED_AXIS.value == "auto" else (_SEED_AXIS.value,)
    timings = [time_device_functions(config, dataset, seeds, axis) for axis in axes
               for seeds in sorted({1, max_seeds})]
    report["device_function_seconds"] = timings
    for timing in timings:
        print(f"  {timing['seed_axis']:>4} x{timing['seeds']:>2} seeds: pool chunk of {config.chunk_size} "
              f"{1e3 * timing['chunk_seconds']:.2f} ms, training step {1e3 * timing['step_seconds']:.2f} ms", flush=True)

    def model(axis):
        by_seeds = {t["seeds"]: t for t in timings if t["seed_axis"] == axis}
        one, many = by_seeds[1], by_seeds[max_seeds]
        chunk = _linear(one["chunk_seconds"], many["chunk_seconds"], max_seeds)
        step = _linear(one["step_seconds"], many["step_seconds"], max_seeds)
        return lambda seeds: projected_seconds(config, num_pool, chunk(seeds), step(seeds))

    models_by_axis = {axis: model(axis) for axis in axes}
    seed_axis = min(axes, key=lambda axis: models_by_axis[axis](max_seeds)["row"])
    projection = models_by_axis[seed_axis]
    report["seed_axis"] = seed_axis
    report["projected_from_device_functions"] = {str(r): projection(r) for r in sorted({1, max_seeds, 10})}

    # How many seeds fit: the smoke check's iterations, then the row, inside the budget.
    seeds = max_seeds
    if deadline is not None and not smoke_only:
        left = deadline - time.time()
        smoke_cost = lambda r: projection(r)["initial_fit"] + _SMOKE_ITERATIONS.value * projection(r)["iteration"]  # noqa: E731
        fits = [r for r in range(1, max_seeds + 1) if smoke_cost(r) + projection(r)["row"] <= SAFETY * left]
        seeds = max(fits) if fits else 1
    report["planned_seeds"] = seeds
    print(f"seed axis {seed_axis}; projected row of {config.iterations} iterations: "
          + ", ".join(f"{r} seeds {v['row']:.0f} s" for r, v in report["projected_from_device_functions"].items())
          + f"; planning {seeds} seeds", flush=True)
    save()

    # The smoke check proper: a few real iterations of the row on the full pool.
    smoke_config = row_config(_ROW.value)
    smoke_config.data.name = "mnist"
    smoke_config.iterations = _SMOKE_ITERATIONS.value
    smoke_started = time.time()
    seed_range = lambda count: list(range(_FIRST_SEED.value, _FIRST_SEED.value + count))  # noqa: E731
    _, smoke_lines, _ = run_row(smoke_config, seed_range(seeds), seed_axis, dataset, None, None)
    phases = phase_summary(smoke_lines)
    report["smoke"] = {"seeds": seeds, "iterations": smoke_config.iterations, "pool": num_pool,
                       "wall_seconds": time.time() - smoke_started, "phase_seconds": phases,
                       "test_accuracy": [line.get("test_accuracy") for line in smoke_lines[-1]]}
    if phases:
        # Per-seed cost grows at most linearly: the projection for 10 seeds scales the measured one by 10/R
        # when R < 10 (an upper bound when the device is not yet full).
        iteration_10 = phases["iteration_total"] * max(10 / seeds, 1.0)
        row_10 = config.iterations * iteration_10 + projection(10)["initial_fit"]
        report["smoke"]["projected_10_seed_row_seconds"] = row_10
        print(f"smoke: {seeds} seeds x {smoke_config.iterations} iterations of {_ROW.value} on {num_pool:,} images "
              f"in {report['smoke']['wall_seconds']:.1f} s (with compilation); per iteration "
              + ", ".join(f"{k} {v:.3f} s" for k, v in phases.items())
              + f"; projected 10-seed row ({config.iterations} iterations): {row_10:.0f} s", flush=True)
    save()
    if smoke_only or deadline is None:
        return report

    # Re-plan with the measured iteration time, then run the row.
    left = deadline - time.time()
    if phases:
        measured = lambda r: config.iterations * phases["iteration_total"] * r / seeds + projection(r)["initial_fit"]  # noqa: E731
        fits = [r for r in range(1, seeds + 1) if measured(r) <= SAFETY * left]
        seeds = max(fits) if fits else 1
    report["row_seeds"] = seed_range(seeds)
    print(f"row: {seeds} seeds, {left:.0f} s left", flush=True)
    save()
    row_started = time.time()
    results, lines, stopped = run_row(config, seed_range(seeds), seed_axis, dataset, outdir / "progress.jsonl",
                                      deadline)
    row_seconds = time.time() - row_started
    report["row_result"] = {"seeds": seed_range(seeds), "wall_seconds": row_seconds, "stopped": stopped,
                            "iterations_done": lines[-1][0]["iteration"] if lines else 0,
                            "phase_seconds": phase_summary(lines)}
    if results is not None:
        summary = multi_seed.summarize(results)
        report["row_result"].update(test_accuracy=summary["test_accuracy"], mean=summary["mean"], std=summary["std"])
        print(f"row done: {summary['mean']:.4f} +- {summary['std']:.4f} over {seeds} seeds in {row_seconds:.0f} s: "
              f"{summary['test_accuracy']}", flush=True)
        records = [{key: result[key] for key in ("seed", "test_accuracy", "metrics", "oracle_log", "initial_steps",
                                                 "steps")} for result in results]
        checkpoint.write_json(outdir / "row.json", {
            "row": _ROW.value, "config": json.loads(config.to_json_best_effort(sort_keys=True)),
            "seed_axis": seed_axis, "device": report["device"], "commit": report["commit"],
            "command": report["command"], "wall_seconds": row_seconds, "results": records})
        (outdir / "runs.tar.gz").write_bytes(_run_folders(results, config, report["device"]["description"]))
    save()
    return report


# ------------------------------------------------------------------------------------------- merge
SCALE_FIELDS = ("pool_size", "iterations", "initial_epochs", "test_size")


def merge(job: pathlib.Path, results_dir: pathlib.Path, allow_reduced: bool = False) -> list[pathlib.Path]:
    """Folds a job folder into `results_dir`: per-seed records into mnist/runs/PRESET/ (scale "paper"), the
    job's timings into bench/, then the MNIST report. Returns the files written.

    A job run with smaller settings (--pool_size, --iterations, ...) is refused unless `allow_reduced`; its
    records then get scale "reduced" and never mix with the paper's setting."""
    report = json.loads((job / "campaign.json").read_text())
    row_path = job / "row.json"
    row = json.loads(row_path.read_text()) if row_path.exists() else None
    reduced = []
    if row is not None:
        paper = mnist.get_config(row["row"])
        reduced = [f"{field}={row['config'][field]} (paper: {paper[field]})" for field in SCALE_FIELDS
                   if row["config"][field] != paper[field]]
        if reduced and not allow_reduced:
            raise ValueError(f"{job} ran {row['row']} with {', '.join(reduced)}: not the paper's setting, so it is "
                             "not merged into the results (--allow_reduced merges it as scale 'reduced').")
    written = []
    bench = results_dir / "bench" / f"campaign_{report['device']['backend']}_{report['commit'].split()[0]}.json"
    bench.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_json(bench, report)
    written.append(bench)
    if row is None:
        logging.warning("%s has no row.json: the row did not finish (%s); only the timings were merged.", job,
                        report.get("row_result", {}).get("stopped"))
        return written
    preset = row["row"]
    num_seeds = len(row["results"])
    for result in row["results"]:
        config = dict(row["config"], seed=result["seed"])
        record = {
            "row": mnist_report.table_row(preset), "preset": preset, "seed": result["seed"], "dataset": "mnist",
            "scale": "reduced" if reduced else "cpu" if preset.startswith(mnist.CPU_PREFIX) else "paper",
            "test_accuracy": 100 * result["test_accuracy"], "config": config,
            "summary": {"iterations": result["metrics"][-1]["iteration"], "labels": result["metrics"][-1]["labels"],
                        "final": result["metrics"][-1], "test_accuracy": result["test_accuracy"],
                        "oracle_queries": len(result["oracle_log"])},
            "metrics": result["metrics"],
            "command": row["command"] + f"  # seed {result['seed']} of {num_seeds}, seed axis {row['seed_axis']}",
            "device": row["device"]["description"], "jax": row["device"]["jax"], "commit": row["commit"],
            # the row's seeds ran at once: each record carries its share of the wall time
            "seconds": row["wall_seconds"] / num_seeds, "row_wall_seconds": row["wall_seconds"],
        }
        path = results_dir / "mnist" / "runs" / preset / f"seed_{result['seed']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(path, record)
        written.append(path)
    mnist_report.write_report(results_dir / "mnist")
    written.append(results_dir / "mnist" / "table.json")
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
    if _SMOKE.value == bool(_BUDGET_S.value):
        raise app.UsageError("give one of --smoke (the check alone), --budget_s=SECONDS (the check, then the row) "
                             "or --merge=DIR.")
    if not _OUTDIR.value:
        raise app.UsageError("give --outdir=DIR for campaign.json, progress.jsonl, row.json and runs.tar.gz.")
    campaign(pathlib.Path(_OUTDIR.value), _BUDGET_S.value, smoke_only=_SMOKE.value)


if __name__ == "__main__":
    app.run(main)
