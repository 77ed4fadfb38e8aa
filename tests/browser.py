"""Headless Chromium for the slow browser tests (the labeling page, the practitioner's whole path): a fixture whose
downloads land in `browser.downloads`. Missing Chromium, chromedriver or Selenium fail the test, saying what to
install (a skipped browser test would hide that the page was never tried)."""

import pathlib
import shutil
import time

import pytest

INSTALL = 'install them with `apt-get install chromium chromium-driver` and `pip install -e ".[browser]"`'


def _browser_parts():
    """(webdriver module, chromium path, chromedriver path), or a test failure saying what to install."""
    try:
        from selenium import webdriver
    except ImportError:
        pytest.fail(f"the browser tests need Selenium, Chromium and chromedriver: {INSTALL}.")
    chromium = next(filter(None, map(shutil.which, ["chromium", "chromium-browser", "google-chrome"])), None)
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        missing = " and ".join(n for n, p in [("chromium", chromium), ("chromedriver", chromedriver)] if p is None)
        pytest.fail(f"{missing} not found on PATH: {INSTALL}.")
    return webdriver, chromium, chromedriver


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium whose downloads land in `browser.downloads` (a fresh folder)."""
    webdriver, chromium, chromedriver = _browser_parts()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900", f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=chromedriver))
    try:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        driver.downloads = downloads
        yield driver
    finally:
        driver.quit()


def downloaded(folder: pathlib.Path, timeout: float = 20.0) -> pathlib.Path:
    """answers.csv in `folder` once the browser has finished writing it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = folder / "answers.csv"
        if done.is_file() and not list(folder.glob("*.crdownload")):
            return done
        time.sleep(0.1)
    pytest.fail(f"no answers.csv in {folder} after {timeout} s; found {sorted(p.name for p in folder.iterdir())}")
