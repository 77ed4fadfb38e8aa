"""A practitioner's own data with a person as the oracle (issue 14): ids are rows of the user's file, classes are
0..C-1 (with names), refusals leave the workdir reusable, the labels export, corrections and edited answers."""

import csv
import json
import logging

import numpy as np
import pytest

from deepbass_jax import data, driver as driver_lib, oracle
from deepbass_jax.oracle import ledger
from deepbass_jax.workdir import checkpoint, runfolder
from experiments import relabel
from experiments.configs import mnist as mnist_configs
from tests.helpers import toy_config

NAMES = ("ant", "bee", "cat")


def _user_file(path, labels_offset=0, test=False, **extra):
    """90 2-D points in three blobs (class = row % 3), as a person's .npz; returns the labels of its rows."""
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = (np.stack([np.cos(2 * np.pi * y / 3), np.sin(2 * np.pi * y / 3)], 1) * 3
         + rng.normal(0, 0.6, (90, 2))).astype(np.float32)
    arrays = dict(x=x, y=y + labels_offset, **extra)
    if test:
        arrays.update(x_test=x[:30], y_test=y[:30])
    np.savez(path, **arrays)
    return y


def _config(path, **overrides):
    settings = dict(oracle="file", initial_per_class=2, initial_epochs=30, iterations=3, acquire_every=1,
                    acquire_count=2, budget=12)
    config = toy_config(**{**settings, **overrides})
    config.data.name, config.data.path = "npz", str(path)
    config.data.seed = 0
    return config


def _answer_as_a_person(folder, file_labels, names=False):
    """Fills answers.csv by looking each id up as a row of the user's file (names: class names, not numbers)."""
    with open(folder / "queries.csv") as handle:
        ids = [int(row["id"]) for row in csv.DictReader(handle)]
    with open(folder / "answers.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label"])
        writer.writerows([i, NAMES[file_labels[i]] if names else file_labels[i]] for i in ids)


def _run_answering(config, workdir, file_labels, names=False, before_resume=None):
    """Runs to the end, answering every round as it comes; `before_resume(round)` runs before each resume."""
    rounds = 0
    while True:
        try:
            return driver_lib.run(config, workdir)
        except oracle.LabelsPending:
            _answer_as_a_person(workdir / "oracle" / f"round_{rounds:04d}", file_labels, names)
            rounds += 1
            if before_resume:
                before_resume(rounds)


def _labels_csv(workdir):
    with open(workdir / runfolder.LABELS) as handle:
        return list(csv.DictReader(handle))


def test_ids_are_rows_of_the_users_file_after_a_test_split(tmp_path):
    file_labels = _user_file(tmp_path / "mine.npz", classes=np.array(NAMES))
    config = _config(tmp_path / "mine.npz")
    config.data.test_fraction = 0.2
    summary = _run_answering(config, tmp_path / "run", file_labels, names=True)
    assert summary["test_accuracy"] is not None
    held_out = set(range(90)) - set(data.load(config.data).row_ids.tolist())
    assert len(held_out) == 18
    log = checkpoint.read_jsonl(tmp_path / "run" / runfolder.ORACLE_LOG)
    assert len(log) == 12
    for line in log:  # a person who looked the rows up gave the right labels: the ids are the file's rows
        assert line["id"] not in held_out and line["label"] == file_labels[line["id"]]
    rows = _labels_csv(tmp_path / "run")
    assert sorted(int(r["id"]) for r in rows) == sorted(set(range(90)) - held_out)
    bought = [r for r in rows if r["source"] == "oracle"]
    assert len(bought) == 12
    assert all(int(r["label"]) == file_labels[int(r["id"])] and r["class_name"] == NAMES[int(r["label"])]
               for r in bought)
    assert {r["source"] for r in rows} <= {"oracle", "pseudo-label", "prediction"}
    assert all(0 <= float(r["probability"]) <= 1 and 0 <= float(r["entropy"]) <= 1 for r in rows)
    assert (tmp_path / "run" / "oracle" / "round_0000" / "index.html").exists()


def test_a_file_without_a_test_set_runs_to_the_end_and_says_so(tmp_path, caplog):
    file_labels = _user_file(tmp_path / "mine.npz")
    caplog.set_level(logging.INFO)
    summary = _run_answering(_config(tmp_path / "mine.npz", iterations=1), tmp_path / "run", file_labels)
    assert summary["test_accuracy"] is None
    assert "Evaluation: no test set" in caplog.text
    assert len(_labels_csv(tmp_path / "run")) == 90


@pytest.mark.parametrize("offset, message", [
    (1, r"labels run 1..3 but class\(es\) \[0\] never occur.*store y - 1"),
    (-2, r"'y' holds -2; labels are 0\.\.C-1, or -1 for a sample nobody labeled yet"),
])
def test_labels_not_numbered_from_zero_are_refused_and_leave_the_workdir_unused(tmp_path, offset, message):
    _user_file(tmp_path / "mine.npz", labels_offset=offset)
    workdir = tmp_path / "run"
    with pytest.raises(data.DataError, match=message):
        driver_lib.run(_config(tmp_path / "mine.npz"), workdir)
    assert not workdir.exists()
    workdir.mkdir()
    with pytest.raises(data.DataError):
        driver_lib.run(_config(tmp_path / "mine.npz"), workdir)
    assert list(workdir.iterdir()) == []  # no config.json, no .lock


def test_images_below_the_cnns_size_are_refused_up_front(tmp_path):
    np.savez(tmp_path / "tiny.npz", x=np.zeros((60, 3, 3), np.uint8), y=np.arange(60) % 3)
    config = mnist_configs.get_config("smoke")
    config.data.name, config.data.path, config.pool_size, config.test_size = "npz", str(tmp_path / "tiny.npz"), 0, 0
    with pytest.raises(ValueError, match="at least 4x4 pixels, but the samples are 3x3"):
        driver_lib.Driver(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_cpu_preset_on_a_small_file_suggests_the_whole_pool(tmp_path):
    np.savez(tmp_path / "mine.npz", x=np.zeros((300, 8, 8), np.uint8), y=np.arange(300) % 10)
    config = mnist_configs.get_config("cpu_supervised_100")
    config.data.name, config.data.path = "npz", str(tmp_path / "mine.npz")
    with pytest.raises(ValueError, match="pool_size=6000 exceed the 300 training samples.*set --config.pool_size=0"):
        driver_lib.Driver(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_corrections_apply_at_the_next_iteration_and_edits_are_warned_about(tmp_path, caplog):
    file_labels = _user_file(tmp_path / "mine.npz")
    workdir = tmp_path / "run"
    first_id = []

    def person(rounds):
        if rounds == 2:  # round 0 was used in iteration 0; now the person edits it, then corrects it properly
            answers = workdir / "oracle" / "round_0000" / "answers.csv"
            rows = list(csv.reader(open(answers)))
            first_id.append(int(rows[1][0]))
            rows[1][1] = str((int(rows[1][1]) + 1) % 3)
            with open(answers, "w", newline="") as handle:
                csv.writer(handle).writerows(rows)
        if rounds == 3:
            corrected = NAMES[(file_labels[first_id[0]] + 2) % 3]  # by name
            (workdir / ledger.CORRECTIONS).write_text(f"id,label\n{first_id[0]},{corrected}\n")

    caplog.set_level(logging.WARNING)
    config = _config(tmp_path / "mine.npz", iterations=4)
    config.data.class_names = ",".join(NAMES)
    _run_answering(config, workdir, file_labels, before_resume=person)
    sample, edited, corrected = first_id[0], (file_labels[first_id[0]] + 1) % 3, (file_labels[first_id[0]] + 2) % 3
    assert f"gives id {sample} the label {edited}" in caplog.text
    assert f"Correcting the label of id {sample} from {file_labels[sample]} to {corrected}" in caplog.text
    log = checkpoint.read_jsonl(workdir / runfolder.ORACLE_LOG)
    corrections = [line for line in log if line.get("correction")]
    assert [(c["id"], c["label"]) for c in corrections] == [(sample, corrected)]
    assert corrections[0]["iteration"] > 0
    row = next(r for r in _labels_csv(workdir) if int(r["id"]) == sample)
    assert (row["label"], row["class_name"], row["source"]) == (str(corrected), NAMES[corrected], "oracle")
    summary = checkpoint.read_jsonl(workdir / runfolder.METRICS)[-1]
    assert summary["labels"] == 12


def test_a_partial_save_of_the_page_is_kept_and_only_the_rest_is_asked(tmp_path, caplog):
    """What the page says after a partial save is what the run does: it keeps the answers given (no error) and the
    next start asks only for the rest, on the same page."""
    file_labels = _user_file(tmp_path / "mine.npz")
    config, workdir = _config(tmp_path / "mine.npz", iterations=1), tmp_path / "run"
    with pytest.raises(oracle.LabelsPending):
        driver_lib.run(config, workdir)
    folder = workdir / "oracle" / "round_0000"
    with open(folder / "queries.csv") as handle:
        ids = [int(row["id"]) for row in csv.DictReader(handle)]
    (folder / "answers.csv").write_text("id,label\n" + "".join(f"{i},{file_labels[i]}\n" for i in ids[:4]))
    with pytest.raises(oracle.LabelsPending, match=f"2 of the 6 samples of round_0000 have no label yet \\(ids "
                       f"\\[{ids[4]}, {ids[5]}\\]\\). The run keeps the answers given and asks only for the rest"):
        driver_lib.run(config, workdir)
    (folder / "answers.csv").write_text("id,label\n" + "".join(f"{i},{file_labels[i]}\n" for i in ids[4:]))
    with pytest.raises(oracle.LabelsPending, match="round_0001"):  # the initial fit ran; iteration 1 asks
        driver_lib.run(config, workdir)
    log = checkpoint.read_jsonl(workdir / runfolder.ORACLE_LOG)
    assert [line["id"] for line in log] == ids and all(line["label"] == file_labels[line["id"]] for line in log)


def test_corrections_after_the_run_finished_are_applied_by_relabel(tmp_path):
    file_labels = _user_file(tmp_path / "mine.npz")
    workdir = tmp_path / "run"
    config = _config(tmp_path / "mine.npz", iterations=1)
    config.data.class_names = ",".join(NAMES)
    _run_answering(config, workdir, file_labels)
    before = _labels_csv(workdir)
    sample = next(int(r["id"]) for r in before if r["source"] == "oracle")
    unbought = next(int(r["id"]) for r in before if r["source"] != "oracle")
    corrected = (file_labels[sample] + 1) % 3
    (workdir / ledger.CORRECTIONS).write_text(f"id;label\n{sample};{NAMES[corrected]}\n{unbought};0\n")
    with pytest.raises(driver_lib.RunFinished):
        driver_lib.run(config, workdir)
    assert "experiments.relabel --workdir=" in ledger.finished_run_note(workdir, [workdir])
    lines = relabel.relabel(workdir)
    assert lines == [f"{workdir}: corrected 1 label(s) ({sample}: {file_labels[sample]} -> {corrected}), logged in "
                     "oracle_log.jsonl and shown in labels.csv."]
    log = checkpoint.read_jsonl(workdir / runfolder.ORACLE_LOG)
    assert log[-1] == {"iteration": 2, "index": log[-1]["index"], "id": sample, "label": int(corrected),
                       "correction": True}
    after = _labels_csv(workdir)
    changed = [(b, a) for b, a in zip(before, after) if b != a]
    assert len(changed) == 1 and changed[0][1] == {**changed[0][0], "label": str(corrected),
                                                   "class_name": NAMES[corrected], "source": "oracle"}
    assert ledger.finished_run_note(workdir, [workdir]) == ""
    assert relabel.relabel(workdir) == [f"{workdir}: corrections.csv changes no label (every row is applied already)."]
    assert checkpoint.read_jsonl(workdir / runfolder.ORACLE_LOG) == log
    with pytest.raises(ValueError, match="has not finished .* applies corrections.csv itself at its next iteration"):
        with pytest.raises(oracle.LabelsPending):
            driver_lib.run(config, tmp_path / "unfinished")
        relabel.relabel(tmp_path / "unfinished")


def test_relabel_finds_the_seed_folders_of_a_finished_run(tmp_path):
    for seed in (0, 1):
        (tmp_path / f"seed_{seed}").mkdir()
        (tmp_path / f"seed_{seed}" / runfolder.CONFIG).write_text("{}")
    with pytest.raises(ValueError, match="has not finished"):
        relabel.finished_folders(tmp_path)
    for seed in (0, 1):
        (tmp_path / f"seed_{seed}" / runfolder.SUMMARY).write_text("{}")
    assert relabel.finished_folders(tmp_path) == [tmp_path / "seed_0", tmp_path / "seed_1"]
    assert relabel.relabel(tmp_path) == [f"{tmp_path / f'seed_{seed}'}: no corrections.csv, nothing to apply."
                                         for seed in (0, 1)]


def test_the_wait_may_change_on_resume_but_nothing_else(tmp_path):
    file_labels = _user_file(tmp_path / "mine.npz")
    with pytest.raises(oracle.LabelsPending):
        driver_lib.run(_config(tmp_path / "mine.npz"), tmp_path / "run")
    _answer_as_a_person(tmp_path / "run" / "oracle" / "round_0000", file_labels)
    with pytest.raises(oracle.LabelsPending):  # now waiting briefly: accepted on resume
        driver_lib.run(_config(tmp_path / "mine.npz", oracle_wait_seconds=0.1), tmp_path / "run")
    with pytest.raises(ValueError, match=r"fields \['budget'\] differ"):
        driver_lib.run(_config(tmp_path / "mine.npz", budget=20), tmp_path / "run")


def test_a_folder_pinned_before_a_field_existed_resumes_while_the_field_keeps_its_default(tmp_path):
    file_labels = _user_file(tmp_path / "mine.npz")
    with pytest.raises(oracle.LabelsPending):
        driver_lib.run(_config(tmp_path / "mine.npz"), tmp_path / "run")
    pinned = json.loads((tmp_path / "run" / runfolder.CONFIG).read_text())
    del pinned["labels_export_every"], pinned["data"]["class_names"]  # as an older version wrote it
    (tmp_path / "run" / runfolder.CONFIG).write_text(json.dumps(pinned))
    _answer_as_a_person(tmp_path / "run" / "oracle" / "round_0000", file_labels)
    with pytest.raises(oracle.LabelsPending, match="round_0001"):
        driver_lib.run(_config(tmp_path / "mine.npz"), tmp_path / "run")
    with pytest.raises(ValueError, match=r"fields \['labels_export_every'\] differ"):
        driver_lib.run(_config(tmp_path / "mine.npz", labels_export_every=2), tmp_path / "run")


@pytest.mark.parametrize("every, written", [(-1, False), (0, True)])
def test_the_labels_export_can_be_left_out(tmp_path, every, written):
    driver_lib.run(toy_config(iterations=2, labels_export_every=every), tmp_path)
    assert (tmp_path / runfolder.LABELS).exists() == written


@pytest.mark.parametrize("divisor", [255.0, 256.0])
def test_uint8_pixels_are_divided_by_the_pixel_divisor(tmp_path, divisor):
    pixels = np.arange(256, dtype=np.uint8).reshape(4, 8, 8)
    np.savez(tmp_path / "mine.npz", x=pixels, y=np.arange(4) % 2)
    config = data.default_config()
    config.name, config.path, config.pixel_divisor = "npz", str(tmp_path / "mine.npz"), divisor
    images = data.load(config).train_images
    np.testing.assert_array_equal(images[..., 0], pixels.astype(np.float32) / np.float32(divisor))
    assert images.max() == pytest.approx(255 / divisor)
