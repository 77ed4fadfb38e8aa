"""A finished folder run's exports: its images sorted into class folders by labels.csv (copies, hard links or
symbolic links; nothing written outside --out, whatever labels.csv, the folder or --out hold), and its network
applied to new images (a folder or an .npz: the numbers of labels.csv on the run's own images, refusals for another
shape)."""

import csv
import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image  # Pillow is in the test extra

from deepbass_jax import data, driver as driver_lib, export
from deepbass_jax.workdir import runfolder
from tests.helpers import toy_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
CLASSES = ("bottom", "top")  # the class folders, sorted: class 0 is "bottom"


def _pixels(label, rng, size=8):
    """A gray image whose top half (label 1, "top") or bottom half (label 0) is bright."""
    pixels = rng.integers(0, 60, (size, size)).astype(np.uint8)
    half = size // 2
    pixels[(slice(0, half) if label == 1 else slice(half, size))] += 180
    return pixels


def _save(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _snapshot(root, skip=None):
    """{path: (mode, size, mtime)} of everything below `root` (links as links), leaving out `skip` and below it."""
    found = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = pathlib.Path(folder, name)
            if skip is not None and (path == skip or path.is_relative_to(skip)):
                continue
            status = os.lstat(path)
            found[str(path.relative_to(root))] = (status.st_mode, status.st_size, status.st_mtime_ns)
    return found


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real tiny run on 25 8x8 PNGs in two class folders (top/sub/img_00.png shares its name with
    top/img_00.png); 7 labels given, 4 bought from the simulated oracle, the rest pseudo-labels or predictions."""
    base = tmp_path_factory.mktemp("export_run")
    photos, rng = base / "photos", np.random.default_rng(0)
    for i in range(24):
        label = 1 - i % 2
        _save(photos / CLASSES[label] / f"img_{i:02d}.png", _pixels(label, rng))
    _save(photos / "top" / "sub" / "img_00.png", _pixels(1, rng))
    config = toy_config(initial_epochs=10, iterations=2, acquire_every=1, acquire_count=2, budget=11,
                        labels_export_every=0, mode="step_wise", theta=0.12, **{"model.architecture": "mlp"})
    config.data.name, config.data.path, config.data.cache_dir = "folder", str(photos), str(base / "cache")
    dataset = data.load(config.data)
    keep = [i for i, f in enumerate(dataset.files) if f.endswith("img_00.png") or i % 5 == 0]
    given = np.full(len(dataset.files), -1, np.int32)
    given[keep] = dataset.given_labels[keep]  # the rest: hidden labels the simulated oracle reveals
    driver_lib.Driver(config, base / "run", dataset=dataclasses.replace(dataset, given_labels=given)).run()
    return base


def _world(run, tmp_path):
    """A copy of the run and its images in tmp_path (its config pointing at the copy), and an image outside."""
    shutil.copytree(run / "photos", tmp_path / "photos", symlinks=True)
    shutil.copytree(run / "run", tmp_path / "run")
    config = (tmp_path / "run" / runfolder.CONFIG).read_text()
    (tmp_path / "run" / runfolder.CONFIG).write_text(config.replace(str(run / "photos"), str(tmp_path / "photos")))
    _save(tmp_path / "outside" / "secret.png", _pixels(0, np.random.default_rng(1)))
    return tmp_path / "run", tmp_path / "photos"


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _write_rows(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# ------------------------------------------------------------------------------------------ sorting the images
def test_copy_puts_every_image_in_its_class_folder_and_says_how_many(run, tmp_path):
    workdir, photos = _world(run, tmp_path)
    before = _snapshot(tmp_path)
    summary = export.export_images(workdir, tmp_path / "sorted")
    labels = _rows(workdir / runfolder.LABELS)
    assert {r["source"] for r in labels} == set(export.SOURCES)  # the run gave every kind of label
    manifest = {r["id"]: r for r in _rows(tmp_path / "sorted" / export.MANIFEST)}
    assert len(manifest) == len(labels) == 25
    for row in labels:
        exported = manifest[row["id"]]["exported"]
        assert exported.split("/")[0] == row["class_name"] and manifest[row["id"]]["file"] == row["file"]
        assert (tmp_path / "sorted" / exported).read_bytes() == (photos / row["file"]).read_bytes()
    clash = {r["file"]: r["exported"] for r in manifest.values() if r["file"].endswith("img_00.png")}
    assert clash == {"top/img_00.png": "top/img_00.png", "top/sub/img_00.png": "top/top__sub__img_00.png"}
    assert sorted(p.name for p in (tmp_path / "sorted").iterdir()) == ["bottom", export.MANIFEST, "top"]
    assert sum(len(list((tmp_path / "sorted" / c).iterdir())) for c in CLASSES) == 25
    assert _snapshot(tmp_path, skip=tmp_path / "sorted") == before  # nothing written outside --out
    counts = summary.counts()
    for name in CLASSES:
        for source in export.SOURCES:
            assert counts[name][source] == sum(r["class_name"] == name and r["source"] == source for r in labels)
    lines = summary.lines()
    assert lines[1].split() == ["class", *export.SOURCES, "total"]
    assert lines[4].split()[0] == "total" and lines[4].split()[-1] == "25"
    assert lines[5].startswith("1 file(s) named by their path")


def test_hard_links_and_symlinks_point_at_the_originals(run, tmp_path):
    workdir, photos = _world(run, tmp_path)
    export.export_images(workdir, tmp_path / "linked", mode="link")
    export.export_images(workdir, tmp_path / "symlinked", mode="symlink")
    for row in _rows(tmp_path / "linked" / export.MANIFEST):
        original, linked = photos / row["file"], tmp_path / "linked" / row["exported"]
        assert os.stat(linked).st_ino == os.stat(original).st_ino and not linked.is_symlink()
        symlink = tmp_path / "symlinked" / row["exported"]
        assert symlink.is_symlink() and pathlib.Path(os.readlink(symlink)) == original.resolve()


def test_only_the_chosen_sources_are_exported(run, tmp_path):
    workdir, _ = _world(run, tmp_path)
    summary = export.export_images(workdir, tmp_path / "sure", sources=["given", "oracle"])
    exported = _rows(tmp_path / "sure" / export.MANIFEST)
    expected = [r["id"] for r in _rows(workdir / runfolder.LABELS) if r["source"] in ("given", "oracle")]
    assert [r["id"] for r in exported] == expected and len(expected) == 11
    assert summary.lines()[1].split() == ["class", "given", "oracle", "total"]
    with pytest.raises(export.ExportError, match=r"--sources=given,guess: \['guess'\] not among"):
        export.export_images(workdir, tmp_path / "other", sources=["given", "guess"])
    assert not (tmp_path / "other").exists()


def test_overwrite_replaces_an_earlier_export_and_nothing_else(run, tmp_path):
    workdir, photos = _world(run, tmp_path)
    out = tmp_path / "sorted"
    export.export_images(workdir, out)
    with pytest.raises(export.ExportError, match="is not empty; .* or pass --overwrite"):
        export.export_images(workdir, out)
    rows = _rows(workdir / runfolder.LABELS)
    moved = rows[0]["file"]  # a "bottom" image, corrected to "top"
    rows[0].update(label="1", class_name="top", source="oracle")
    _write_rows(workdir / runfolder.LABELS, rows)
    (out / "notes.txt").write_text("mine")
    summary = export.export_images(workdir, out, overwrite=True)
    assert summary.replaced == 25
    name = moved.rpartition("/")[2]
    assert not (out / "bottom" / name).exists() and (out / "top" / name).read_bytes() == (photos / moved).read_bytes()
    assert (out / "notes.txt").read_text() == "mine"
    (out / "top" / "img_00.png").unlink()
    (out / "top" / "img_00.png").write_text("a file of the person's own where the export would write")
    rows = _rows(out / export.MANIFEST)
    _write_rows(out / export.MANIFEST, [r for r in rows if r["exported"] != "top/img_00.png"])
    with pytest.raises(export.ExportError, match="top/img_00.png exists and is no file of an earlier export"):
        export.export_images(workdir, out, overwrite=True)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "keep.txt").write_text("mine")
    with pytest.raises(export.ExportError, match="holds no export.csv, so it is no earlier export"):
        export.export_images(workdir, stranger, overwrite=True)
    assert [p.name for p in stranger.iterdir()] == ["keep.txt"]


ESCAPES = {  # labels.csv field of the first row -> (value, what the refusal says)
    "class '..'": ("class_name", "..", r"the class name '\.\.' starts with '\.'"),
    "class '../outside'": ("class_name", "../outside", r"class name '\.\./outside' starts with '\.'"),
    "class 'a/b'": ("class_name", "a/b", r"class name 'a/b' holds a path separator"),
    "class 'top/../../outside'": ("class_name", "top/../../outside", "holds a path separator"),
    "class with a backslash": ("class_name", "a\\b", "holds a path separator"),
    "hidden class": ("class_name", ".cache", r"starts with '\.'"),
    "empty class": ("class_name", "", "is empty"),
    "class with a control character": ("class_name", "a\tb", "control character"),
    "file '../x.png'": ("file", "../outside/secret.png", r"the file '\.\./outside/secret\.png' has a part '\.\.'"),
    "file climbing out": ("file", "top/../../outside/secret.png", r"has a part '\.\.'"),
    "absolute file": ("file", "ABSOLUTE", "is absolute or holds a backslash"),
    "file with a backslash": ("file", "..\\outside\\secret.png", "is absolute or holds a backslash"),
}


@pytest.mark.parametrize("case", list(ESCAPES))
def test_names_in_labels_csv_that_could_leave_out_are_refused_and_nothing_is_written(run, tmp_path, case):
    field, value, message = ESCAPES[case]
    workdir, _ = _world(run, tmp_path)
    rows = _rows(workdir / runfolder.LABELS)
    rows[0][field] = str(tmp_path / "outside" / "secret.png") if value == "ABSOLUTE" else value
    _write_rows(workdir / runfolder.LABELS, rows)
    (tmp_path / "sorted").mkdir()  # an existing empty --out: even it stays empty
    before = _snapshot(tmp_path)
    for mode in export.MODES:
        with pytest.raises(export.ExportError, match=message) as error:
            export.export_images(workdir, tmp_path / "sorted", mode=mode)
        assert "\n" not in str(error.value) and f"id {rows[0]['id']}:" in str(error.value)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("link", ["file", "folder"])
def test_a_link_in_the_run_folder_to_outside_is_refused(run, tmp_path, link):
    workdir, photos = _world(run, tmp_path)
    rows = _rows(workdir / runfolder.LABELS)
    if link == "file":
        (photos / "top" / "link.png").symlink_to(tmp_path / "outside" / "secret.png")
        rows[0]["file"] = "top/link.png"
    else:
        (photos / "top" / "elsewhere").symlink_to(tmp_path / "outside", target_is_directory=True)
        rows[0]["file"] = "top/elsewhere/secret.png"
    _write_rows(workdir / runfolder.LABELS, rows)
    before = _snapshot(tmp_path)
    for mode in export.MODES:
        with pytest.raises(export.ExportError, match=r"id .*: .* is a link to .*secret.png, outside the run's folder"):
            export.export_images(workdir, tmp_path / "sorted", mode=mode)
    assert _snapshot(tmp_path) == before and not (tmp_path / "sorted").exists()


def test_out_must_not_overlap_the_images_nor_write_through_links(run, tmp_path):
    workdir, photos = _world(run, tmp_path)
    before = _snapshot(tmp_path)
    refusals = {
        photos / "sorted": "lies inside the run's images",
        photos: "lies inside the run's images",
        tmp_path: "holds the run's images",
        tmp_path / "missing" / "sorted": "its parent folder .* does not exist",
        photos / "top" / "img_00.png": "lies inside the run's images",
        workdir / runfolder.LABELS: "is a file, not a folder",
    }
    for out, message in refusals.items():
        with pytest.raises(export.ExportError, match=message):
            export.export_images(workdir, out)
    assert _snapshot(tmp_path) == before
    out = tmp_path / "sorted"
    export.export_images(workdir, out)
    shutil.rmtree(out / "top")
    (out / "top").symlink_to(tmp_path / "outside", target_is_directory=True)  # an earlier export, tampered with
    before = _snapshot(tmp_path)
    with pytest.raises(export.ExportError, match=r"sorted/top is a link or a file, not a class folder"):
        export.export_images(workdir, out, overwrite=True)
    (out / "top").unlink()
    rows = _rows(out / export.MANIFEST)
    rows[0]["exported"] = "../outside/secret.png"
    _write_rows(out / export.MANIFEST, rows)
    with pytest.raises(export.ExportError, match=r"lists '\.\./outside/secret\.png', which is not CLASS/NAME"):
        export.export_images(workdir, out, overwrite=True)
    assert _snapshot(tmp_path, skip=out) == {k: v for k, v in before.items() if not k.startswith("sorted")}
    assert (tmp_path / "outside" / "secret.png").is_file()


def test_a_run_without_files_or_with_missing_images_is_refused(run, tmp_path):
    workdir, photos = _world(run, tmp_path)
    shutil.move(photos, tmp_path / "moved")
    with pytest.raises(export.ExportError, match=r"images .*photos are not there .* --data_path=DIR"):
        export.export_images(workdir, tmp_path / "sorted")
    (tmp_path / "moved" / "top" / "img_02.png").unlink()
    with pytest.raises(export.ExportError, match=r"1 image\(s\) of .* are not in .*moved \(first: top/img_02.png\)"):
        export.export_images(workdir, tmp_path / "sorted", data_path=tmp_path / "moved")
    rows = _rows(workdir / runfolder.LABELS)
    _write_rows(workdir / runfolder.LABELS, [{k: v for k, v in r.items() if k != "file"} for r in rows])
    with pytest.raises(export.ExportError, match="has no file column: the run's data .* is not a folder of images"):
        export.export_images(workdir, tmp_path / "sorted")
    (workdir / runfolder.LABELS).unlink()
    with pytest.raises(export.ExportError, match="has no labels.csv yet"):
        export.export_images(workdir, tmp_path / "sorted")
    with pytest.raises(export.ExportError, match="holds no run"):
        export.export_images(tmp_path / "outside", tmp_path / "sorted")
    assert not (tmp_path / "sorted").exists()


def test_names_stay_apart_in_a_class_folder_deterministically():
    rows = [{"id": str(i), "file": file, "label": "0", "source": "given"} for i, file in
            enumerate(["a/x.png", "b/X.png", "b__X.png", "c/x.png", "c/d/x.png", "e/y.png", "c__d__x.png"])]
    names = [p.target for p in export.plan_export(rows)]
    assert names == ["0/x.png", "0/b__X.png", "0/b__X_2.png", "0/c__x.png", "0/c__d__x.png", "0/y.png",
                     "0/c__d__x_2.png"]
    assert names == [p.target for p in export.plan_export(rows)]
    assert [p.target for p in export.plan_export(rows, ["oracle"])] == []
    for bad in ["..", ".", "a/b", "a\\b", "a\x00b", "", ".x"]:
        assert export.unsafe_name(bad), bad
    for bad in ["/etc/passwd", "C:/x.png", "a//b.png", "a/./b.png", "a/../b.png", "a\\b.png", "a/\x00.png"]:
        assert export.unsafe_path(bad), bad
    assert export.unsafe_path("a/b c/d-e_f.png") is None and export.unsafe_name("cat 2") is None


def test_the_command_prints_the_counts_and_refuses_in_one_line(run, tmp_path):
    workdir, _ = _world(run, tmp_path)
    command = [sys.executable, "-m", "experiments.export_labels", f"--workdir={workdir}"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([*command, f"--out={tmp_path / 'sorted'}", "--sources=given"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].split() == ["class", "given", "total"]
    refused = subprocess.run([*command, f"--out={tmp_path / 'sorted'}"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 1 and refused.stderr.strip().splitlines()[-1].startswith("error: --out=")
    assert len([line for line in refused.stderr.splitlines() if line.startswith("error")]) == 1


# ------------------------------------------------------------------------------------------ predicting
def test_predictions_on_the_runs_own_images_are_those_of_labels_csv(run, tmp_path):
    before = _snapshot(run / "run")
    network = export.load_network(run / "run")
    assert network.input_shape == (8, 8, 1) and network.num_classes == 2 and network.class_names == CLASSES
    assert network.describe() == "the final network of seed 0 (after iteration 2)"
    new = export.read_new_data(run / "photos", network)
    predictions = export.predict(new.network, new.images)
    export.write_predictions(tmp_path / "own.csv", new, predictions)
    assert _snapshot(run / "run") == before  # nothing written in the run
    rows, labels = _rows(tmp_path / "own.csv"), _rows(run / "run" / runfolder.LABELS)
    assert list(rows[0]) == ["id", "file", "prediction", "class_name", "probability", "entropy"]
    assert [r["file"] for r in rows] == [r["file"] for r in labels] and all(r["id"] == r["file"] for r in rows)
    np.testing.assert_allclose([float(r["entropy"]) for r in rows], [float(r["entropy"]) for r in labels], atol=2e-6)
    predicted = [(r, p) for r, p in zip(labels, rows) if r["source"] == "prediction"]
    assert predicted
    for label_row, row in predicted:
        assert (row["prediction"], row["class_name"]) == (label_row["label"], label_row["class_name"])
        assert abs(float(row["probability"]) - float(label_row["probability"])) <= 2e-6


def test_a_new_folder_and_the_same_images_in_an_npz_get_the_same_predictions(run, tmp_path):
    rng, truth, stack = np.random.default_rng(7), {}, []
    places = ["bottom/a.png", "top/b.png", "unsorted/deep/c.png", "d.png", "e.png", "f.png", "g.png", "h.png"]
    for i, place in enumerate(sorted(places)):
        label = i % 2
        pixels = _pixels(label, rng)
        stack.append(pixels)
        truth[place] = label
        if place == "e.png":  # a colour file: read as gray, like the run's gray images
            _save(tmp_path / "new" / place, np.repeat(pixels[..., None], 3, -1))
        else:
            _save(tmp_path / "new" / place, pixels)
    (tmp_path / "new" / ".hidden.png").write_bytes(b"skipped")
    np.savez(tmp_path / "new.npz", x=np.stack(stack))
    network = export.load_network(run / "run")
    folder_data = export.read_new_data(tmp_path / "new", network)
    assert folder_data.files == tuple(sorted(places))
    by_folder = export.predict(folder_data.network, folder_data.images)
    npz_data = export.read_new_data(tmp_path / "new.npz", network)
    by_npz = export.predict(npz_data.network, npz_data.images)
    np.testing.assert_array_equal(by_folder.prediction, by_npz.prediction)
    np.testing.assert_allclose(by_folder.mean_probs, by_npz.mean_probs, atol=1e-6)
    assert by_folder.mean_probs.shape == (8, 2) and by_folder.num_passes == 10
    np.testing.assert_array_equal(by_folder.prediction, by_folder.mean_probs.argmax(1))
    np.testing.assert_allclose(by_folder.probability, by_folder.mean_probs.max(1))
    np.testing.assert_allclose(by_folder.mean_probs.sum(1), 1.0, atol=1e-5)
    assert ((by_folder.probability >= 0.5) & (by_folder.probability <= 1)).all()
    assert ((by_folder.entropy >= 0) & (by_folder.entropy <= 1)).all()
    right = np.mean(by_folder.prediction == [truth[f] for f in folder_data.files])
    assert right >= 0.75, right
    export.write_predictions(tmp_path / "folder.csv", folder_data, by_folder)
    export.write_predictions(tmp_path / "npz.csv", npz_data, by_npz)
    rows, npz_rows = _rows(tmp_path / "folder.csv"), _rows(tmp_path / "npz.csv")
    assert len(rows) == len(npz_rows) == 8 and "file" not in npz_rows[0]
    assert [r["class_name"] for r in rows] == [CLASSES[p] for p in by_folder.prediction]
    fewer = export.predict(folder_data.network, folder_data.images, num_passes=3)
    assert fewer.num_passes == 3 and fewer.mean_probs.shape == (8, 2)
    with pytest.raises(export.ExportError, match="--passes=0: MC dropout needs at least 1 pass"):
        export.predict(folder_data.network, folder_data.images, num_passes=0)


def test_images_of_another_shape_are_refused_naming_one_and_resized_on_request(run, tmp_path):
    rng = np.random.default_rng(3)
    for i in range(3):
        _save(tmp_path / "big" / f"{i}.png", _pixels(i % 2, rng, size=10))
    network = export.load_network(run / "run")
    with pytest.raises(export.ExportError, match=r"big/0.png is 10x10 pixels but the network takes 8x8x1 images; "
                                                 r"pass --resize .*--config.data.image_size=8x8") as error:
        export.read_new_data(tmp_path / "big", network)
    assert "\n" not in str(error.value)
    resized = export.read_new_data(tmp_path / "big", network, resize=True)
    assert resized.images.shape == (3, 8, 8, 1)
    np.savez(tmp_path / "big.npz", x=rng.integers(0, 256, (3, 10, 10), np.uint8))
    with pytest.raises(export.ExportError, match=r"'x' holds samples of shape \(10, 10, 1\) but the network takes "
                                                 r"\(8, 8, 1\); resize them to 8x8"):
        export.read_new_data(tmp_path / "big.npz", network)
    with pytest.raises(export.ExportError, match="neither a folder of images nor an .npz file"):
        export.read_new_data(tmp_path / "nothing.png", network)
    (tmp_path / "empty").mkdir()
    with pytest.raises(export.ExportError, match="holds no PNG / JPEG images"):
        export.read_new_data(tmp_path / "empty", network)


def test_a_run_without_a_checkpoint_is_refused_and_an_unfinished_one_says_which_network(run, tmp_path):
    (tmp_path / "fresh").mkdir()
    shutil.copy(run / "run" / runfolder.CONFIG, tmp_path / "fresh")
    with pytest.raises(export.ExportError, match="has no checkpoint .*: the run has not finished its initial fit"):
        export.load_network(tmp_path / "fresh")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run / "run", unfinished)
    (unfinished / runfolder.SUMMARY).unlink()
    shutil.copy(unfinished / "checkpoint.prev.msgpack", unfinished / runfolder.CHECKPOINT)  # after iteration 1
    network = export.load_network(unfinished)
    assert network.describe() == ("the network of seed 0 after iteration 1 of 2: the run has not finished, so its "
                                  "newest checkpoint is used")
    with pytest.raises(export.ExportError, match=r"--seed_index=1, but .* holds 1 seed\(s\)"):
        export.load_network(unfinished, seed_index=1)
    with pytest.raises(export.ExportError, match="exists; choose another file, or pass --overwrite"):
        export.check_csv_out(unfinished / runfolder.LABELS)


def test_the_predict_command_writes_the_csv_and_says_which_network(run, tmp_path):
    rng = np.random.default_rng(5)
    for i in range(4):
        _save(tmp_path / "new" / f"{i}.png", _pixels(i % 2, rng, size=12))
    command = [sys.executable, "-m", "experiments.predict", f"--workdir={run / 'run'}", f"--data={tmp_path / 'new'}",
               f"--out={tmp_path / 'p.csv'}", "--passes=4"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    refused = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and not (tmp_path / "p.csv").exists()
    assert refused.stderr.strip().splitlines()[-1].startswith("error: ") and "pass --resize" in refused.stderr
    done = subprocess.run([*command, "--resize"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "4 predictions of the 4 images in" in done.stdout and "4 MC-dropout passes each" in done.stdout
    assert "by the final network of seed 0 (after iteration 2)" in done.stdout
    rows = _rows(tmp_path / "p.csv")
    assert [r["file"] for r in rows] == [f"{i}.png" for i in range(4)]
    assert all(r["class_name"] == CLASSES[int(r["prediction"])] for r in rows)
