"""Partly labeled data: labels that come with the data (y = -1 for unknown in an .npz, class folders of images) are
ground truth from the start, replace the initial draw, count against the budget, are never asked of the oracle,
and show as `given` in labels.csv; the run's first lines say the label plan."""

import csv

import numpy as np
import pytest

from deepbass_jax import data, driver as driver_lib, oracle, seeds as seeds_lib
from deepbass_jax.workdir import checkpoint, runfolder
from tests.helpers import toy_config


def _points(n=90):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    x = (np.stack([np.cos(2 * np.pi * y / 3), np.sin(2 * np.pi * y / 3)], 1) * 3 + rng.normal(0, 0.6, (n, 2)))
    return x.astype(np.float32), y


def _config(path, **overrides):
    config = toy_config(**{**dict(oracle="file", initial_epochs=20, iterations=2, acquire_every=1, acquire_count=2,
                                  budget=12), **overrides})
    config.data.name, config.data.path, config.data.seed = "npz", str(path), 0
    return config


def _run_answering(config, workdir, labels):
    """Runs to the end, answering each round from `labels`: [N] by row, or {path: label} for a folder's files."""
    rounds = 0
    while True:
        try:
            return driver_lib.run(config, workdir)
        except oracle.LabelsPending:
            folder = workdir / "oracle" / f"round_{rounds:04d}"
            with open(folder / "queries.csv", newline="") as handle:
                ids = [row["id"] if isinstance(labels, dict) else int(row["id"]) for row in csv.DictReader(handle)]
            with open(folder / "answers.csv", "w", newline="") as handle:
                csv.writer(handle).writerows([("id", "label"), *[(i, labels[i]) for i in ids]])
            rounds += 1


def test_known_npz_labels_are_ground_truth_and_only_the_rest_is_asked(tmp_path):
    x, y = _points()
    known = np.full(90, -1)
    known[:8] = y[:8]  # 8 rows labeled by the user, the other 82 unknown
    np.savez(tmp_path / "mine.npz", x=x, y=known, num_classes=3)
    dataset = data.load(_config(tmp_path / "mine.npz").data)
    assert dataset.train_labels is None and (dataset.given_labels >= 0).sum() == 8
    summary = _run_answering(_config(tmp_path / "mine.npz"), tmp_path / "run", y)
    assert summary["labels"] == 12  # 8 given + 2 bought in each of 2 iterations: the budget
    log = checkpoint.read_jsonl(tmp_path / "run" / runfolder.ORACLE_LOG)
    assert [e["iteration"] for e in log] == [1, 1, 2, 2]  # nothing asked for the start
    assert not {e["id"] for e in log} & set(range(8))
    with open(tmp_path / "run" / runfolder.LABELS) as handle:
        rows = list(csv.DictReader(handle))
    sources = {int(r["id"]): r["source"] for r in rows}
    assert [i for i, s in sources.items() if s == "given"] == list(range(8))
    assert sum(s == "oracle" for s in sources.values()) == 4


def test_an_npz_label_below_minus_one_is_refused(tmp_path):
    x, y = _points()
    np.savez(tmp_path / "bad.npz", x=x, y=np.where(np.arange(90) == 5, -2, y))
    with pytest.raises(data.DataError, match=r"'y' holds -2; labels are 0\.\.C-1, or -1 for a sample nobody"):
        data.load(_config(tmp_path / "bad.npz").data)


def test_the_label_plan_says_what_is_known_and_whether_the_budget_is_reached(tmp_path):
    x, y = _points()
    known = np.where(np.arange(90) < 20, y, -1)
    np.savez(tmp_path / "mine.npz", x=x, y=known, num_classes=3)
    driver = driver_lib.Driver(_config(tmp_path / "mine.npz", budget=30, iterations=3), tmp_path / "run")
    plan = seeds_lib.label_plan(driver.config, driver.seeds[0], 3)
    assert "20 labels came with the data (they replace the initial draw: config.initial_per_class=4 is ignored)" in plan
    assert "6 more, 26 in all, short of the budget 30 by 4" in plan
    np.savez(tmp_path / "none.npz", x=x, num_classes=3)
    driver = driver_lib.Driver(_config(tmp_path / "none.npz", budget=12, iterations=2), tmp_path / "run2")
    plan = seeds_lib.label_plan(driver.config, driver.seeds[0], 3)
    assert "12 initial labels (4 per class, drawn at random: nobody knows the classes yet" in plan
    assert "0 more, 12 in all, reaching the budget (12)" in plan


def test_class_folders_are_given_labels_and_labels_csv_names_each_file(tmp_path):
    from PIL import Image as image  # Pillow is in the test extra
    rng = np.random.default_rng(0)
    truth = {}
    for i in range(40):  # two classes: bright top half or bright bottom half; 6 sorted, 34 in the top level
        label = i % 2
        pixels = rng.integers(0, 60, (8, 8)).astype(np.uint8)
        pixels[(slice(0, 4) if label == 0 else slice(4, 8))] += 180
        name = f"img_{i:02d}.png"
        folder = tmp_path / "photos" / ("top", "bottom")[label] if i < 6 else tmp_path / "photos"
        folder.mkdir(parents=True, exist_ok=True)
        image.fromarray(pixels).save(folder / name)
        truth[(folder / name).relative_to(tmp_path / "photos").as_posix()] = label
    config = toy_config(oracle="file", initial_epochs=20, iterations=1, acquire_every=1, acquire_count=2, budget=8,
                        **{"model.architecture": "mlp"})
    config.data.name, config.data.path = "folder", str(tmp_path / "photos")
    config.data.cache_dir = str(tmp_path / "cache")
    dataset = data.load(config.data)
    assert dataset.class_names == ("bottom", "top")
    _run_answering(config, tmp_path / "run", {f: 1 - truth[f] for f in dataset.files})  # class 0 is "bottom"
    with open(tmp_path / "run" / runfolder.LABELS) as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["id", "file", "label", "class_name", "source", "probability", "entropy"]
    assert {r["file"] for r in rows} == set(truth)
    for row in rows:
        assert row["id"] == row["file"]  # a folder's samples are named by path
        if row["source"] in ("given", "oracle"):
            assert row["class_name"] == ("top", "bottom")[truth[row["file"]]], row
    assert sum(r["source"] == "given" for r in rows) == 6 and sum(r["source"] == "oracle" for r in rows) == 2
    log = checkpoint.read_jsonl(tmp_path / "run" / runfolder.ORACLE_LOG)
    assert len(log) == 2 and all(dataset.files[line["index"]] == line["id"] for line in log)
