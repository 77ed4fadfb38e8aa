"""Pools beyond one machine, measured and projected: a lazily generated pool split over several processes.

  python -m experiments.multihost_scale --processes=4 --pool_size=10000000 --outdir=results/multihost

Launches --processes CPU processes on this machine (jax.distributed, gloo on 127.0.0.1). Each holds a lazy
shard of a synthetic pool of --pool_size 28x28x1 images (made on demand, chunk by chunk, never whole), times
MC-dropout inference (T' = 10, the paper CNN) over the first --measured samples of its shard, then gathers
scores of the whole pool's size, as an iteration does, and reports its peak memory. From the per-process rate it
projects the full iteration's pool inference; a second table projects an iteration's wall time on GPU hosts
from the H100 rates measured by the campaign (results/bench/campaign_gpu_*.json), marking what is measured and
what is assumed.
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import subprocess
import sys
import time
from typing import Optional

import jax
import numpy as np
from absl import app, flags

from deepbass_jax import algorithm, models
from deepbass_jax.parallel import distributed
from experiments import provenance, reporting

_PROCESSES = flags.DEFINE_integer("processes", 4, "CPU processes on this machine.")
_POOL_SIZE = flags.DEFINE_integer("pool_size", 10_000_000, "Images in the synthetic pool.")
_MEASURED = flags.DEFINE_integer("measured", 4096, "Samples of each shard whose inference is timed.")
_OUTDIR = flags.DEFINE_string("outdir", "results/multihost", "Where scale.json and README.md go.")
_CHILD = flags.DEFINE_string("child", None, "Internal: PORT,INDEX of a child process.")
_PROJECT_ONLY = flags.DEFINE_bool("project_only", False, "Rebuild the report from OUTDIR/scale.json's measurements.")

PASSES, CHUNK, NUM_CLASSES = 10, 256, 10
GPU_BENCH = pathlib.Path("results/bench/campaign_gpu_fe697dd.json")  # H100: chunk of 1,024 and step of 256 timed
GPU_CHUNK, BATCH = 1024, 256
ASSUMED_BANDWIDTH = 12.5e9  # bytes/s into a host (100 Gb/s): an assumption, not measured here
ASSUMED_LATENCY = 0.1e-3  # s per exchange between hosts: an assumption
SAMPLE_BYTES, GRADIENT_BYTES = 28 * 28 * 4, 14_970 * 4  # one MNIST image; the paper CNN's gradient (float32)
LOAD_BEFORE = 0.0  # the machine's 1-minute load average when the measurement started


class SyntheticShard:
    """Pool samples [lo, hi) of a synthetic pool, made on demand: sample i is a function of i alone."""

    def __init__(self, lo: int, hi: int):
        self.lo = lo
        self.shape = (hi - lo, 28, 28, 1)

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0])
        return np.random.default_rng(self.lo + start).random((stop - start, *self.shape[1:]), np.float32)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(port: int, index: int) -> None:
    topology = distributed.initialize(f"127.0.0.1:{port}", _PROCESSES.value, index)
    lo, hi = topology.shard(_POOL_SIZE.value)
    module = models.build(models.default_config(), NUM_CLASSES)
    apply_fn = models.make_apply(module)
    params = algorithm.stack([models.init_params(module, jax.random.key(0), (28, 28, 1))])
    keys = jax.random.key(1)[None]
    measured = SyntheticShard(lo, lo + _MEASURED.value)
    algorithm.pool_stats(apply_fn, params, SyntheticShard(lo, lo + CHUNK), keys, PASSES, CHUNK, True, "map",
                         first_id=lo)  # compiles
    started = time.perf_counter()
    stats = algorithm.pool_stats(apply_fn, params, measured, keys, PASSES, CHUNK, True, "map", first_id=lo)
    inference_seconds = time.perf_counter() - started
    peak_after_inference = _peak_mb()
    # The scores of the whole shard, as an iteration holds them (the measured ones repeated), then gathered.
    local = [np.resize(field[0], (hi - lo, *field.shape[2:])) for field in stats]
    distributed.allgather(np.zeros(1))  # every process is here: the gather's time is the gather's alone
    started = time.perf_counter()
    gathered = [distributed.gather_shards(field, _POOL_SIZE.value, topology) for field in local]
    gather_seconds = time.perf_counter() - started
    assert gathered[1].shape == (_POOL_SIZE.value,)
    print(json.dumps({"index": index, "shard": [lo, hi], "measured_samples": _MEASURED.value,
                      "inference_seconds": inference_seconds, "samples_per_s": _MEASURED.value / inference_seconds,
                      "gather_seconds": gather_seconds, "peak_rss_mb_after_inference": peak_after_inference,
                      "peak_rss_mb": _peak_mb()}), flush=True)


def _measure() -> list[dict]:
    """Runs the children; each reports one JSON line."""
    port = distributed.free_local_port()
    flags_ = [f"--processes={_PROCESSES.value}", f"--pool_size={_POOL_SIZE.value}", f"--measured={_MEASURED.value}"]
    children = [subprocess.Popen([sys.executable, "-m", "experiments.multihost_scale", *flags_,
                                  f"--child={port},{index}"], stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "JAX_PLATFORMS": "cpu"})
                for index in range(_PROCESSES.value)]
    results = []
    for child in children:
        stdout, _ = child.communicate()
        if child.returncode:
            raise RuntimeError(f"a child process failed with status {child.returncode}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def _gpu_rates() -> dict:
    bench = json.loads(GPU_BENCH.read_text())
    one = next(f for f in bench["device_function_seconds"] if f["seeds"] == 1 and f["seed_axis"] == "vmap")
    return {"device": bench["device"]["description"], "commit": bench["commit"],
            "inference_samples_per_s": GPU_CHUNK / one["chunk_seconds"], "step_seconds": one["step_seconds"]}


def step_exchange_seconds(hosts: int) -> float:
    """One data-parallel step's exchange as `data_parallel` does it: every host receives every host's batch rows
    (B images, zeros where it holds none) and gradient."""
    if hosts == 1:
        return 0.0
    return 2 * ASSUMED_LATENCY + hosts * (BATCH * SAMPLE_BYTES + GRADIENT_BYTES) / ASSUMED_BANDWIDTH


def projection(pool: int, hosts: int, gpu: dict) -> dict:
    """Seconds of one all-data iteration on `hosts` hosts of one GPU each (the pool fully pseudo-labeled)."""
    inference = pool / (hosts * gpu["inference_samples_per_s"])
    gather = 0.0 if hosts == 1 else ASSUMED_LATENCY + pool * (NUM_CLASSES + 3) * 4 / ASSUMED_BANDWIDTH
    steps = -(-pool // BATCH)  # the global batch stays the paper's 256: the step count does not shrink
    epoch = steps * (gpu["step_seconds"] + step_exchange_seconds(hosts))
    return {"pool": pool, "hosts": hosts, "inference_s": inference, "score_gather_s": gather, "epoch_s": epoch,
            "total_s": inference + gather + epoch}


def _report(measured: list[dict], gpu: dict, outdir: pathlib.Path, saved: Optional[dict] = None) -> None:
    """scale.json and README.md; `saved`: an earlier scale.json whose measurement (command, commit, device) this
    report keeps."""
    rate = sum(m["samples_per_s"] for m in measured)
    shard = max(m["shard"][1] - m["shard"][0] for m in measured)
    projected_inference = shard / min(m["samples_per_s"] for m in measured)
    rows = [projection(pool, hosts, gpu) for pool in (10**6, 10**7, 10**8) for hosts in (1, 4, 16, 64)]
    result = {"command": "python -m experiments.multihost_scale " + " ".join(sys.argv[1:]),
              "commit": provenance.commit(), "device": provenance.device(), "load_average_before": LOAD_BEFORE,
              "processes": _PROCESSES.value, "pool_size": _POOL_SIZE.value, "measured": measured,
              "all_processes_samples_per_s": rate, "projected_pool_inference_s": projected_inference,
              "gpu_rates": gpu, "assumed_bandwidth_bytes_per_s": ASSUMED_BANDWIDTH,
              "assumed_latency_s": ASSUMED_LATENCY, "projection": rows}
    if saved:
        result.update({key: saved[key] for key in ("command", "commit", "device", "processes", "pool_size")})
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "scale.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Pools beyond one machine",
        "",
        "Generated by `experiments/multihost_scale.py`; do not edit by hand.",
        "",
        f"## Measured: {_POOL_SIZE.value:,} lazily generated images over {_PROCESSES.value} processes on this machine",
        "",
        f"`{result['command']}` on {result['device']}, commit {result['commit']}. Each process holds a lazy "
        "shard (images made chunk by chunk, never whole), times MC-dropout inference (T' = 10, paper CNN) over the "
        f"first {_MEASURED.value:,} samples of its shard, then gathers scores of the whole pool's size "
        f"({NUM_CLASSES} mean probabilities and 3 scores per sample) as an iteration does.",
        "",
        "| process | shard | samples/s (measured) | score gather s (measured) | peak RSS MB after inference | "
        "peak RSS MB after the gather |",
        "|---|---|---|---|---|---|",
    ]
    for m in measured:
        lines.append(f"| {m['index']} | [{m['shard'][0]:,}, {m['shard'][1]:,}) | {m['samples_per_s']:,.0f} | "
                     f"{m['gather_seconds']:.1f} | {m['peak_rss_mb_after_inference']:,.0f} | {m['peak_rss_mb']:,.0f} |")
    lines += [
        "",
        f"The {_PROCESSES.value} processes share this machine's {os.cpu_count()} cores (load average "
        f"{LOAD_BEFORE:.1f} before the run: other work shared them too): together {rate:,.0f} samples/s. The pool "
        f"inference of one iteration over the whole pool is **projected** (not run) at {projected_inference:,.0f} s "
        f"({projected_inference / 3600:.1f} h) from the slowest process's rate. Peak memory is the model, one chunk "
        "and the gathered scores: the images never exist whole.",
        "",
        "## Projected: one all-data iteration on GPU hosts",
        "",
        f"Measured inputs: one {gpu['device']} (commit {gpu['commit']}) scores "
        f"{gpu['inference_samples_per_s']:,.0f} pool samples/s (T' = 10) and takes {gpu['step_seconds'] * 1e3:.2f} ms "
        f"per training step of {BATCH}. Assumed: {ASSUMED_BANDWIDTH / 1e9:.1f} GB/s into each host and "
        f"{ASSUMED_LATENCY * 1e3:.1f} ms per exchange. Projected with the exchanges `data_parallel` makes: every "
        "step each host receives every host's batch rows and gradient, so a step's exchange grows with the hosts. "
        "The epoch keeps the paper's global batch of 256, so its step count does not shrink either: more hosts "
        "shorten the pool inference, while the epoch dominates an iteration at every size and grows past a few "
        "hosts. (The step's compute is taken as the measured full-batch step, an upper bound for a slice.)",
        "",
        "| pool | hosts | pool inference s | score gather s | training epoch s | iteration s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['pool']:,} | {row['hosts']} | {row['inference_s']:,.1f} | {row['score_gather_s']:,.2f} | "
                     f"{row['epoch_s']:,.0f} | {row['total_s']:,.0f} |")
    reporting.write_report(outdir, lines)


def main(argv):
    del argv
    if _CHILD.value:
        port, index = (int(part) for part in _CHILD.value.split(","))
        return _child(port, index)
    global LOAD_BEFORE
    outdir = pathlib.Path(_OUTDIR.value)
    if _PROJECT_ONLY.value:
        saved = json.loads((outdir / "scale.json").read_text())
        LOAD_BEFORE = saved["load_average_before"]
        sys.argv = ["", *saved["command"].split()[3:]]  # the measurement's own command, for the report
        return _report(saved["measured"], _gpu_rates(), outdir, saved)
    LOAD_BEFORE = os.getloadavg()[0]
    _report(_measure(), _gpu_rates(), outdir)


if __name__ == "__main__":
    app.run(main)
