"""Oracles: the simulated one reveals and counts; the file one round-trips through PNG + CSV and validates."""

import csv
import logging
import threading
import time

import numpy as np
import pytest

from deepbass_jax import oracle


def test_simulated_oracle_reveals_hidden_labels_and_counts_queries():
    hidden = np.array([3, 1, 4, 1, 5])
    simulated = oracle.SimulatedOracle(hidden)
    np.testing.assert_array_equal(simulated.label(np.array([4, 0])), [5, 3])
    assert simulated.num_queries == 2
    with pytest.raises(oracle.OracleError, match="already labeled"):
        simulated.label(np.array([1, 0]))
    restored = oracle.SimulatedOracle(hidden)
    restored.load_state_dict(simulated.state_dict())
    assert restored.num_queries == 2


def _file_oracle(tmp_path):
    return oracle.FileOracle(tmp_path / "oracle", num_classes=10)


def _answer(tmp_path, rows, round_number=0):
    folder = tmp_path / "oracle" / f"round_{round_number:04d}"
    with open(folder / "answers.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "image", "label"])
        writer.writerows(rows)


def _ask(file_oracle, indices):
    images = np.random.default_rng(0).uniform(size=(len(indices), 28, 28, 1)).astype(np.float32)
    return file_oracle.label(np.array(indices), images)


def test_file_oracle_round_trip(tmp_path):
    file_oracle = _file_oracle(tmp_path)
    with pytest.raises(oracle.LabelsPending, match="answers.csv"):
        _ask(file_oracle, [7, 2, 9])
    folder = tmp_path / "oracle" / "round_0000"
    assert sorted(p.name for p in folder.glob("*.png")) == ["2.png", "7.png", "9.png"]
    with open(folder / "queries.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["id"] for row in rows] == ["7", "2", "9"] and all(row["label"] == "" for row in rows)
    _answer(tmp_path, [[9, "9.png", 1], [7, "7.png", 0], [2, "2.png", 8]])
    np.testing.assert_array_equal(_ask(file_oracle, [7, 2, 9]), [0, 8, 1])
    # The next query is a new round; a resumed oracle continues the numbering.
    resumed = _file_oracle(tmp_path)
    resumed.load_state_dict(file_oracle.state_dict())
    with pytest.raises(oracle.LabelsPending, match="round_0001"):
        _ask(resumed, [3])


@pytest.mark.parametrize(
    "bad_row, message",
    [
        ([5, "5.png", 1], "id 5 was not asked"),
        ([2, "2.png", 10], r"label '10' of id 2 is not a class: give a number in \[0, 10\)"),
        ([2, "2.png", -1], "label '-1' of id 2 is not a class"),
        (["x", "2.png", 1], "id 'x' is not an integer"),
        ([2, "2.png", "seven"], "label 'seven' of id 2 is not a class"),
        ([7, "7.png", 4], "id 7 is answered twice"),
    ],
)
def test_file_oracle_rejects_bad_rows_by_row_number_and_keeps_the_good_ones(tmp_path, bad_row, message):
    file_oracle = _file_oracle(tmp_path)
    with pytest.raises(oracle.LabelsPending):
        _ask(file_oracle, [7, 2])
    _answer(tmp_path, [[7, "7.png", 3], bad_row])
    with pytest.raises(oracle.OracleError, match=f"row 3: {message}"):
        _ask(file_oracle, [7, 2])
    # The person fixes the file: only the missing answer needs to be there now; id 7's answer was kept.
    _answer(tmp_path, [[2, "2.png", 6]])
    np.testing.assert_array_equal(_ask(file_oracle, [7, 2]), [3, 6])


def test_a_partly_answered_file_keeps_its_answers_and_asks_only_for_the_rest(tmp_path):
    """A partial save of the page: the run stops as it does for any round waiting for labels (LabelsPending, not
    an error), carries the valid answers for the ledger to keep, and says what the page says."""
    file_oracle = _file_oracle(tmp_path)
    with pytest.raises(oracle.LabelsPending):
        _ask(file_oracle, [7, 2, 9])
    _answer(tmp_path, [[7, "7.png", 3]])
    with pytest.raises(oracle.LabelsPending) as pending:
        _ask(file_oracle, [7, 2, 9])
    message = str(pending.value)
    assert "2 of the 3 samples of round_0000 have no label yet (ids [2, 9])" in message
    assert "The run keeps the answers given and asks only for the rest" in message and "\n" not in message
    kept_indices, kept_labels = pending.value.kept
    assert kept_indices.tolist() == [7] and kept_labels.tolist() == [3]
    _answer(tmp_path, [[2, "2.png", 6], [9, "9.png", 1]])  # just the rest
    np.testing.assert_array_equal(_ask(file_oracle, [7, 2, 9]), [3, 6, 1])


def test_a_resumed_oracle_asks_the_rest_of_a_partly_logged_round_in_the_same_folder(tmp_path):
    """After a restart the ledger replays the kept answers (2 of the round's 3) and asks for the rest: the round
    stays open, and its answers.csv may hold every row (kept ones are passed over) or just the rest."""
    with pytest.raises(oracle.LabelsPending):
        _ask(_file_oracle(tmp_path), [7, 2, 9])
    for rows in ([[7, "7.png", 3], [2, "2.png", 6], [9, "9.png", 1]], [[9, "9.png", 1]]):
        _answer(tmp_path, rows)
        resumed = _file_oracle(tmp_path)
        resumed.replay(np.array([7, 2]), np.array([3, 6]))
        np.testing.assert_array_equal(_ask(resumed, [9]), [1])
        assert resumed.state_dict() == {"round": 1}
    assert sorted(p.name for p in (tmp_path / "oracle").iterdir()) == ["round_0000"]
    complete = _file_oracle(tmp_path)
    complete.replay(np.array([7, 2, 9]), np.array([3, 6, 1]))  # the whole round logged: it is done
    assert complete.state_dict() == {"round": 1}


def test_invalid_rows_are_an_error_that_keeps_the_valid_answers(tmp_path):
    file_oracle = _file_oracle(tmp_path)
    with pytest.raises(oracle.LabelsPending):
        _ask(file_oracle, [7, 2, 9])
    _answer(tmp_path, [[7, "7.png", 3], [2, "2.png", 12]])
    with pytest.raises(oracle.OracleError) as invalid:
        _ask(file_oracle, [7, 2, 9])
    message = str(invalid.value)
    assert "(valid rows kept: 1): row 3: label '12' of id 2 is not a class" in message and "\n" not in message
    assert "2 samples still have no valid label" in message  # 2 (invalid) and 9 (no row)
    assert invalid.value.kept[0].tolist() == [7]


def test_file_oracle_waits_for_answers(tmp_path):
    file_oracle = oracle.FileOracle(tmp_path / "oracle", num_classes=2, wait_seconds=0.2, poll_seconds=0.05)
    with pytest.raises(oracle.LabelsPending):
        file_oracle.label(np.array([0]), np.zeros((1, 2), np.float32))  # a feature vector: plotted
    assert (tmp_path / "oracle" / "round_0000" / "0.png").exists()


def _write(path, text):
    """Writes `text` as an editor would: to a temp file, then renamed into place."""
    path.with_suffix(".tmp").write_text(text)
    path.with_suffix(".tmp").replace(path)


def test_waiting_takes_answers_only_once_complete_and_says_what_it_waits_for(tmp_path, caplog):
    """`cp queries.csv answers.csv`, then filling it in row by row (one wrong row on the way): the waiting run
    reads nothing until every id has a valid label."""
    caplog.set_level(logging.WARNING)
    file_oracle = oracle.FileOracle(tmp_path / "oracle", num_classes=3, wait_seconds=30, poll_seconds=0.02,
                                    class_names=("ant", "bee", "cat"))
    folder = tmp_path / "oracle" / "round_0000"
    queries = folder / "queries.csv"
    answers = folder / "answers.csv"
    steps = [
        lambda: _write(answers, queries.read_text()),  # the copy: every label empty
        lambda: _write(answers, "id,image,label\n7,7.png,2\n2,2.png,\n9,9.png,\n"),
        lambda: _write(answers, "id,image,label\n7,7.png,2\n2,2.png,dog\n9,9.png,0\n"),  # a wrong row
        lambda: _write(answers, "id,image,label\n7,7.png,2\n2,2.png,Bee\n9,9.png,0\n"),  # names, any case
    ]

    def person():
        for step in steps:
            while not queries.exists():
                time.sleep(0.01)
            time.sleep(0.3)
            step()

    helper = threading.Thread(target=person)
    helper.start()
    labels = _ask(file_oracle, [7, 2, 9])
    helper.join()
    np.testing.assert_array_equal(labels, [2, 1, 0])
    assert "Waiting up to 30 s for the labels of 3 samples" in caplog.text
    assert "index.html" in caplog.text
    assert "0 of 3 samples labeled so far" in caplog.text
    assert "1 of 3 samples labeled so far" in caplog.text
    assert "label 'dog' of id 2 is not a class" in caplog.text


def test_waiting_gives_up_at_the_deadline_with_what_to_do(tmp_path):
    file_oracle = oracle.FileOracle(tmp_path / "oracle", num_classes=3, wait_seconds=0.2, poll_seconds=0.02)
    with pytest.raises(oracle.LabelsPending, match="no complete .*answers.csv within 0 s"):
        _ask(file_oracle, [1])


def test_edited_answers_of_finished_rounds_are_found(tmp_path):
    file_oracle = _file_oracle(tmp_path)
    with pytest.raises(oracle.LabelsPending):
        _ask(file_oracle, [7, 2])
    _answer(tmp_path, [[7, "7.png", 3], [2, "2.png", 4]])
    _ask(file_oracle, [7, 2])
    assert file_oracle.edited_answers({7: 3, 2: 4}) == []
    _answer(tmp_path, [[7, "7.png", 3], [2, "2.png", 5]])
    assert file_oracle.edited_answers({7: 3, 2: 4}) == [(2, 5, tmp_path / "oracle" / "round_0000" / "answers.csv")]


@pytest.mark.parametrize("text, label", [("2", 2), (" cat ", 2), ("ANT", 0), ("3", None), ("-1", None),
                                         ("dog", None), ("", None)])
def test_a_label_is_a_class_number_or_name(text, label):
    assert oracle.parse_label(text, 3, ("ant", "bee", "cat")) == label


def test_a_wait_that_ends_on_a_partly_answered_file_keeps_its_answers(tmp_path):
    file_oracle = oracle.FileOracle(tmp_path / "oracle", num_classes=3, wait_seconds=0.3, poll_seconds=0.02)
    with pytest.raises(oracle.LabelsPending):
        oracle.FileOracle(tmp_path / "oracle", num_classes=3).label(np.array([7, 2]), np.zeros((2, 4, 4)))
    _answer(tmp_path, [[7, "7.png", 2], [2, "2.png", ""]])
    with pytest.raises(oracle.LabelsPending, match=r"no complete .* The valid answers in it \(1\) are kept") as pending:
        _ask(file_oracle, [7, 2])
    assert pending.value.kept[0].tolist() == [7] and pending.value.kept[1].tolist() == [2]


def test_a_queries_csv_saved_over_by_a_spreadsheet_still_opens_the_round(tmp_path):
    """A person who filled in queries.csv in Excel (";" and a byte-order mark) did not break the round."""
    with pytest.raises(oracle.LabelsPending):
        _ask(_file_oracle(tmp_path), [7, 2])
    queries = tmp_path / "oracle" / "round_0000" / "queries.csv"
    queries.write_bytes(b"\xef\xbb\xbfid;image;label\r\n7;7.png;3\r\n2;2.png;\r\n")
    resumed = _file_oracle(tmp_path)
    resumed.replay(np.array([7]), np.array([3]))  # 1 of the round's 2: still open
    assert resumed.state_dict() == {"round": 0}
