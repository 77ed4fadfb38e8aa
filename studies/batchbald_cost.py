"""What one BatchBALD acquisition costs on a 60,000-image MNIST pool (issue 30): time per phase and peak memory, with
the paper CNN at random init (as experiments/bench.py builds it) on MNIST's training images and the settings of the
preset batchbald_mnist (T' = 100 MC-dropout passes over the pool, chunk 256; BALD's top 1,000 as candidates; 100
consistent passes over them; a greedy batch of 10).

  python -m studies.batchbald_cost --data_dir=../shared/data/mnist --json=results/bench/batchbald_cost_cpu.json

Each phase is timed after a warm-up call that compiles it:
  1. scoring: `algorithm.pool_stats` (the driver's pool inference) over the first n images, n in --pool_sizes. A
     pool whose full pass the probe (--probe_chunks chunks) puts above --max_full_seconds is not run: its seconds
     are the probe's per chunk times its chunks (pool_stats' work is linear in them); "how" says which was done.
  2. candidates: BALD's top batch_candidates and their consistent MC passes, as `algorithm.batch_queries` runs them.
  3. greedy: `batchbald.greedy_select` of acquire_count among them (compilation apart); its first steps score
     against the exact joint (10^i <= 10,000 configurations), the rest against sampled ones: timed apart.
  4. memory: peak RSS of a fresh process that loads the pool, scores it (--memory_chunks chunks, 0: all of it) and
     runs `algorithm.batch_queries` (candidates + greedy); beside it the largest arrays, from their shapes.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from typing import NamedTuple

import jax
import numpy as np
from absl import app, flags, logging

from deepbass_jax import acquisition, algorithm, batchbald, data, models, uncertainty
from experiments import provenance
from experiments.configs import mnist

MACHINE = "2-core x86_64 CPU, no accelerator"
NOTE = ("The machine was shared with two background training runs (each about one core) during the measurement: "
        "the seconds are upper bounds.")


class Settings(NamedTuple):
    """The run config's fields an acquisition reads."""

    chunk_size: int  # pool inference chunk
    mc_passes_pool: int  # T'
    batch_candidates: int  # K
    batch_passes: int  # T of the consistent passes
    acquire_count: int  # n

    @classmethod
    def of(cls, preset: str) -> "Settings":
        config = mnist.get_config(preset)
        return cls(*(config[field] for field in cls._fields))

    @property
    def candidate_chunk(self) -> int:
        """The chunk of the consistent passes, as `algorithm.seeds_choices` gives it to `batch_queries`."""
        return max(1, self.chunk_size * self.mc_passes_pool // self.batch_passes)


def build_network(seed: int = 0):
    """The paper CNN at random init: (apply_fn, params, module)."""
    module = models.build(models.default_config(), 10)
    return models.make_apply(module), models.init_params(module, jax.random.key(seed), (28, 28, 1)), module


def load_pool(data_dir: str, size: int) -> np.ndarray:
    """The first `size` MNIST training images, [size, 28, 28, 1] float32 in [0, 1]."""
    return data.load_idx_dir("mnist", data_dir).train_images[:size]


def _timed(fn):
    """(fn(), its wall seconds); fn must wait for its results (host values or block_until_ready)."""
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def score(apply_fn, params, images, key, s: Settings) -> uncertainty.UncertaintyStats:
    """Line 5 for one seed, as the driver runs it: `pool_stats` over images [N, ...] -> numpy fields [N, ...]."""
    stats = algorithm.pool_stats(apply_fn, algorithm.stack([params]), images, key[None], s.mc_passes_pool,
                                 s.chunk_size, shared=True, seed_axis="map")
    return uncertainty.UncertaintyStats(*(None if f is None else f[0] for f in stats))


def scoring_seconds(apply_fn, params, images, pool_sizes, s: Settings, probe_chunks: int,
                    max_full_seconds: float):
    """Seconds of `score` over the first n of images [N >= max(pool_sizes), ...] for each n: ({n: {"seconds",
    "how"}, "seconds_per_chunk": of chunk_size images, T' passes}, the probe's stats [probe_chunks * chunk_size])."""
    key = jax.random.key(1)
    score(apply_fn, params, images[: s.chunk_size], key, s)  # compiles
    probe_stats, probe = _timed(lambda: score(apply_fn, params, images[: probe_chunks * s.chunk_size], key, s))
    per_chunk = probe / probe_chunks
    result = {"seconds_per_chunk": per_chunk}
    for n in pool_sizes:
        chunks = -(-n // s.chunk_size)
        if per_chunk * chunks <= max_full_seconds:
            _, seconds = _timed(lambda: score(apply_fn, params, images[:n], key, s))
            result[n] = {"seconds": seconds, "how": f"measured: a full pass over {n} images"}
        else:
            result[n] = {"seconds": per_chunk * chunks,
                         "how": f"scaled: {probe_chunks} chunks of {s.chunk_size} timed, times {chunks} chunks"}
    return result, probe_stats


def consistent_probs(apply_fn, params, images, key, s: Settings):
    """batch_queries' consistent passes over candidate images [K, ...]: (probs [T, K', C], real [K'] bool)."""
    probs, real = algorithm.consistent_passes(apply_fn, params, images, key, s.batch_passes, s.candidate_chunk)
    return probs.block_until_ready(), real


def candidate_seconds(apply_fn, params, images, bald, s: Settings):
    """Phase 2 on pool images [N, ...] with their BALD [N]: (candidates [K], probs [T, K', C], real [K'], seconds)."""
    key = jax.random.key(2)
    consistent_probs(apply_fn, params, images[: s.candidate_chunk], key, s)  # compiles

    def run():
        candidates = algorithm.batch_candidates(bald, np.ones(len(bald), bool), s.batch_candidates)
        return (candidates, *consistent_probs(apply_fn, params, images[candidates], key, s))

    (candidates, probs, real), seconds = _timed(run)
    return candidates, probs, real, seconds


def greedy_seconds(probs, real, n: int, max_configurations: int = 10_000, num_samples: int = 10_000) -> dict:
    """Phase 3: `greedy_select` of n among probs [T, K, C] (mask real [K]), timed on a second call:
    {"picks" [n], "seconds", "compile_seconds", "exact_steps", "exact_seconds", "sampled_seconds"}."""
    key = jax.random.key(3)
    exact = batchbald._num_exact_steps(n, probs.shape[-1], max_configurations)

    def select(m):
        return lambda: np.asarray(batchbald.greedy_select(probs, m, key, real, max_configurations, num_samples))

    _, first = _timed(select(n))
    picks, seconds = _timed(select(n))
    if exact < n:
        select(exact)()  # compiles
        _, exact_seconds = _timed(select(exact))
    else:
        exact_seconds = seconds
    return {"picks": picks, "seconds": seconds, "compile_seconds": max(first - seconds, 0.0), "exact_steps": exact,
            "exact_seconds": exact_seconds, "sampled_seconds": max(seconds - exact_seconds, 0.0)}


def _rss_mb() -> float:
    """This process's resident memory now, in MB (Linux)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def acquisition_memory(apply_fn, params, images, s: Settings, scored: int) -> dict:
    """One acquisition in this process: `score` of the first `scored` images of images [N, ...] (0: all), then
    `algorithm.batch_queries` (top-K BALD, consistent passes, greedy) among them: {"picks" (pool indices [n]),
    "seconds", "rss_before_mb", "peak_rss_mb"}; peak RSS is since the process started."""
    before = _rss_mb()
    scored = scored or len(images)

    def run():
        stats = score(apply_fn, params, images[:scored], jax.random.key(1), s)
        stats = jax.tree_util.tree_map(lambda f: f[None], stats)  # one seed: fields [1, scored, ...]
        return algorithm.batch_queries(
            acquisition.BATCH_POLICIES["batchbald"], apply_fn, algorithm.stack([params]), stats,
            np.zeros((1, scored), bool), lambda r, rows: images[rows], jax.random.key(4)[None], s.acquire_count,
            s.batch_candidates, s.batch_passes, s.candidate_chunk)[0]

    picks, seconds = _timed(run)
    return {"picks": picks, "seconds": seconds, "rss_before_mb": before,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def array_sizes_mb(pool_size: int, s: Settings, features: int, num_classes: int = 10,
                   max_configurations: int = 10_000, candidate_chunk: int = 128) -> dict:
    """The largest arrays of one acquisition, float32, in MB, from their shapes."""
    mb = lambda *shape: 4 * float(np.prod(shape)) / 2**20  # noqa: E731
    k = -(-s.batch_candidates // s.candidate_chunk) * s.candidate_chunk
    return {
        "pool_images [N, 28, 28, 1]": mb(pool_size, 28, 28, 1),
        "pool_scores [N, C + 3]": mb(pool_size, num_classes + 3),
        "scoring: first conv output of a chunk [T', chunk, 28, 28, features]":
            mb(s.mc_passes_pool, s.chunk_size, 28, 28, features),
        "consistent passes: first conv output of a chunk [T, chunk, 28, 28, features]":
            mb(s.batch_passes, s.candidate_chunk, 28, 28, features),
        "candidate probs [T, K', C]": mb(s.batch_passes, k, num_classes),
        "greedy: log joint [T, M]": mb(s.batch_passes, max_configurations),
        "greedy: p(y_k | config) of a candidate chunk [128, M, C]":
            mb(candidate_chunk, max_configurations, num_classes),
    }


def _child_memory(pool_size: int, memory_chunks: int) -> dict:
    """`acquisition_memory` in a fresh process (this script with --memory_child), its JSON line parsed."""
    command = [sys.executable, "-m", "studies.batchbald_cost", "--memory_child", f"--data_dir={_DATA_DIR.value}",
               f"--preset={_PRESET.value}", f"--pool_sizes={pool_size}", f"--memory_chunks={memory_chunks}"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def _define_flags() -> None:
    """The study's flags, defined only when it runs (its test imports it beside entry points of the same names)."""
    global _DATA_DIR, _PRESET, _POOL_SIZES, _PROBE_CHUNKS, _MAX_FULL, _MEMORY_CHUNKS, _JSON, _MEMORY_CHILD
    _DATA_DIR = flags.DEFINE_string("data_dir", "../shared/data/mnist", "Folder with MNIST's four IDX files.")
    _PRESET = flags.DEFINE_string("preset", "batchbald_mnist", "The preset (experiments/configs/mnist.py) whose "
                                  "chunk_size, mc_passes_pool, batch_candidates, batch_passes, acquire_count count.")
    _POOL_SIZES = flags.DEFINE_list("pool_sizes", ["6000", "60000"], "Pools to time scoring on; the last one is "
                                    "the pool of phases 2-4.")
    _PROBE_CHUNKS = flags.DEFINE_integer("probe_chunks", 4, "Chunks timed to estimate (or scale) a full pass.")
    _MAX_FULL = flags.DEFINE_float("max_full_seconds", 120.0, "Run a full scoring pass only when the probe "
                                   "estimates at most this; else scale the probe.")
    _MEMORY_CHUNKS = flags.DEFINE_integer("memory_chunks", 4, "Chunks of the pool the memory process scores before "
                                          "its candidates and greedy (0: the whole pool).")
    _JSON = flags.DEFINE_string("json", None, "Write the results as one JSON object to this file.")
    _MEMORY_CHILD = flags.DEFINE_bool("memory_child", False, "Internal: run `acquisition_memory`, print its JSON.")


def main(argv):
    del argv
    s = Settings.of(_PRESET.value)
    pool_sizes = [int(n) for n in _POOL_SIZES.value]
    apply_fn, params, module = build_network()
    images = load_pool(_DATA_DIR.value, max(pool_sizes))
    if _MEMORY_CHILD.value:
        result = acquisition_memory(apply_fn, params, images, s, _MEMORY_CHUNKS.value * s.chunk_size)
        print(json.dumps({**result, "picks": result["picks"].tolist()}))
        return
    pool = pool_sizes[-1]
    logging.info("Phase 1: scoring %s images with T' = %d ...", pool_sizes, s.mc_passes_pool)
    scoring, probe = scoring_seconds(apply_fn, params, images, pool_sizes, s, _PROBE_CHUNKS.value, _MAX_FULL.value)
    logging.info("Scoring: %s", scoring)
    logging.info("Phase 2: consistent passes over the top %d of the probe ...", s.batch_candidates)
    # The probe's BALD stands in for the pool's: which samples are the candidates does not change the cost.
    candidates, probs, real, candidate_s = candidate_seconds(apply_fn, params, images, probe.mutual_information, s)
    logging.info("Candidates: %.2f s", candidate_s)
    logging.info("Phase 3: greedy batch of %d ...", s.acquire_count)
    greedy = greedy_seconds(probs, real, s.acquire_count)
    logging.info("Greedy: %s", greedy)
    logging.info("Phase 4: memory of one acquisition in a fresh process ...")
    memory = _child_memory(pool, _MEMORY_CHUNKS.value)
    total = scoring[pool]["seconds"] + candidate_s + greedy["seconds"]
    results = {
        "command": " ".join(["python -m studies.batchbald_cost", *sys.argv[1:]]),
        "commit": provenance.commit(), "machine": MACHINE, "device": provenance.device(),
        "jax_version": jax.__version__, "note": NOTE, "settings": {**s._asdict(), "preset": _PRESET.value},
        "scoring": {str(k): v for k, v in scoring.items()},
        "candidates_seconds": candidate_s, "candidate_probs_shape": list(probs.shape),
        "greedy": {**greedy, "picks": candidates[greedy["picks"]].tolist(), "picks_note":
                   "pool indices among the probe's top-BALD images (its BALD stands in for the pool's)"},
        "seconds_per_acquisition": total,
        "seconds_per_acquisition_how": f"scoring of {pool} ({scoring[pool]['how'].split(':')[0]}) + candidates "
                                       "+ greedy, compilation excluded",
        "memory": {**memory, "pool_size": pool, "scored": (_MEMORY_CHUNKS.value * s.chunk_size) or pool,
                   "how": "peak RSS of a fresh process holding the pool's images: scoring of 'scored' images (the "
                          "per-chunk working set of the whole pass; the rest of the pool adds its scores, in "
                          "array_sizes_mb) then batch_queries (candidates + greedy), compilation included"},
        "array_sizes_mb": array_sizes_mb(pool, s, module.features),
    }
    print(json.dumps(results, indent=2))
    if _JSON.value:
        with open(_JSON.value, "w") as handle:
            json.dump(results, handle, indent=2)
            handle.write("\n")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
