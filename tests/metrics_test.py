"""How far to trust the network and when to stop: the evaluation NLL, the expected calibration error (known answers
and properties), Cohen's kappa and the stop set, and HeldOut's calibration and predictions against direct numpy
computations from the network's probabilities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepbass_jax import algorithm, calibration, config as config_lib, data, losses, metrics, models, uncertainty
from deepbass_jax import driver as driver_lib
from deepbass_jax.workdir import checkpoint, runfolder
from tests.compilations import count_compilations
from tests.helpers import toy_config


# ------------------------------------------------------------------------------------------ numpy references
def _softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _numpy_ece(probs, labels, num_bins=calibration.NUM_BINS):
    """Guo et al.'s loop: bins (lower, upper] of np.linspace(0, 1, K + 1), sum_b |B_b| / N |acc_b - conf_b|."""
    probs = np.asarray(probs, np.float64)
    confidence, correct = probs.max(axis=-1), probs.argmax(axis=-1) == labels
    edges = np.linspace(0, 1, num_bins + 1)
    ece = 0.0
    for lower, upper in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lower) & (confidence <= upper)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return ece


def _numpy_kappa(a, b, num_classes):
    """Cohen's kappa from the confusion matrix."""
    confusion = np.zeros((num_classes, num_classes))
    np.add.at(confusion, (a, b), 1)
    confusion /= confusion.sum()
    observed, expected = np.trace(confusion), confusion.sum(1) @ confusion.sum(0)
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)


def _random_probs(rng, num, num_classes, scale=3.0):
    return _softmax(rng.normal(scale=scale, size=(num, num_classes))).astype(np.float32)


_jitted_ece = jax.jit(calibration.expected_calibration_error, static_argnames="num_bins")


def _ece(probs, labels, num_bins=calibration.NUM_BINS):
    """`expected_calibration_error` under jit, its rows padded to a multiple of 256 with NaN probabilities, label -1
    and weight 0 (which must not count): one program per (C, K) however many samples hypothesis draws."""
    num = len(labels)
    padded = -(-num // 256) * 256
    probs = np.concatenate([probs, np.full((padded - num, probs.shape[1]), np.nan, np.float32)])
    labels = np.concatenate([labels, -np.ones(padded - num, np.int32)])
    return float(_jitted_ece(probs, labels, num_bins=num_bins, weights=(np.arange(padded) < num).astype(np.float32)))


# ------------------------------------------------------------------------------------------------- the NLL
_nll = jax.jit(losses.negative_log_likelihood, static_argnames="reduction")


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 16), num_classes=st.integers(2, 5), seed=st.integers(0, 999))
def test_negative_log_likelihood_is_the_mean_minus_log_p_of_the_true_class_under_jit(batch, num_classes, seed):
    """Padding rows (weight 0, up to 16 rows: one program per C) count for nothing, even with NaN logits and
    label -1."""
    rng = np.random.default_rng(seed)
    padding = 16 - batch
    logits = rng.normal(scale=4.0, size=(batch + padding, num_classes)).astype(np.float32)
    labels = rng.integers(0, num_classes, batch + padding).astype(np.int32)
    logits[batch:], labels[batch:] = np.nan, -1
    weights = (np.arange(batch + padding) < batch).astype(np.float32)
    expected = -np.log(_softmax(logits[:batch])[np.arange(batch), labels[:batch]])
    np.testing.assert_allclose(_nll(logits, labels, weights), expected.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_nll(logits, labels, weights, reduction="sum"), expected.sum(), rtol=1e-5, atol=1e-5)


def test_negative_log_likelihood_matches_cross_entropy_and_is_zero_on_an_empty_batch():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(7, 3)).astype(np.float32), rng.integers(0, 3, 7)
    ones = np.ones(7, np.float32)
    np.testing.assert_allclose(losses.negative_log_likelihood(logits, labels, ones),
                               losses.cross_entropy(logits, labels, ones), rtol=1e-6)
    assert float(losses.negative_log_likelihood(logits, labels, np.zeros(7, np.float32))) == 0.0
    # Log-probabilities in place of logits: -log p of the true class.
    probs = _softmax(logits)
    np.testing.assert_allclose(losses.negative_log_likelihood(np.log(probs).astype(np.float32), labels, ones),
                               -np.log(probs[np.arange(7), labels]).mean(), rtol=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        losses.negative_log_likelihood(logits, labels, ones, reduction="max")


# ------------------------------------------------------------------------------ expected calibration error
def _calibrated_set(groups, num_classes):
    """Per group (n, k): n samples predicting class 0 at confidence k / n, k of them labeled 0 (right)."""
    probs, labels = [], []
    for n, k in groups:
        confidence = k / n
        row = np.full(num_classes, (1 - confidence) / (num_classes - 1))
        row[0] = confidence
        probs += [row] * n
        labels += [0] * k + [1] * (n - k)
    return np.asarray(probs, np.float32), np.asarray(labels, np.int32)


@st.composite
def calibrated_groups(draw, num_classes):
    """(n, k) with confidence k / n above 1 / C (class 0 is the prediction) and at most 1."""
    groups = []
    for _ in range(draw(st.integers(1, 6))):
        n = draw(st.integers(1, 40))
        k = draw(st.integers(n // num_classes + 1, n))
        groups.append((n, k))
    return groups


@settings(max_examples=30, deadline=None)
@given(data_=st.data(), num_classes=st.integers(2, 4), num_bins=st.sampled_from([1, 10, 15]))
def test_ece_of_perfectly_calibrated_predictions_is_zero(data_, num_classes, num_bins):
    """In every bin the accuracy equals the confidence (each group's k / n): ECE 0 up to float rounding."""
    probs, labels = _calibrated_set(data_.draw(calibrated_groups(num_classes)), num_classes)
    assert _ece(probs, labels, num_bins) == pytest.approx(0.0, abs=2e-6)


@pytest.mark.parametrize("num_bins", [1, 15])
def test_ece_known_answers_for_confident_predictions(num_bins):
    one_hot = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 1]]
    labels = np.array([0, 1, 2, 3, 1])
    for ece in (calibration.expected_calibration_error, _ece):
        assert float(ece(one_hot, labels, num_bins)) == 0.0  # all right at probability 1
        assert float(ece(one_hot, (labels + 1) % 4, num_bins)) == pytest.approx(1.0, abs=1e-6)  # all wrong


@settings(max_examples=20, deadline=None)
@given(num=st.integers(1, 60), num_classes=st.integers(2, 4), seed=st.integers(0, 999))
def test_ece_of_one_bin_is_the_gap_between_mean_confidence_and_accuracy(num, num_classes, seed):
    rng = np.random.default_rng(seed)
    probs, labels = _random_probs(rng, num, num_classes), rng.integers(0, num_classes, num)
    gap = abs(probs.max(-1).astype(np.float64).mean() - np.mean(probs.argmax(-1) == labels))
    assert _ece(probs, labels, num_bins=1) == pytest.approx(gap, abs=1e-6)


@settings(max_examples=25, deadline=None)
@given(num=st.integers(1, 80), num_classes=st.integers(2, 4), num_bins=st.sampled_from([1, 7, 15]),
       seed=st.integers(0, 999))
def test_ece_is_in_0_1_order_invariant_and_guo_et_als_loop(num, num_classes, num_bins, seed):
    rng = np.random.default_rng(seed)
    probs, labels = _random_probs(rng, num, num_classes), rng.integers(0, num_classes, num)
    ece = _ece(probs, labels, num_bins)
    assert 0.0 <= ece <= 1.0
    order = rng.permutation(num)
    assert _ece(probs[order], labels[order], num_bins) == pytest.approx(ece, abs=1e-6)
    assert ece == pytest.approx(_numpy_ece(probs, labels, num_bins), abs=1e-6)


_bins = jax.jit(calibration.calibration_bins, static_argnames="num_bins")


@settings(max_examples=20, deadline=None)
@given(num=st.integers(1, 50), chunk=st.sampled_from([4, 16]), seed=st.integers(0, 999))
def test_ece_from_chunks_bins_is_the_whole_sets_and_ignores_padding(num, chunk, seed):
    """Bins add: the ECE of a set cut into zero-weight-padded chunks is the whole set's."""
    rng = np.random.default_rng(seed)
    probs, labels = _random_probs(rng, num, 3), rng.integers(0, 3, num)
    padded = -(-num // chunk) * chunk
    probs_p = np.concatenate([probs, np.full((padded - num, 3), np.nan, np.float32)])
    labels_p = np.concatenate([labels, -np.ones(padded - num, np.int64)])
    weights = (np.arange(padded) < num).astype(np.float32)
    bins = [_bins(probs_p[s:s + chunk].max(-1), probs_p[s:s + chunk].argmax(-1) == labels_p[s:s + chunk],
                  weights[s:s + chunk]) for s in range(0, padded, chunk)]
    total = calibration.CalibrationBins(*(np.sum([np.asarray(b[i]) for b in bins], axis=0) for i in range(3)))
    assert float(total.count.sum()) == num
    assert calibration.ece_from_bins(total) == pytest.approx(_ece(probs, labels), abs=1e-6)
    assert calibration.ece_from_bins(total) == pytest.approx(_numpy_ece(probs, labels), abs=1e-6)


# ------------------------------------------------------------------------------------- kappa and stop set
@settings(max_examples=30, deadline=None)
@given(num=st.integers(1, 60), num_classes=st.integers(1, 5), seed=st.integers(0, 999))
def test_kappa_is_one_for_identical_predictions_symmetric_and_the_confusion_matrix_formula(num, num_classes, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, num_classes, num), rng.integers(0, num_classes, num)
    jitted = jax.jit(metrics.kappa, static_argnums=2)
    assert float(jitted(a, a, num_classes)) == 1.0
    assert float(jitted(np.zeros(num, int), np.zeros(num, int), num_classes)) == 1.0  # one class: p_e = 1
    assert float(jitted(a, b, num_classes)) == pytest.approx(float(jitted(b, a, num_classes)), abs=1e-6)
    assert float(jitted(a, b, num_classes)) == pytest.approx(_numpy_kappa(a, b, num_classes), abs=1e-5)


def test_kappa_of_independent_uniform_predictions_is_about_zero_and_of_opposite_ones_minus_one():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 10, 100_000), rng.integers(0, 10, 100_000)
    assert abs(float(metrics.kappa(a, b, 10))) < 0.01
    balanced = np.arange(1000) % 2
    assert float(metrics.kappa(balanced, 1 - balanced, 2)) == pytest.approx(-1.0)


def test_kappa_takes_a_seed_axis():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 4, (3, 50)), rng.integers(0, 4, (3, 50))
    b[1] = a[1]
    np.testing.assert_allclose(metrics.kappa(a, b, 4), [_numpy_kappa(a[r], b[r], 4) for r in range(3)], atol=1e-6)


def test_stop_set_is_a_fixed_seeded_subset_of_the_pool_or_all_of_it():
    first = metrics.stop_set_indices(5000, 1000, seed=3)
    assert len(first) == 1000 == len(np.unique(first)) and np.all(np.diff(first) > 0)
    assert first.min() >= 0 and first.max() < 5000
    np.testing.assert_array_equal(first, metrics.stop_set_indices(5000, 1000, seed=3))
    assert not np.array_equal(first, metrics.stop_set_indices(5000, 1000, seed=4))
    np.testing.assert_array_equal(metrics.stop_set_indices(300, 1000, seed=3), np.arange(300))


# ------------------------------------------------------------------------------------------ HeldOut
NUM_CLASSES, FEATURES = 3, 4


def _mlp(num_seeds, seed=0):
    config = models.default_config()
    config.architecture = "mlp"
    module = models.build(config, NUM_CLASSES)
    apply_fn = models.make_apply(module)
    params = algorithm.stack([models.init_params(module, jax.random.key(seed + r), (FEATURES,))
                              for r in range(num_seeds)])
    return apply_fn, params


def _dataset(num_test, seed=0):
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(40, FEATURES)).astype(np.float32)
    test = rng.normal(scale=2.0, size=(num_test, FEATURES)).astype(np.float32)
    return data.Dataset("tiny", train, rng.integers(0, NUM_CLASSES, 40).astype(np.int32), test,
                        rng.integers(0, NUM_CLASSES, num_test).astype(np.int32), NUM_CLASSES)


def _expected(apply_fn, params, datasets):
    """Per seed the test accuracy, ECE and NLL from the network's probabilities, in numpy."""
    expected = []
    for r, dataset in enumerate(datasets):
        logits = np.asarray(apply_fn(algorithm.unstack(params, r), dataset.test_images))
        probs, labels = _softmax(logits), dataset.test_labels
        expected.append({"test_accuracy": np.mean(logits.argmax(-1) == labels), "test_ece": _numpy_ece(probs, labels),
                         "test_nll": -np.log(probs[np.arange(len(labels)), labels]).mean()})
    return expected


@pytest.mark.parametrize("num_seeds, shared, seed_axis", [(1, True, "map"), (2, True, "map"), (2, True, "vmap"),
                                                          (2, False, "map")])
def test_held_out_calibration_is_the_networks_and_the_accuracy_as_before(num_seeds, shared, seed_axis):
    """2,100 test samples: two chunks of 2,048, the second mostly padding."""
    apply_fn, params = _mlp(num_seeds)
    datasets = [_dataset(2100, seed=0 if shared else r) for r in range(num_seeds)]
    if shared:
        datasets = [datasets[0]] * num_seeds
    held_out = metrics.HeldOut(datasets, [np.array([1, 5, 7])] * num_seeds)
    assert held_out.test["shared_test"] == shared
    results = held_out.accuracy(apply_fn, params, seed_axis)
    before = algorithm.seeds_accuracy(apply_fn, params, held_out.test["test_images"], held_out.test["test_labels"],
                                      shared, seed_axis)
    for r, (result, expected) in enumerate(zip(results, _expected(apply_fn, params, datasets))):
        assert set(result) == {"test_accuracy", "test_ece", "test_nll", "val_accuracy"}
        assert result["test_accuracy"] == float(before[r])  # exactly seeds_correct's count
        assert result["test_accuracy"] == pytest.approx(expected["test_accuracy"], abs=1e-12)
        assert result["test_ece"] == pytest.approx(expected["test_ece"], abs=1e-5)
        assert result["test_nll"] == pytest.approx(expected["test_nll"], rel=1e-5)
        assert 0 < result["test_ece"] < 1 and result["test_nll"] > 0


@settings(max_examples=10, deadline=None)
@given(num_samples=st.integers(1, 70), chunk_size=st.sampled_from([16, 64]), num_seeds=st.integers(1, 2),
       shared=st.booleans(), seed_axis=st.sampled_from(algorithm.SEED_AXES))
def test_seeds_evaluate_sums_are_the_whole_sets_whatever_the_chunking(num_samples, chunk_size, num_seeds, shared,
                                                                      seed_axis):
    apply_fn, params = _mlp(num_seeds)
    rng = np.random.default_rng(num_samples)
    shape = (num_samples, FEATURES) if shared else (num_seeds, num_samples, FEATURES)
    images, labels = rng.normal(size=shape).astype(np.float32), rng.integers(0, NUM_CLASSES, shape[:-1])
    sums = algorithm.seeds_evaluate(apply_fn, params, images, labels, shared, seed_axis, chunk_size=chunk_size)
    accuracy = algorithm.seeds_accuracy(apply_fn, params, images, labels, shared, seed_axis, chunk_size=chunk_size)
    np.testing.assert_array_equal(sums.right / num_samples, accuracy)
    for r in range(num_seeds):
        x, y = (images, labels) if shared else (images[r], labels[r])
        probs = _softmax(apply_fn(algorithm.unstack(params, r), x))
        assert float(sums.bins.count[r].sum()) == num_samples
        assert calibration.ece_from_bins(algorithm.unstack(sums.bins, r)) == pytest.approx(_numpy_ece(probs, y),
                                                                                           abs=1e-5)
        assert sums.nll[r] == pytest.approx(-np.log(probs[np.arange(num_samples), y]).sum(), rel=1e-5)


@pytest.mark.parametrize("seed_axis", algorithm.SEED_AXES)
def test_the_cnns_test_accuracy_is_seeds_corrects_count(seed_axis):
    """The paper's CNN (two seeds, 8 x 8 images): the calibration pass counts exactly the right predictions of the
    accuracy's program."""
    config = models.default_config()
    module = models.build(config, 10)
    apply_fn = models.make_apply(module)
    params = algorithm.stack([models.init_params(module, jax.random.key(r), (8, 8, 1)) for r in range(2)])
    rng = np.random.default_rng(0)
    images, labels = rng.random((300, 8, 8, 1), np.float32), rng.integers(0, 10, 300)
    sums = algorithm.seeds_evaluate(apply_fn, params, images, labels, True, seed_axis, chunk_size=128)
    right, _ = algorithm.seeds_correct(apply_fn, params, np.pad(images, ((0, 84), (0, 0), (0, 0), (0, 0))),
                                       np.pad(labels, (0, 84), constant_values=-1), shared_images=True,
                                       seed_axis=seed_axis, chunk_size=128)
    np.testing.assert_array_equal(sums.right, right)


def test_mc_calibration_is_opt_in_and_the_mc_means_with_pool_inferences_keys():
    config = config_lib.default_config()
    assert config.calibration_mc is False
    config.seed, config.calibration_mc, config.mc_passes_pool = 5, True, 4
    apply_fn, params = _mlp(2)
    dataset = _dataset(90)
    assert metrics.HeldOut([dataset] * 2, [np.array([], int)] * 2, config_lib.default_config()).calibration == {}
    results = metrics.HeldOut([dataset] * 2, [np.array([], int)] * 2, config).accuracy(apply_fn, params, "map")
    plain = metrics.HeldOut([dataset] * 2, [np.array([], int)] * 2).accuracy(apply_fn, params, "map")
    for r, (result, before) in enumerate(zip(results, plain)):
        assert set(result) == {"test_accuracy", "test_ece", "test_nll", "test_ece_mc", "test_nll_mc"}
        assert {k: result[k] for k in before} == before
        key = jax.random.fold_in(jax.random.key(config.seed + r), metrics.CALIBRATION_STREAM)
        seed_params = algorithm.unstack(params, r)
        mean_probs = jax.jit(jax.vmap(lambda x, i: uncertainty.predictive_mean(uncertainty.mc_probs(  # noqa: E731
            apply_fn, seed_params, x[None], jax.random.fold_in(key, i), 4))[0]))
        probs = np.asarray(mean_probs(dataset.test_images, np.arange(90, dtype=np.uint32)), np.float64)
        labels = dataset.test_labels
        assert result["test_ece_mc"] == pytest.approx(_numpy_ece(probs, labels), abs=1e-5)
        assert result["test_nll_mc"] == pytest.approx(-np.log(probs[np.arange(90), labels]).mean(), rel=1e-5)
        assert result["test_nll_mc"] != result["test_nll"]


def test_held_out_compiles_one_evaluation_program_per_test_set_shape():
    apply_fn, params = _mlp(2)
    held_out = metrics.HeldOut([_dataset(1500)] * 2, [np.array([], int)] * 2)  # a shape no other test takes
    with count_compilations() as compiled:
        held_out.accuracy(apply_fn, params, "map")
    assert compiled[algorithm.seeds_evaluation.__name__] == 1
    assert compiled[algorithm.seeds_correct.__name__] == 0
    trained = jax.tree_util.tree_map(lambda p: p * 1.5, params)  # a later iteration's network
    with count_compilations() as compiled:
        held_out.accuracy(apply_fn, trained, "map")
    assert compiled[algorithm.seeds_evaluation.__name__] == 0


@pytest.mark.parametrize("num_seeds", [1, 2])
def test_predict_gives_each_seeds_deterministic_classes_on_shared_or_own_stop_sets(num_seeds):
    apply_fn, params = _mlp(num_seeds)
    held_out = metrics.HeldOut([_dataset(10)] * num_seeds, [np.array([], int)] * num_seeds)
    rng = np.random.default_rng(0)
    own = rng.normal(size=(num_seeds, 1000, FEATURES)).astype(np.float32)
    expected = np.stack([np.asarray(apply_fn(algorithm.unstack(params, r), own[r])).argmax(-1)
                         for r in range(num_seeds)])
    with count_compilations() as compiled:
        predicted = held_out.predict(apply_fn, params, "map", own)
        again = held_out.predict(apply_fn, jax.tree_util.tree_map(lambda p: p * 2, params), "map", own)
    assert compiled[algorithm.seeds_predictions.__name__] == 1
    assert isinstance(predicted, np.ndarray) and predicted.shape == (num_seeds, 1000)
    np.testing.assert_array_equal(predicted, expected)
    assert again.shape == predicted.shape
    shared = held_out.predict(apply_fn, params, "vmap", jnp.asarray(own[0]))
    np.testing.assert_array_equal(shared, np.stack([np.asarray(apply_fn(algorithm.unstack(params, r), own[0]))
                                                    .argmax(-1) for r in range(num_seeds)]))
    assert float(metrics.kappa(predicted, predicted, NUM_CLASSES).min()) == 1.0


def test_a_runs_metrics_lines_gain_the_test_calibration(tmp_path):
    """A driver run: every metrics line, the initial one included, holds test_ece and test_nll (and the MC ones
    with config.calibration_mc) beside a test accuracy that is the network's."""
    config = toy_config(iterations=2, test_size=150, calibration_mc=True, mc_passes_pool=3)
    driver = driver_lib.Driver(config, tmp_path)
    driver.run()
    lines = checkpoint.read_jsonl(driver.seeds[0].folder / runfolder.METRICS)
    assert len(lines) == 3
    for line in lines:
        assert {"test_accuracy", "test_ece", "test_nll", "test_ece_mc", "test_nll_mc"} <= set(line)
        assert 0 <= line["test_ece"] <= 1 and line["test_nll"] > 0
    seed = driver.seeds[0]
    [expected] = algorithm.seeds_accuracy(driver.apply_fn, driver.states.params, seed.dataset.test_images,
                                          seed.dataset.test_labels, True, driver.seed_axis)
    assert lines[-1]["test_accuracy"] == expected


def test_pseudo_label_confusion_counts_true_against_pseudo_and_keeps_the_top_pairs_of_many_classes():
    true = np.array([7, 7, 7, 9, 4, 4])
    pseudo = np.array([7, 9, 9, 9, 9, 4])
    counts = np.array(metrics.pseudo_label_confusion(true, pseudo, 10)["pseudo_label_confusion"])
    assert counts.shape == (10, 10) and counts.sum() == 6
    assert counts[7, 7] == 1 and counts[7, 9] == 2 and counts[9, 9] == 1 and counts[4, 9] == 1 and counts[4, 4] == 1
    many = metrics.pseudo_label_confusion(np.array([30, 30, 30, 5, 5, 1]), np.array([2, 2, 30, 6, 6, 1]), 40)
    assert many == {"pseudo_label_top_confusions": [[5, 6, 2], [30, 2, 2]]}


def test_a_runs_metrics_lines_hold_the_pseudo_labels_confusion(tmp_path):
    driver_lib.run(toy_config(iterations=2), tmp_path)
    lines = checkpoint.read_jsonl(tmp_path / runfolder.METRICS)[1:]
    for line in lines:
        counts = np.array(line["pseudo_label_confusion"])
        assert counts.shape == (2, 2) and counts.sum() == line["pseudo_labeled"]
        assert np.trace(counts) / counts.sum() == pytest.approx(line["pseudo_label_accuracy"])
