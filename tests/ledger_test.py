"""The label ledger: labels logged before use, replayed (never asked again) after an interruption, corrected
through corrections.csv; with one process the collective passes everything through."""

import numpy as np
import pytest

from deepbass_jax import oracle
from deepbass_jax.oracle import ledger as ledger_lib
from deepbass_jax.parallel import collective
from deepbass_jax.workdir import checkpoint, runfolder

HIDDEN = np.array([3, 1, 4, 1, 5, 9, 2, 6], np.int32)


def _ledger(folder, hidden=HIDDEN):
    return ledger_lib.Ledger(folder, oracle.SimulatedOracle(hidden), np.arange(100, 100 + len(hidden)), 10, None,
                             collective.Collective())


def _buy(ledger, iteration, indices):
    return ledger.buy(iteration, indices, lambda ask: np.zeros((len(ask), 2)), lambda: None)


def test_bought_labels_are_logged_with_pool_index_and_id(tmp_path):
    bought, labels = _buy(_ledger(tmp_path), 1, [2, 5])
    np.testing.assert_array_equal(bought, [2, 5])
    np.testing.assert_array_equal(labels, [4, 9])
    log = checkpoint.read_jsonl(tmp_path / runfolder.ORACLE_LOG)
    assert log == [{"iteration": 1, "index": 2, "id": 102, "label": 4},
                   {"iteration": 1, "index": 5, "id": 105, "label": 9}]


def test_labels_logged_before_a_kill_are_replayed_not_asked_again(tmp_path):
    _buy(_ledger(tmp_path), 1, [2, 5])
    resumed = _ledger(tmp_path, hidden=np.full(8, 7, np.int32))  # an oracle asked again would answer 7
    bought, labels = _buy(resumed, 1, [2, 5])
    np.testing.assert_array_equal(labels, [4, 9])
    assert resumed.oracle.num_queries == 2  # replayed: the oracle's state is an uninterrupted run's
    assert len(checkpoint.read_jsonl(tmp_path / runfolder.ORACLE_LOG)) == 2


def test_a_partly_logged_iteration_asks_only_for_the_rest(tmp_path):
    ledger_lib.log_labels(tmp_path, 1, [2], [4], [102])
    ledger = _ledger(tmp_path)
    bought, labels = _buy(ledger, 1, [2, 5])
    assert sorted(zip(bought.tolist(), labels.tolist())) == [(2, 4), (5, 9)]
    assert [e["index"] for e in checkpoint.read_jsonl(tmp_path / runfolder.ORACLE_LOG)] == [2, 5]


def test_corrections_change_bought_labels_once_and_are_logged(tmp_path):
    ledger = _ledger(tmp_path)
    ground_truth = np.full(8, -1, np.int32)
    bought, labels = _buy(ledger, 1, [2, 5])
    ground_truth[bought] = labels
    (tmp_path / ledger_lib.CORRECTIONS).write_text("id,label\n105,8\n107,1\n")  # 107: never bought
    corrected = ledger.correct(2, ground_truth)
    assert corrected[5] == 8 and corrected[2] == 4 and corrected[7] == -1
    assert ground_truth[5] == 9  # the caller's array is left as it was
    log = checkpoint.read_jsonl(tmp_path / runfolder.ORACLE_LOG)
    assert log[-1] == {"iteration": 2, "index": 5, "id": 105, "label": 8, "correction": True}
    np.testing.assert_array_equal(ledger.correct(3, corrected), corrected)
    assert len(checkpoint.read_jsonl(tmp_path / runfolder.ORACLE_LOG)) == 3  # nothing more to correct
    assert ledger_lib.current_labels(tmp_path) == {102: 4, 105: 8}


def test_bad_correction_rows_are_named(tmp_path):
    (tmp_path / ledger_lib.CORRECTIONS).write_text("id,label\nx,1\n101,11\n")
    with pytest.raises(oracle.OracleError, match=r"row 2: id 'x' is not an integer\n  row 3: label '11' of id 101"):
        _ledger(tmp_path).correct(1, np.zeros(8, np.int32))


def test_one_process_collective_passes_everything_through():
    one = collective.Collective()
    values = np.array([3, 1], np.int64)
    assert one.leader and one.count == 1 and one.shard(10) == (0, 10)
    assert one.from_leader(values, 5) is values and one.broadcast(values) is values and one.agreed(True)
    np.testing.assert_array_equal(one.rows(np.arange(10) * 2, 10, [4, 1]), [8, 2])
    assert one.value_range(np.array([2.0, 2.0])) == (2.0, 3.0)
    with pytest.raises(oracle.LabelsPending):
        one.settle(oracle.LabelsPending("wait"), oracle.LabelsPending)
    one.settle(None, oracle.LabelsPending)
