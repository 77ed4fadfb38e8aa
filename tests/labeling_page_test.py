"""The labeling page of a query round, driven in headless Chromium: keys and buttons pick classes, choices
survive a reload, and Save downloads the exact answers.csv that FileOracle reads.

Needs Chromium, its driver and Selenium: `apt-get install chromium chromium-driver` and `pip install -e ".[browser]"`.
"""

import shutil

import numpy as np
import pytest

from deepbass_jax import oracle
from deepbass_jax.oracle import files, rounds
from tests.browser import browser, downloaded  # noqa: F401 (browser: a fixture the tests take)

IDS = [12, 3, 40, 7]
NAMES = ["cat", "dog", "bird"]


def _keys(driver, *keys):
    from selenium.webdriver.common.action_chains import ActionChains

    for key in keys:
        ActionChains(driver).send_keys(key).perform()


def _text(driver, element_id):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def _thumb_answers(driver):
    from selenium.webdriver.common.by import By

    return [t.text for t in driver.find_elements(By.CSS_SELECTOR, ".thumb .tanswer")]


@pytest.mark.slow  # about 5 s, but it needs Chromium: pytest -m slow
def test_label_a_round_with_keys_and_buttons_reload_and_save(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    folder = tmp_path / "oracle" / "round_0000"
    images = np.random.default_rng(0).uniform(size=(len(IDS), 8, 8, 1))
    rounds.write_round(folder, np.array(IDS), images, num_classes=3, class_names=NAMES)
    browser.get((folder / "index.html").resolve().as_uri())
    assert _text(browser, "counter") == "0 of 4 labeled"
    assert _text(browser, "position") == "Sample 1 of 4 \u2014 id 12"
    assert str(folder.resolve()) in _text(browser, "folder")

    _keys(browser, "2", "0")  # id 12 -> bird, id 3 -> cat, each moving on to the next sample
    assert _text(browser, "position") == "Sample 3 of 4 \u2014 id 40"
    browser.find_element(By.CSS_SELECTOR, '.cls[data-label="1"]').click()  # id 40 -> dog
    assert _text(browser, "position") == "Sample 4 of 4 \u2014 id 7"
    _keys(browser, Keys.ARROW_LEFT)
    assert _text(browser, "answer") == "Label: 1 \u00b7 dog"
    _keys(browser, "0")  # id 40 changes to cat
    _keys(browser, "k", "k", "j")  # back two and forward one again
    assert _text(browser, "position") == "Sample 3 of 4 \u2014 id 40"
    assert _text(browser, "answer") == "Label: 0 \u00b7 cat"
    assert _text(browser, "counter") == "3 of 4 labeled"

    browser.refresh()  # the choices live in localStorage; the page opens on the first unlabeled sample
    assert _text(browser, "counter") == "3 of 4 labeled"
    assert _text(browser, "position") == "Sample 4 of 4 \u2014 id 7"
    assert _thumb_answers(browser) == ["\u2713 2 \u00b7 bird", "\u2713 0 \u00b7 cat", "\u2713 0 \u00b7 cat",
                                       "not labeled"]

    browser.find_element(By.ID, "save").click()  # one sample unlabeled: a warning, but the file comes
    assert downloaded(browser.downloads).read_text() == "id,label\n12,2\n3,0\n40,0\n"
    assert "1 of 4 samples have no label yet" in _text(browser, "warning")
    (browser.downloads / "answers.csv").unlink()

    _keys(browser, "1")  # id 7 -> dog
    assert _text(browser, "counter") == "4 of 4 labeled"
    browser.find_element(By.ID, "save").click()
    assert downloaded(browser.downloads).read_text() == "id,label\n12,2\n3,0\n40,0\n7,1\n"
    assert _text(browser, "warning") == ""
    browser.get((folder / "index.html").resolve().as_uri())
    assert _text(browser, "counter") == "4 of 4 labeled"

    shutil.copy(browser.downloads / "answers.csv", folder / "answers.csv")  # what the person does with it
    labels = oracle.FileOracle(tmp_path / "oracle", num_classes=3).label(np.array(IDS), images)
    np.testing.assert_array_equal(labels, [2, 0, 0, 1])

    rounds.write_round(folder, np.array(IDS), images[::-1], num_classes=3, class_names=NAMES)
    browser.refresh()  # other samples in the same folder: a fresh start, not the old round's answers
    assert _text(browser, "counter") == "0 of 4 labeled"


@pytest.mark.slow
def test_with_more_than_ten_classes_the_class_number_is_typed(tmp_path, browser):
    """12 classes: a number is taken once no longer valid number could follow (5, 11, 0), or on Enter (1)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    folder = tmp_path / "round_0000"
    rounds.write_round(folder, np.array(IDS), np.zeros((len(IDS), 3, 3, 3)), num_classes=12)
    browser.get((folder / "index.html").resolve().as_uri())
    _keys(browser, "5", "1")
    assert _text(browser, "typed").startswith("Typed: 1") and _text(browser, "counter") == "1 of 4 labeled"
    _keys(browser, "1", "1", Keys.ENTER, "0")
    assert _thumb_answers(browser) == ["\u2713 5 \u00b7 5", "\u2713 11 \u00b7 11", "\u2713 1 \u00b7 1",
                                       "\u2713 0 \u00b7 0"]
    browser.find_element(By.ID, "save").click()
    assert downloaded(browser.downloads).read_text() == "id,label\n12,5\n3,11\n40,1\n7,0\n"


def test_the_page_and_the_run_say_the_same_about_a_partial_save(tmp_path):
    """No browser: after a partial save the page says what the run then does (it keeps those answers and asks
    only for the rest, on the same page), and the page invites such a save."""
    folder = tmp_path / "oracle" / "round_0000"
    images = np.zeros((len(IDS), 8, 8, 1))
    file_oracle = oracle.FileOracle(tmp_path / "oracle", num_classes=3, class_names=NAMES)
    with pytest.raises(oracle.LabelsPending):
        file_oracle.label(np.array(IDS), images)
    page = (folder / "index.html").read_text()
    assert f'"{files.KEEPS_ANSWERS}: "' in page  # the save warning, in page.js
    assert "the run keeps the answers given and asks only for the rest" in " ".join(page.split())  # the header
    assert "will ask again" not in page
    (folder / "answers.csv").write_text("id,label\n12,2\n3,0\n40,0\n")  # what the page saves with id 7 unlabeled
    with pytest.raises(oracle.LabelsPending) as pending:
        file_oracle.label(np.array(IDS), images)
    assert f"{files.KEEPS_ANSWERS}: label them on the same page, {folder / 'index.html'}" in str(pending.value)


@pytest.mark.slow
def test_a_folder_round_shows_paths_and_saves_them_quoted_for_the_oracle(tmp_path, browser):
    """Folder data names samples by path: the page shows each path as text (escaped, not markup) and saves it
    quoted as CSV quotes it, so FileOracle reads back exactly the paths it asked."""
    from selenium.webdriver.common.by import By

    paths = ["12.png", 'sub/a, "b" c.png', "x/<i>y</i>.png"]
    images = np.zeros((len(paths), 8, 8, 1))
    file_oracle = oracle.FileOracle(tmp_path / "oracle", num_classes=3, class_names=NAMES, path_ids=True)
    with pytest.raises(oracle.LabelsPending):
        file_oracle.label(np.arange(3), images, np.array(paths, object))
    folder = tmp_path / "oracle" / "round_0000"
    browser.get((folder / "index.html").resolve().as_uri())
    assert [t.text for t in browser.find_elements(By.CSS_SELECTOR, ".thumb .tid")] == [f"id {p}" for p in paths]
    assert _text(browser, "position").endswith(f"id {paths[0]}")
    _keys(browser, "2", "0", "1")
    browser.find_element(By.ID, "save").click()
    saved = downloaded(browser.downloads).read_text()
    assert saved == 'id,label\n12.png,2\n"sub/a, ""b"" c.png",0\nx/<i>y</i>.png,1\n'
    shutil.copy(browser.downloads / "answers.csv", folder / "answers.csv")
    np.testing.assert_array_equal(file_oracle.label(np.arange(3), images, np.array(paths, object)), [2, 0, 1])
