"""A practitioner's whole run, end to end, in a real browser: a folder of 2,000 small PNGs (30 of them sorted into
class folders), `python -m experiments.main --config=experiments/configs/own.py`, and three rounds of queries
answered on each round's labeling page in headless Chromium (a digit key or a class button per sample, then
"Save answers.csv", the download moved into the round folder), with a kill -9 in the middle, a correction, and
labels.csv checked against the truth of every file at the end.

Needs Chromium, its driver and Selenium: `apt-get install chromium chromium-driver` and `pip install -e ".[browser]"`;
without them the test fails, saying what to install. About 2 minutes on a 2-core CPU: pytest -m slow
tests/practitioner_e2e_test.py
"""

import base64
import csv
import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.browser import browser, downloaded  # noqa: F401 (browser: a fixture)

REPO = pathlib.Path(__file__).resolve().parents[1]
CLASSES = ("bar", "box", "pipe", "slash")  # the class folders; the run numbers them in this (sorted) order
SIDE = 8  # pixels
NUM_IMAGES, NUM_GIVEN = 2000, 30
WAITING_FOR_LABELS = 75  # experiments.main's status while a round waits for answers
QUICK = [  # the own.py preset, made quick: 30 labels given + 3 rounds of 10 = the budget of 60
    "--config.initial_epochs=10",
    "--config.iterations=3",
    "--config.budget=60",
    "--config.mc_passes_labeled=10",
    "--config.labeled_chunk_size=64",
    "--config.figures=false",
]


# ------------------------------------------------------------------------------------------ the data
def _pattern(label: int, rng: np.random.Generator) -> np.ndarray:
    """A digit-like stroke of class `label` [SIDE, SIDE] in 0..1, with a random position."""
    stroke = np.zeros((SIDE, SIDE))
    if label == 0:  # bar: a horizontal line
        row = rng.integers(2, 6)
        stroke[row, 1:7] = 1
    elif label == 1:  # box: a hollow square
        low, high = rng.integers(1, 3), rng.integers(5, 7)
        stroke[[low, high], low:high + 1] = 1
        stroke[low:high + 1, [low, high]] = 1
    elif label == 2:  # pipe: a vertical line
        stroke[1:7, rng.integers(2, 6)] = 1
    else:  # slash: an anti-diagonal
        shift = rng.integers(-1, 2)
        for row in range(1, 7):
            if 0 <= row + shift < SIDE:
                stroke[row, SIDE - 1 - (row + shift)] = 1
    return stroke


def make_folder(root: pathlib.Path, seed: int = 0) -> tuple[dict, dict]:
    """Writes NUM_IMAGES grayscale PNGs into `root`: NUM_GIVEN in class folders root/CLASS/ (every class), the rest
    at the top level. Returns ({relative path: class name}, {relative path: uint8 pixels [SIDE, SIDE]}), every
    image distinct."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(NUM_IMAGES) % len(CLASSES))
    labels[:NUM_GIVEN] = np.arange(NUM_GIVEN) % len(CLASSES)  # the given ones cover every class
    truth, pixels = {}, {}
    for k, label in enumerate(labels):
        image = _pattern(label, rng) * rng.integers(190, 256) + rng.integers(0, 60, (SIDE, SIDE))
        image = np.clip(image, 0, 255).astype(np.uint8)
        relative = f"{CLASSES[label]}/given_{k:04d}.png" if k < NUM_GIVEN else f"img_{k:04d}.png"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").save(root / relative)
        truth[relative], pixels[relative] = CLASSES[label], image
    assert len({p.tobytes() for p in pixels.values()}) == NUM_IMAGES
    return truth, pixels


# ------------------------------------------------------------------------------------------ the run
class Run:
    """The practitioner's one command, run again and again in the same workdir."""

    def __init__(self, data: pathlib.Path, workdir: pathlib.Path, scratch: pathlib.Path):
        self.workdir = workdir
        self.command = [sys.executable, "-m", "experiments.main", "--config=experiments/configs/own.py",
                        f"--config.data.path={data}", f"--config.data.cache_dir={scratch / 'image_cache'}", *QUICK,
                        f"--workdir={workdir}"]
        jax_cache = scratch / "jax_cache"  # compiled once, reused by the later starts: seconds each
        self.env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(jax_cache),
                        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
        self.env.pop("DEEPBASS_FAULT_AT", None)
        self.attempts = 0

    def start(self) -> tuple[subprocess.Popen, pathlib.Path]:
        self.attempts += 1
        log = self.workdir.parent / f"{self.workdir.name}.attempt{self.attempts}.log"
        with open(log, "w") as output:
            process = subprocess.Popen(self.command, cwd=REPO, env=self.env, stdout=output, stderr=subprocess.STDOUT)
        return process, log

    def __call__(self, expected: int) -> str:
        """Runs the command to its end; fails unless it exits with `expected`. Returns its output."""
        process, log = self.start()
        try:
            status = process.wait(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        output = log.read_text()
        assert status == expected, (f"`{' '.join(self.command)}` exited with status {status}, not {expected}; its "
                                    f"last output:\n{output[-3000:]}")
        return output


def read_jsonl(path: pathlib.Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def read_csv(path: pathlib.Path) -> list:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------------------ the browser
class Person:
    """Answers a round on its page as a person does: looks at each sample, presses its class's digit key (even
    samples) or clicks its class button (odd ones), saves answers.csv and moves the download into the round."""

    def __init__(self, browser, truth: dict, pixels: dict):
        self.browser, self.truth = browser, truth
        # What the page shows: the pool's pixels on one contrast, the pool's (min, max) mapped to 0..255.
        stacked = np.stack(list(pixels.values())).astype(np.float64)
        low, high = stacked.min(), stacked.max()
        shown = np.rint((stacked - low) / (high - low) * 255).astype(np.uint8)
        self.by_picture = {picture.tobytes(): file for picture, file in zip(shown, pixels)}

    def _seen_file(self) -> str:
        """The pool file whose pixels the page's large image shows (upscaled by nearest neighbour)."""
        from PIL import Image
        from selenium.webdriver.common.by import By

        source = self.browser.find_element(By.ID, "big").get_attribute("src")
        assert source.startswith("data:image/png;base64,"), source[:80]
        picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).convert("L"))
        factor = picture.shape[0] // SIDE
        assert picture.shape == (SIDE * factor, SIDE * factor), picture.shape
        small = picture[::factor, ::factor]
        np.testing.assert_array_equal(np.repeat(np.repeat(small, factor, 0), factor, 1), picture)
        file = self.by_picture.get(np.ascontiguousarray(small).tobytes())
        assert file is not None, "the page shows an image that is no pool image"
        return file

    def answer(self, folder: pathlib.Path) -> dict:
        """Labels every sample of the round in `folder`; returns {id as queries.csv writes it: (file, label)}."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By

        browser = self.browser
        browser.get((folder / "index.html").resolve().as_uri())
        queries = [row["id"] for row in read_csv(folder / "queries.csv")]
        buttons = {}
        for button in browser.find_elements(By.CSS_SELECTOR, ".cls"):
            number, name = button.text.split(" ", 1)
            assert number == button.get_attribute("data-label"), button.text
            buttons[name.strip()] = button
        assert sorted(buttons) == sorted(CLASSES), f"class buttons {sorted(buttons)}"
        assert browser.find_element(By.ID, "counter").text == f"0 of {len(queries)} labeled"
        given = {}
        for k, query_id in enumerate(queries):
            position = browser.find_element(By.ID, "position").text
            assert position == f"Sample {k + 1} of {len(queries)} \u2014 id {query_id}", position
            file = self._seen_file()
            self._check_id(query_id, file)
            button = buttons[self.truth[file]]
            label = int(button.get_attribute("data-label"))
            if k % 2 == 0:
                ActionChains(browser).send_keys(str(label)).perform()
            else:
                button.click()
            given[query_id] = (file, label)
        assert browser.find_element(By.ID, "counter").text == f"{len(queries)} of {len(queries)} labeled"
        browser.find_element(By.ID, "save").click()
        download = downloaded(browser.downloads)
        rows = read_csv(download)
        assert [(row["id"], int(row["label"])) for row in rows] == [(i, given[i][1]) for i in queries], \
            download.read_text()
        shutil.move(download, folder / "answers.csv")  # what the person does with the download
        return given

    def _check_id(self, query_id: str, file: str) -> None:
        """The id the page and queries.csv give a sample names the file shown: its path in DIR, or its row in the
        pool (files sorted by path)."""
        if query_id.strip().lstrip("-").isdigit():
            assert sorted(self.truth)[int(query_id)] == file, f"id {query_id} shows {file}"
        else:
            assert query_id == file, f"id {query_id!r} shows {file}"


# ------------------------------------------------------------------------------------------ the test
def _round(workdir: pathlib.Path, number: int) -> pathlib.Path:
    return workdir / "oracle" / f"round_{number:04d}"


def _bought(workdir: pathlib.Path, iteration: int) -> list:
    return [line for line in read_jsonl(workdir / "oracle_log.jsonl")
            if line["iteration"] == iteration and not line.get("correction")]


def _kill_once_bought(run: Run, iteration: int, count: int) -> None:
    """Starts the run and SIGKILLs it once its oracle log holds the `count` answers of `iteration` (it then trains
    on them); fails if the run ends first."""
    process, log = run.start()
    try:
        deadline = time.monotonic() + 240
        while len(_bought(run.workdir, iteration)) < count:
            status = process.poll()
            assert status is None, (f"the run to be killed ended first, with status {status}:\n"
                                    f"{log.read_text()[-3000:]}")
            assert time.monotonic() < deadline, (f"no answers of iteration {iteration} logged in 240 s:\n"
                                                 f"{log.read_text()[-3000:]}")
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL, "the run ended before the kill"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _comparable(lines: list) -> list:
    """metrics.jsonl lines without the timings, which differ between runs."""
    return [{key: value for key, value in line.items() if "second" not in key and "time" not in key and key != "phases"}
            for line in lines]


@pytest.mark.slow  # about 2 minutes, and it needs Chromium: pytest -m slow tests/practitioner_e2e_test.py
def test_a_person_labels_three_rounds_in_the_browser_through_a_kill_and_a_correction(tmp_path, browser):
    data, workdir = tmp_path / "images", tmp_path / "run"
    truth, pixels = make_folder(data)
    person = Person(browser, truth, pixels)
    run = Run(data, workdir, tmp_path)
    number = {name: c for c, name in enumerate(CLASSES)}  # the class folders, sorted
    answered = {}  # id as queries.csv writes it -> (file, label)

    # Round 1: the initial fit on the 30 labels given, then the first queries; the run stops with status 75.
    output = run(WAITING_FOR_LABELS)
    assert "waiting for labels" in output and str(_round(workdir, 0) / "index.html") in output
    answered.update(person.answer(_round(workdir, 0)))

    # Round 2: the same command takes round 1's answers and asks again.
    run(WAITING_FOR_LABELS)
    assert len(_bought(workdir, 1)) == 10
    answered.update(person.answer(_round(workdir, 1)))

    # kill -9 while the run trains on round 2's answers, then the same command resumes exactly: it asks the same
    # round 3 as a run that was never killed (a copy of the workdir, run once), with the same metrics and checkpoint.
    reference = tmp_path / "reference"
    shutil.copytree(workdir, reference)
    _kill_once_bought(run, iteration=2, count=10)
    run(WAITING_FOR_LABELS)
    Run(data, reference, tmp_path)(WAITING_FOR_LABELS)
    assert read_csv(_round(workdir, 2) / "queries.csv") == read_csv(_round(reference, 2) / "queries.csv")
    assert _comparable(read_jsonl(workdir / "metrics.jsonl")) == _comparable(read_jsonl(reference / "metrics.jsonl"))
    assert (workdir / "checkpoint.msgpack").read_bytes() == (reference / "checkpoint.msgpack").read_bytes()
    assert len(_bought(workdir, 2)) == 10, "round 2's answers were logged again (or lost) after the kill"

    # A correction of a label bought in round 2, by its id as queries.csv writes it.
    corrected_id = read_csv(_round(workdir, 1) / "queries.csv")[0]["id"]
    corrected_file, old_label = answered[corrected_id]
    new_label = (old_label + 1) % len(CLASSES)
    with open(workdir / "corrections.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["id", "label"], [corrected_id, new_label]])

    # Round 3, then the run finishes.
    answered.update(person.answer(_round(workdir, 2)))
    output = run(0)
    assert "no test set with 60 labels" in output, output[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["labels"] == 60, summary

    # The oracle log: 10 answers per round, each id once, and the correction.
    log = read_jsonl(workdir / "oracle_log.jsonl")
    bought = [line for line in log if not line.get("correction")]
    assert sorted(line["iteration"] for line in bought) == [1] * 10 + [2] * 10 + [3] * 10
    assert len({str(line["id"]) for line in bought}) == 30
    assert {str(line["id"]) for line in bought} == set(answered)
    corrections = [line for line in log if line.get("correction")]
    assert corrections and all(str(line["id"]) == corrected_id and line["label"] == new_label
                               for line in corrections), corrections

    # labels.csv: every pool image once, by its path in DIR; the given and bought labels are the truth, except the
    # corrected one.
    rows = read_csv(workdir / "labels.csv")
    assert sorted(row["file"] for row in rows) == sorted(truth)
    by_source = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
        if row["source"] in ("given", "oracle"):
            expected = new_label if row["file"] == corrected_file else number[truth[row["file"]]]
            assert int(row["label"]) == expected, row
            assert row["class_name"] == CLASSES[expected], row
        if row["source"] == "oracle":  # its id as the page and queries.csv gave it
            assert answered[row["id"]][0] == row["file"], row
    assert len(by_source["given"]) == NUM_GIVEN and {r["file"] for r in by_source["given"]} == {
        file for file in truth if "/" in file}
    assert {r["file"] for r in by_source["oracle"]} == {file for file, _ in answered.values()}
    assert len(by_source["oracle"]) == 30
