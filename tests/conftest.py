"""Shared fixtures: the read-only reference data sets in ../shared/data (or $DEEPBASS_SHARED_DATA)."""

import os
import pathlib

import pytest

SHARED_DATA = pathlib.Path(
    os.environ.get("DEEPBASS_SHARED_DATA", pathlib.Path(__file__).resolve().parents[2] / "shared" / "data")
)


def _shared(name: str) -> pathlib.Path:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.fail(f"reference data {folder} is missing: set DEEPBASS_SHARED_DATA to the folder holding {name}/.")
    return folder


@pytest.fixture(scope="session")
def mnist_dir() -> pathlib.Path:
    return _shared("mnist")


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> pathlib.Path:
    return _shared("fashion_mnist")
