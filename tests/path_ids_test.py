"""A folder of images names each sample by its file's path relative to the folder, everywhere a person or a script
sees it: queries.csv, answers.csv, the labeling page, oracle_log.jsonl, corrections.csv, the warnings, labels.csv and
relabel. A path is read as the exact text (never as a number: "12" may be a file name), and commas, quotes and
blanks survive the CSV round trips. Other data keep integer row ids."""

import csv
import html
import json
import logging
import re
import shutil
import subprocess

import numpy as np
import pytest

from deepbass_jax import driver as driver_lib, oracle
from deepbass_jax.oracle import files, ids as ids_lib, ledger, rounds
from deepbass_jax.workdir import checkpoint, runfolder
from experiments import relabel
from tests.helpers import toy_config

# The unlabeled pool (DIR/pool/**): a comma and a blank, a name that looks like a number (twice: one in a subfolder),
# a quote.
POOL = ("pool/a, b c.png", "pool/12.png", "pool/sub/12.png", 'pool/say "hi".png')
CLASSES = ("bottom", "top")  # class 0: bright bottom half, class 1: bright top half


def _photos(root) -> dict:
    """Class folders (6 images each: given labels) and the 4 pool images of POOL; returns {path: class}."""
    from PIL import Image as image  # Pillow is in the test extra
    rng = np.random.default_rng(0)
    truth = {f"{CLASSES[i % 2]}/img_{i:02d}.png": i % 2 for i in range(12)}
    truth.update({path: k % 2 for k, path in enumerate(POOL)})
    for path, label in truth.items():
        pixels = rng.integers(0, 60, (8, 8)).astype(np.uint8)
        pixels[(slice(0, 4) if label == 1 else slice(4, 8))] += 180
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        image.fromarray(pixels).save(root / path)
    return truth


def _config(tmp_path, **overrides):
    config = toy_config(**{**dict(oracle="file", initial_epochs=20, iterations=2, acquire_every=1, acquire_count=2,
                                  budget=16, **{"model.architecture": "mlp"}), **overrides})
    config.data.name, config.data.path, config.data.unlabeled_dir = "folder", str(tmp_path / "photos"), "pool"
    config.data.cache_dir = str(tmp_path / "cache")
    return config


def _answer_by_path(folder, truth: dict) -> list:
    """A person answers round `folder`: looks each queries.csv id up as a path; returns the ids asked."""
    with open(folder / rounds.QUERIES, newline="", encoding="utf-8") as handle:
        asked = [row["id"] for row in csv.DictReader(handle)]
    with open(folder / files.ANSWERS, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("id", "label"), *[(path, truth[path]) for path in asked]])
    return asked


def _labels_csv(workdir) -> list:
    with open(workdir / runfolder.LABELS, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_a_folder_run_names_its_samples_by_path_in_every_file_a_person_sees(tmp_path, caplog):
    truth = _photos(tmp_path / "photos")
    config, workdir = _config(tmp_path), tmp_path / "run"
    caplog.set_level(logging.WARNING)
    asked, round_number = [], 0
    while True:
        try:
            driver_lib.run(config, workdir)
            break
        except oracle.LabelsPending:
            folder = workdir / "oracle" / f"round_{round_number:04d}"
            asked.append(_answer_by_path(folder, truth))
            if round_number == 1:  # round 0 was taken in iteration 1: the person edits it, and corrects by path
                edited, fixed = asked[0][0], asked[0][1]
                answers = workdir / "oracle" / "round_0000" / files.ANSWERS
                answers.write_text(answers.read_text(encoding="utf-8").replace(
                    ids_lib.csv_row([edited, truth[edited]]), ids_lib.csv_row([edited, 1 - truth[edited]])),
                    encoding="utf-8")
                with open(workdir / ledger.CORRECTIONS, "w", newline="", encoding="utf-8") as handle:
                    csv.writer(handle).writerows([("id", "label"), (fixed, 1 - truth[fixed]), ("pool/nope.png", 0)])
            round_number += 1
    assert sorted(sum(asked, [])) == sorted(POOL)  # the given labels replace the initial draw: only the pool is asked

    page = (workdir / "oracle" / "round_0000" / rounds.PAGE).read_text(encoding="utf-8")
    data = json.loads(re.search(r'<script type="application/json" id="round-data">(.*?)</script>', page, re.S)[1])
    assert data["ids"] == asked[0]  # the page's ids, which its answers.csv writes, are the paths
    for path in asked[0]:
        assert f'<span class="tid">id {html.escape(path)}</span>' in page
    with open(workdir / "oracle" / "round_0000" / rounds.QUERIES, newline="", encoding="utf-8") as handle:
        images = [row["image"] for row in csv.DictReader(handle)]
    assert all((workdir / "oracle" / "round_0000" / image).is_file() and "/" not in image for image in images)

    log = checkpoint.read_jsonl(workdir / runfolder.ORACLE_LOG)
    bought = [line for line in log if not line.get("correction")]
    assert [line["id"] for line in bought] == sum(asked, [])
    assert all(line["label"] == truth[line["id"]] for line in bought)
    corrections = [line for line in log if line.get("correction")]
    assert [(c["id"], c["label"]) for c in corrections] == [(fixed, 1 - truth[fixed])]
    assert (f"id {ids_lib.show(fixed)} from {truth[fixed]} to {1 - truth[fixed]}" in caplog.text)
    assert "id 'pool/nope.png' is not a sample of the pool, so it has no label to correct" in caplog.text
    row = ids_lib.csv_row([edited, 1 - truth[edited]])
    assert f"gives id {ids_lib.show(edited)} the label {1 - truth[edited]}" in caplog.text
    assert f"put the row '{row}' in" in caplog.text  # quoted as corrections.csv must hold it
    assert sorted(json.loads((workdir / ledger.WARNED).read_text())) == sorted(
        ["unbought pool/nope.png", f"edited oracle/round_0000/answers.csv {edited} {1 - truth[edited]}"])

    rows = _labels_csv(workdir)
    assert list(rows[0])[:2] == ["id", "file"] and all(r["id"] == r["file"] for r in rows)
    assert sorted(r["id"] for r in rows) == sorted(truth)
    for r in rows:
        if r["source"] in ("given", "oracle"):
            want = 1 - truth[fixed] if r["id"] == fixed else truth[r["id"]]
            assert (r["label"], r["class_name"]) == (str(want), CLASSES[want]), r

    # After the end: corrections.csv by path, applied by relabel; an unknown path is reported in one line.
    later = next(path for path in POOL if path not in (fixed, edited))
    with open(workdir / ledger.CORRECTIONS, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("id", "label"), (later, 1 - truth[later]), ("pool/nope.png", 0)])
    with pytest.raises(driver_lib.RunFinished, match="has 1 row\\(s\\) this finished run has not applied \\(ids "
                       + re.escape(str([later]))):
        driver_lib.run(config, workdir)
    caplog.clear()
    lines = relabel.relabel(workdir)
    assert lines == [f"{workdir}: corrected 1 label(s) ({ids_lib.show(later)}: {truth[later]} -> "
                     f"{1 - truth[later]}), logged in oracle_log.jsonl and shown in labels.csv."]
    assert "id 'pool/nope.png' has no label the oracle gave" in caplog.text
    assert checkpoint.read_jsonl(workdir / runfolder.ORACLE_LOG)[-1] == {
        "iteration": 3, "index": next(line["index"] for line in bought if line["id"] == later), "id": later,
        "label": 1 - truth[later], "correction": True}
    after = {r["id"]: r for r in _labels_csv(workdir)}
    assert (after[later]["label"], after[later]["source"]) == (str(1 - truth[later]), "oracle")
    assert all(r == after[r["id"]] for r in rows if r["id"] != later)  # the rest as the run wrote it
    assert relabel.relabel(workdir) == [f"{workdir}: corrections.csv changes no label (every row is applied "
                                        "already)."]


def test_an_npz_run_keeps_integer_row_ids(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    x = (np.stack([np.cos(2 * np.pi * y / 3), np.sin(2 * np.pi * y / 3)], 1) * 3
         + rng.normal(0, 0.6, (60, 2))).astype(np.float32)
    np.savez(tmp_path / "mine.npz", x=x, y=np.where(np.arange(60) < 6, y, -1), num_classes=3)
    config = toy_config(oracle="file", initial_epochs=10, iterations=1, acquire_every=1, acquire_count=2, budget=8)
    config.data.name, config.data.path, config.data.seed = "npz", str(tmp_path / "mine.npz"), 0
    workdir = tmp_path / "run"
    with pytest.raises(oracle.LabelsPending):
        driver_lib.run(config, workdir)
    folder = workdir / "oracle" / "round_0000"
    with open(folder / rounds.QUERIES) as handle:
        asked = [int(row["id"]) for row in csv.DictReader(handle)]
    assert sorted(p.name for p in folder.glob("*.png")) == sorted([*(f"{i}.png" for i in asked), rounds.OVERVIEW])
    (folder / files.ANSWERS).write_text("id,label\n" + "".join(f"{i},{y[i]}\n" for i in asked))
    driver_lib.run(config, workdir)
    lines = (workdir / runfolder.ORACLE_LOG).read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == asked
    assert all(re.search(r'"id": \d+, ', line) for line in lines)  # JSON numbers, as before
    assert [int(r["id"]) for r in _labels_csv(workdir)] == list(range(60))


# ------------------------------------------------------------------------------------------ the oracle alone
IMAGES = np.zeros((3, 8, 8, 1), np.float32)
PATHS = ["12", "007.png", "cats/a, \"b\" c.png"]  # a bare number and a zero-padded one are file names here


def _path_round(tmp_path):
    file_oracle = oracle.FileOracle(tmp_path / "oracle", num_classes=3, class_names=("ant", "bee", "cat"),
                                    path_ids=True)
    with pytest.raises(oracle.LabelsPending):
        file_oracle.label(np.array([4, 0, 2]), IMAGES, np.array(PATHS, object))
    return file_oracle, tmp_path / "oracle" / "round_0000"


def test_path_ids_round_trip_through_queries_and_answers_as_exact_text(tmp_path):
    file_oracle, folder = _path_round(tmp_path)
    with open(folder / rounds.QUERIES, newline="") as handle:
        assert [row["id"] for row in csv.DictReader(handle)] == PATHS
    assert '"cats/a, ""b"" c.png"' in (folder / rounds.QUERIES).read_text()
    # "12.0" is not the path "12"; a padded path is taken when only its text without the blanks is asked.
    (folder / files.ANSWERS).write_text('id,label\n12.0,1\n" 007.png ",bee\n"cats/a, ""b"" c.png",2\nx.png,0\n, 1\n')
    with pytest.raises(oracle.OracleError) as refused:
        file_oracle.label(np.array([4, 0, 2]), IMAGES, np.array(PATHS, object))
    assert ("row 2: id '12.0' was not asked in this round; row 5: id 'x.png' was not asked in this round; row 6: "
            "the id is empty") in str(refused.value) and "\n" not in str(refused.value)
    np.testing.assert_array_equal(refused.value.kept[0], [0, 2])  # the valid rows are kept
    (folder / files.ANSWERS).write_text("id,label\n12,0\n")
    np.testing.assert_array_equal(file_oracle.label(np.array([4, 0, 2]), IMAGES, np.array(PATHS, object)), [0, 1, 2])


def test_an_unanswered_path_is_named_in_the_message(tmp_path):
    file_oracle, folder = _path_round(tmp_path)
    (folder / files.ANSWERS).write_text("id,label\n007.png,1\n")
    with pytest.raises(oracle.LabelsPending, match=re.escape("(ids ['12', 'cats/a, \"b\" c.png'])")):
        file_oracle.label(np.array([4, 0, 2]), IMAGES, np.array(PATHS, object))


def test_corrections_by_path_are_read_as_text(tmp_path):
    path = tmp_path / ledger.CORRECTIONS
    path.write_text('id;label\n12;cat\n"cats/a, ""b"" c.png";0\n;1\n')
    with pytest.raises(oracle.OracleError, match="row 4: the id is empty"):
        ledger.read_corrections(path, 3, ("ant", "bee", "cat"), paths=True)
    path.write_text('id;label\n12;cat\n"cats/a, ""b"" c.png";0\n')
    assert ledger.read_corrections(path, 3, ("ant", "bee", "cat"), paths=True) == {"12": 2, 'cats/a, "b" c.png': 0}
    with pytest.raises(oracle.OracleError, match="row 3: id 'cats/a, \"b\" c.png' is not an integer"):
        ledger.read_corrections(path, 3, ("ant", "bee", "cat"))  # integer data: "12" is a row, a path no id


def test_the_page_escapes_paths_and_saves_them_quoted(tmp_path):
    hostile = ['a<b>&"c".png', "d, e.png", "</script>.png"]
    page = rounds.labeling_page(tmp_path, hostile, [b""] * 3, ["x", "y"])
    assert "id a&lt;b&gt;&amp;&quot;c&quot;.png" in page and "</script>.png" not in page
    data = json.loads(re.search(r'id="round-data">(.*?)</script>', page, re.S)[1])
    assert data["ids"] == hostile
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node to run page.js's CSV quoting")
    script = rounds._page_file("page.js")  # pylint: disable=protected-access
    function = re.search(r"  function csvField\(value\) \{.*?\n  \}\n", script, re.S)[0]
    result = subprocess.run([node, "-e", function + "process.stdout.write(JSON.stringify(" + json.dumps(
        hostile + [917]) + ".map(csvField)));"], capture_output=True, text=True, check=True, timeout=60)
    saved = json.loads(result.stdout)
    assert saved == ['"a<b>&""c"".png"', '"d, e.png"', "</script>.png", "917"]
    assert [row[0] for row in csv.reader(saved)] == hostile + ["917"]
