"""studies/batchbald_cost.py at a tiny size: 64 synthetic images, chunks of 16, 4 passes, 8 candidates, a batch of 3."""

import math

import numpy as np
import pytest

from studies import batchbald_cost as study

TINY = study.Settings(chunk_size=16, mc_passes_pool=4, batch_candidates=8, batch_passes=4, acquire_count=3)


@pytest.fixture(scope="module")
def network():
    apply_fn, params, module = study.build_network()
    images = np.random.default_rng(0).random((64, 28, 28, 1), np.float32)
    return apply_fn, params, module, images


def test_the_preset_is_kirsch_et_als_setting():
    assert study.Settings.of("batchbald_mnist") == study.Settings(256, 100, 1000, 100, 10)
    assert study.Settings.of("batchbald_mnist").candidate_chunk == 256


def test_scoring_is_measured_or_scaled_from_the_probe(network):
    apply_fn, params, _, images = network
    measured, probe = study.scoring_seconds(apply_fn, params, images, [32, 64], TINY, 2, math.inf)
    scaled, _ = study.scoring_seconds(apply_fn, params, images, [64], TINY, 2, 0.0)
    assert measured[32]["how"].startswith("measured") and measured[64]["seconds"] > 0
    assert scaled[64]["how"].startswith("scaled")
    assert scaled[64]["seconds"] == pytest.approx(4 * scaled["seconds_per_chunk"]) and scaled[64]["seconds"] > 0
    assert probe.mutual_information.shape == (32,) and np.all(probe.mutual_information >= 0)


def test_candidates_and_greedy_pick_distinct_real_candidates(network):
    apply_fn, params, _, images = network
    bald = np.random.default_rng(1).random(64).astype(np.float32)
    candidates, probs, real, seconds = study.candidate_seconds(apply_fn, params, images, bald, TINY)
    assert seconds > 0 and sorted(candidates) == sorted(np.argsort(-bald)[:8])
    assert probs.shape == (4, 16, 10) and int(real.sum()) == 8  # padded to a whole chunk, the padding masked
    np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, rtol=1e-5)
    # 10 classes with at most 10 configurations: 2 exact steps, the third against 16 sampled configurations.
    greedy = study.greedy_seconds(probs, real, 3, max_configurations=10, num_samples=16)
    assert greedy["exact_steps"] == 2 and greedy["seconds"] > 0 and greedy["exact_seconds"] > 0
    assert greedy["compile_seconds"] >= 0 and greedy["sampled_seconds"] >= 0
    picks = greedy["picks"]
    assert len(set(picks.tolist())) == 3 and np.all(np.asarray(real)[picks])


def test_one_acquisition_reports_its_memory_and_picks(network):
    apply_fn, params, _, images = network
    result = study.acquisition_memory(apply_fn, params, images, TINY, scored=32)
    picks = result["picks"]
    assert len(set(picks.tolist())) == 3 and np.all((picks >= 0) & (picks < 32))
    assert result["seconds"] > 0 and result["peak_rss_mb"] >= result["rss_before_mb"] > 0


def test_array_sizes_follow_the_shapes(network):
    sizes = study.array_sizes_mb(60000, study.Settings.of("batchbald_mnist"), network[2].features)
    assert sizes["greedy: log joint [T, M]"] == pytest.approx(100 * 10_000 * 4 / 2**20)
    assert sizes["scoring: first conv output of a chunk [T', chunk, 28, 28, features]"] == pytest.approx(1225.0)
    assert sizes["candidate probs [T, K', C]"] == pytest.approx(100 * 1024 * 10 * 4 / 2**20)
