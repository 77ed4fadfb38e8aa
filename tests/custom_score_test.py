"""Your acquisition score by import path (`policy="package.module:score"`, probs [T', B, C] -> [B]) computed inside
the chunked pool inference, and the margin and least-confidence scores."""

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from deepbass_jax import acquisition, algorithm, config as config_lib, driver as driver_lib, models, uncertainty
from deepbass_jax.workdir import checkpoint, runfolder
from tests.helpers import toy_config

HERE = "tests.custom_score_test"


def disagreement(probs):
    """Spread of the passes: the summed std over classes of each sample's probabilities, [T, B, C] -> [B]."""
    return probs.std(axis=0).sum(axis=-1)


def wrong_shape(probs):
    return probs.mean(axis=0)  # [B, C]: not one score per sample


NOT_A_FUNCTION = 3


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, (4, 5), elements=st.floats(0.015625, 1.0, width=32)))
def test_margin_and_least_confidence_properties(weights):
    probs = weights / weights.sum(axis=-1, keepdims=True)
    margin, confidence = (np.asarray(f(jnp.asarray(probs))) for f in (uncertainty.margin,
                                                                      uncertainty.least_confidence))
    ordered = np.sort(probs, axis=-1)
    np.testing.assert_allclose(margin, 1 - (ordered[:, -1] - ordered[:, -2]), atol=1e-6)
    np.testing.assert_allclose(confidence, 1 - ordered[:, -1], atol=1e-6)
    assert np.all((margin >= -1e-6) & (margin <= 1 + 1e-6)) and np.all(confidence <= 1 - 1 / 5 + 1e-6)
    permuted = probs[:, ::-1]  # class order does not matter
    np.testing.assert_allclose(uncertainty.margin(jnp.asarray(permuted)), margin, atol=1e-6)


def test_margin_and_least_confidence_on_known_cases():
    probs = jnp.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(uncertainty.margin(probs), [0.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(uncertainty.least_confidence(probs), [0.0, 0.5, 2 / 3], atol=1e-6)


def test_margin_policy_buys_the_smallest_margins():
    mean_probs = jnp.array([[0.9, 0.1], [0.55, 0.45], [0.7, 0.3], [0.5, 0.5]])
    stats = uncertainty.UncertaintyStats(mean_probs, *(jnp.zeros(4),) * 3)
    chosen = acquisition.get("margin")(stats, jnp.ones(4, bool), jax.random.key(0), 2)
    assert chosen.tolist() == [3, 1]


def test_your_score_is_computed_inside_the_chunked_pool_inference():
    module = models.ToyMLP(num_classes=3)
    apply_fn = models.make_apply(module)
    params = jax.tree_util.tree_map(lambda x: x[None], models.init_params(module, jax.random.key(0), (2,)))
    images = np.random.default_rng(0).normal(size=(70, 2)).astype(np.float32)
    keys = jnp.stack([jax.random.key(1)])
    stats = algorithm.pool_stats(apply_fn, params, images, keys, 10, 32, True, "map", score_fn=disagreement)
    plain = algorithm.pool_stats(apply_fn, params, images, keys, 10, 32, True, "map")
    assert plain.custom is None and stats.custom.shape == (1, 70)
    np.testing.assert_array_equal(stats.entropy, plain.entropy)  # the paper's scores do not change
    key = jax.random.fold_in(keys[0], 69)  # sample 69's masks, wherever its chunk
    probs = uncertainty.mc_probs(apply_fn, jax.tree_util.tree_map(lambda x: x[0], params), images[69:70], key, 10)
    np.testing.assert_allclose(stats.custom[0, 69], disagreement(probs)[0], rtol=1e-5)


def test_a_run_buys_the_highest_of_your_scores(tmp_path):
    config = toy_config(iterations=1, initial_epochs=10, policy=f"{HERE}:disagreement", labels_export_every=-1)
    driver = driver_lib.Driver(config, tmp_path)
    driver.run()
    bought = [e["index"] for e in checkpoint.read_jsonl(tmp_path / runfolder.ORACLE_LOG) if e["iteration"] == 1]
    assert len(bought) == 2
    # The last iteration's statistics chose them: the two highest scores among the candidates of that moment.
    scores = np.asarray(driver.pool_scores.custom[0])
    candidates = np.flatnonzero(~driver.seeds[0].state.labeled).tolist() + bought
    ranked = sorted(candidates, key=lambda i: -scores[i])
    assert sorted(bought) == sorted(ranked[:2])


@pytest.mark.parametrize("policy, message", [
    (f"{HERE}:missing", r"has no 'missing'"),
    (f"{HERE}:NOT_A_FUNCTION", r"is 3, not a function score\(probs \[T, B, C\]\) -> \[B\]"),
    ("nowhere.scores:s", r"cannot import 'nowhere\.scores'"),
])
def test_a_score_that_cannot_be_had_is_refused_before_any_data(policy, message):
    with pytest.raises(ValueError, match=message):
        config_lib.validate(toy_config(policy=policy))


def test_a_score_of_the_wrong_shape_is_refused_with_the_data():
    with pytest.raises(ValueError, match=r"maps probs \[T', B, C\] = \(10, 3, 2\) to shape \(3, 2\)"):
        acquisition.check_score(f"{HERE}:wrong_shape", 10, 2)
    acquisition.check_score(f"{HERE}:disagreement", 10, 2)
