"""Answer files as spreadsheets save them: answers.csv and corrections.csv with a UTF-8 byte-order mark (Excel's
"CSV UTF-8"), UTF-16 (Excel's "Unicode Text"), `;` (European locales) or tab separators, and class numbers written
as whole decimals (`2.0`); anything else still refused in one line that names the reason."""

import codecs

import numpy as np
import pytest

from deepbass_jax import oracle
from deepbass_jax.oracle import files, ledger

IMAGES = np.zeros((3, 8, 8, 1), np.float32)
NAMES = ("ant", "bee", "cat")


def _round(tmp_path):
    """A FileOracle with round 0 (ids 7, 2, 9; classes ant, bee, cat) written and waiting for answers.csv."""
    file_oracle = oracle.FileOracle(tmp_path / "oracle", num_classes=3, class_names=NAMES)
    with pytest.raises(oracle.LabelsPending):
        file_oracle.label(np.array([7, 2, 9]), IMAGES)
    return file_oracle, tmp_path / "oracle" / "round_0000" / "answers.csv"


SAVED = {  # what a spreadsheet writes for the answers 7 -> 2, 2 -> 0, 9 -> 1
    "Excel CSV UTF-8 (byte-order mark)": codecs.BOM_UTF8 + b"id,label\r\n7,2\r\n2,0\r\n9,1\r\n",
    "European locale (semicolons)": b"id;image;label\n7;7.png;2\n2;2.png;0\n9;9.png;1\n",
    "byte-order mark and semicolons": codecs.BOM_UTF8 + b"id;label\r\n7;2\r\n2;0\r\n9;1\r\n",
    "Excel Unicode Text (UTF-16, tabs)": "id\tlabel\r\n7\t2\r\n2\t0\r\n9\t1\r\n".encode("utf-16"),
    "pandas with empty labels (floats)": b"id,label\n7,2.0\n2,0.0\n9,1.0\n",
    "decimal commas, semicolons": b"id;label\n7;2,0\n2;0,0\n9;1\n",
    "header in other case, blanks, names": b" ID , Label \n7, cat\n2,ANT\n9,bee\n",
    "trailing empty rows and columns": b"id;label;;\n7;2;;\n2;0;;\n9;1;;\n;;;\n\n",
}


@pytest.mark.parametrize("saved", SAVED.values(), ids=SAVED.keys())
def test_answers_saved_by_spreadsheets_are_read(tmp_path, saved):
    file_oracle, answers = _round(tmp_path)
    answers.write_bytes(saved)
    np.testing.assert_array_equal(file_oracle.label(np.array([7, 2, 9]), IMAGES), [2, 0, 1])


@pytest.mark.parametrize("saved, message", [
    (b"id,label\n7,2.5\n2,0\n9,1\n",
     r"row 2: label '2\.5' of id 7 is not a whole class number: give a number in \[0, 3\) or one of the names"),
    (b"id;label\n7;1,5\n2;0\n9;1\n", r"row 2: label '1,5' of id 7 is not a whole class number"),
    (b"id,label\n7,3.0\n2,0\n9,1\n", r"row 2: label '3\.0' of id 7 is not a class: give a number in \[0, 3\)"),
    (b"id,label\n7,2\n2,0\n9,1\n9,1\n", r"row 5: id 9 is answered twice"),
    (b"id;label\n7;2;1\n2;0\n9;1\n", r"row 2: 3 fields where the header has 2 \(a semicolon too many\?\)"),
])
def test_what_is_not_an_answer_is_still_refused_with_the_reason(tmp_path, saved, message):
    file_oracle, answers = _round(tmp_path)
    answers.write_bytes(saved)
    with pytest.raises(oracle.OracleError, match=message) as refused:
        file_oracle.label(np.array([7, 2, 9]), IMAGES)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("saved, message", [
    (b"id|label\n7|2\n", r"lacks the column\(s\) \['id', 'label'\] \(found \['id\|label'\]\).*The columns are read "
                         r"separated by a comma, a semicolon or a tab\."),
    (b"id,class\n7,2\n", r"lacks the column\(s\) \['label'\] \(found \['id', 'class'\]\); start from .*queries\.csv"),
    ("id,label\n7,bière\n".encode("cp1252"), r"is not UTF-8 text .*save it as 'CSV UTF-8'"),
])
def test_an_unreadable_file_says_what_is_read(tmp_path, saved, message):
    file_oracle, answers = _round(tmp_path)
    answers.write_bytes(saved)
    with pytest.raises(oracle.OracleError, match=message) as refused:
        file_oracle.label(np.array([7, 2, 9]), IMAGES)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("saved", [
    codecs.BOM_UTF8 + b"id,label\r\n101,2\r\n104,cat\r\n",
    b"id;label\n101;2,0\n104;CAT\n",
    b"ID\tLABEL\n101\t2.0\n104\tcat\n",
])
def test_corrections_saved_by_spreadsheets_are_read(tmp_path, saved):
    (tmp_path / "corrections.csv").write_bytes(saved)
    assert ledger.read_corrections(tmp_path / "corrections.csv", 3, NAMES) == {101: 2, 104: 2}


def test_bad_corrections_are_refused_in_one_line_with_each_reason(tmp_path):
    (tmp_path / "corrections.csv").write_bytes(b"id;label\n101;2,5\n102;\nx;1\n103;7\n")
    with pytest.raises(oracle.OracleError) as refused:
        ledger.read_corrections(tmp_path / "corrections.csv", 3, NAMES)
    message = str(refused.value)
    assert ("has invalid rows: row 2: label '2,5' of id 101 is not a whole class number: give a number in [0, 3) or "
            "one of the names ant, bee, cat; row 3: id 102 has no label; row 4: id 'x' is not an integer; row 5: "
            "label '7' of id 103 is not a class") in message
    assert message.endswith("corrections are applied at the next iteration.") and "\n" not in message
    (tmp_path / "corrections.csv").write_bytes(b"id label\n101 2\n")
    with pytest.raises(oracle.OracleError, match="separated by a comma, a semicolon or a tab"):
        ledger.read_corrections(tmp_path / "corrections.csv", 3, NAMES)


@pytest.mark.parametrize("text, number", [("7", 7), ("7.0", 7), ("7,00", 7), (" +7. ", 7), ("7.5", None),
                                          ("7e0", None), ("1_0", None), ("", None), ("seven", None)])
def test_whole_numbers_as_spreadsheets_write_them(text, number):
    assert files.whole_number(text) == number
