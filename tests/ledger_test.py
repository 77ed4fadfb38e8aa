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
    with pytest.raises(oracle.OracleError, match=r"row 2: id 'x' is not an integer; row 3: label '11' of id 101"):
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


# ------------------------------------------------------------------------------------- a person as the oracle
def _file_ledger(folder, state=None):
    """A ledger asking a person (FileOracle in folder/oracle) about pool samples 0..7 (ids 100..107), as a
    (re)started run builds it: the oracle's state from the checkpoint (`state`) or fresh."""
    file_ledger = ledger_lib.Ledger(folder, oracle.FileOracle(folder / "oracle", 10), np.arange(100, 108), 10, None,
                                    collective.Collective())
    if state is not None:
        file_ledger.load_state_dict(state)
    return file_ledger


def _answers(folder, text, round_number=0):
    (folder / "oracle" / f"round_{round_number:04d}" / "answers.csv").write_text(text)


def _bought_labels(folder):
    """ground truth [8] as a run holds it after buying everything in the oracle log (corrections applied)."""
    ground_truth = np.full(8, -1, np.int32)
    for line in checkpoint.read_jsonl(folder / runfolder.ORACLE_LOG):
        ground_truth[line["index"]] = line["label"]
    return ground_truth


def test_a_partial_answers_csv_is_kept_and_the_next_start_asks_only_for_the_rest(tmp_path):
    """What the labeling page promises after a partial save: the run keeps those answers (the oracle log) and a
    restarted run asks only for the rest, in the same round folder: a file with just the rest does."""
    with pytest.raises(oracle.LabelsPending):
        _buy(_file_ledger(tmp_path), 1, [2, 5, 6])
    _answers(tmp_path, "id,label\n102,4\n105,9\n")  # the page saved 2 of 3
    with pytest.raises(oracle.LabelsPending, match=r"1 of the 3 samples of round_0000 have no label yet \(ids \[106\]"):
        _buy(_file_ledger(tmp_path), 1, [2, 5, 6])  # a new start: a new process, the state of the checkpoint
    log = checkpoint.read_jsonl(tmp_path / runfolder.ORACLE_LOG)
    assert [(e["id"], e["label"]) for e in log] == [(102, 4), (105, 9)]
    _answers(tmp_path, "id,label\n106,2\n")  # the rest alone, replacing the first file
    bought, labels = _buy(_file_ledger(tmp_path), 1, [2, 5, 6])
    assert sorted(zip(bought.tolist(), labels.tolist())) == [(2, 4), (5, 9), (6, 2)]
    assert sorted(p.name for p in (tmp_path / "oracle").iterdir()) == ["round_0000"]
    assert len(checkpoint.read_jsonl(tmp_path / runfolder.ORACLE_LOG)) == 3


def test_the_page_saved_again_in_full_after_a_partial_start_is_taken(tmp_path):
    """The page keeps every choice: its second save holds the kept answers too (one of them changed); the rows of
    kept ids are passed over, and the change is reported once the round is done, as any edit is."""
    with pytest.raises(oracle.LabelsPending):
        _buy(_file_ledger(tmp_path), 1, [2, 5])
    _answers(tmp_path, "id,label\n102,4\n")
    with pytest.raises(oracle.LabelsPending):
        _buy(_file_ledger(tmp_path), 1, [2, 5])
    _answers(tmp_path, "id,label\n102,3\n105,9\n")
    file_ledger = _file_ledger(tmp_path)
    bought, labels = _buy(file_ledger, 1, [2, 5])
    assert sorted(zip(bought.tolist(), labels.tolist())) == [(2, 4), (5, 9)]
    assert file_ledger.oracle.edited_answers({102: 4, 105: 9}) == [
        (102, 3, tmp_path / "oracle" / "round_0000" / "answers.csv")]


def test_invalid_rows_stop_the_run_but_the_valid_answers_are_kept(tmp_path):
    with pytest.raises(oracle.LabelsPending):
        _buy(_file_ledger(tmp_path), 1, [2, 5])
    _answers(tmp_path, "id,label\n102,4\n105,x\n")
    with pytest.raises(oracle.OracleError, match=r"valid rows kept: 1\): row 3: label 'x' of id 105 is not a class"):
        _buy(_file_ledger(tmp_path), 1, [2, 5])
    assert [(e["id"], e["label"]) for e in checkpoint.read_jsonl(tmp_path / runfolder.ORACLE_LOG)] == [(102, 4)]
    _answers(tmp_path, "id,label\n105,9\n")
    assert _buy(_file_ledger(tmp_path), 1, [2, 5])[1].tolist() == [4, 9]


def test_a_correction_for_a_label_never_bought_is_warned_about_once_per_run_folder(tmp_path, caplog):
    (tmp_path / ledger_lib.CORRECTIONS).write_text("id,label\n107,1\n")
    for iteration in (2, 3):  # the same run, then a resumed one: a new ledger
        _ledger(tmp_path).correct(iteration, np.full(8, -1, np.int32))
    assert caplog.text.count("id 107 has no label the oracle gave") == 1
    assert (tmp_path / ledger_lib.WARNED).exists()


def test_an_answer_changed_by_a_correction_is_not_reported_as_an_edit_of_answers_csv(tmp_path, caplog):
    """The user's case: the oracle said 2 for id 102 (answers.csv, unchanged since), corrections.csv says 3. No
    resume may claim that answers.csv "now gives id 102 the label 2" (following that advice would undo the
    correction); an edit of answers.csv made later is reported, once, against what the run uses."""
    with pytest.raises(oracle.LabelsPending):
        _buy(_file_ledger(tmp_path), 0, [2, 5])
    _answers(tmp_path, "id,label\n102,2\n105,9\n")
    file_ledger = _file_ledger(tmp_path)
    _buy(file_ledger, 0, [2, 5])
    state = file_ledger.state_dict()
    (tmp_path / ledger_lib.CORRECTIONS).write_text("id,label\n102,3\n")
    ground_truth = _file_ledger(tmp_path, state).correct(1, _bought_labels(tmp_path))
    assert ground_truth[2] == 3 and "Correcting the label of id 102 from 2 to 3" in caplog.text
    for iteration in (2, 3):  # resumes
        _file_ledger(tmp_path, state).correct(iteration, _bought_labels(tmp_path))
    assert "now gives" not in caplog.text
    _answers(tmp_path, "id,label\n102,5\n105,9\n")  # a real edit, after the correction
    for iteration in (4, 5):
        _file_ledger(tmp_path, state).correct(iteration, _bought_labels(tmp_path))
    assert caplog.text.count("now gives id 102 the label 5") == 1
    assert "read 2 then and uses 3, the label corrections.csv gives it. To use 5, put the row '102,5'" in caplog.text
    _answers(tmp_path, "id,label\n102,3\n105,9\n")  # answers.csv edited to what corrections.csv gives: nothing to say
    caplog.clear()
    _file_ledger(tmp_path, state).correct(6, _bought_labels(tmp_path))
    assert "now gives" not in caplog.text


def test_a_finished_runs_unapplied_corrections_are_named_with_the_command(tmp_path):
    ledger_lib.log_labels(tmp_path, 1, [2, 5], [4, 9], [102, 105])
    ledger_lib.log_labels(tmp_path, 2, [5], [1], [105], correction=True)
    (tmp_path / runfolder.LABELS).write_text("id,label,class_name,source,probability,entropy\n"
                                             "102,4,four,oracle,0.9,0.1\n105,1,one,oracle,0.9,0.1\n")
    assert ledger_lib.finished_run_note("/w", [tmp_path]) == ""
    (tmp_path / ledger_lib.CORRECTIONS).write_text("id,label\n105,one\n107,3\n")  # applied; never bought
    assert ledger_lib.finished_run_note("/w", [tmp_path]) == ""
    (tmp_path / ledger_lib.CORRECTIONS).write_text("id,label\n105,1\n102,5.0\n")
    note = ledger_lib.finished_run_note("/w", [tmp_path])
    assert note == (f" {tmp_path / ledger_lib.CORRECTIONS} has 1 row(s) this finished run has not applied (ids [102]): "
                    "apply them to its oracle log and labels.csv with python -m experiments.relabel --workdir=/w.")
    changes, unbought = ledger_lib.pending_corrections(tmp_path, 10)
    assert changes == [(2, 102, 4, 5)] and unbought == []
