"""Shared fixtures: the MNIST and Fashion-MNIST IDX folders, found on disk or downloaded once.

A data set `name` is looked for in $DEEPBASS_DATA/<name>, $DEEPBASS_SHARED_DATA/<name> (the older variable),
then ../shared/data/<name> beside the repository; a folder counts only when it holds the four IDX files (gzipped
or not). Otherwise `data.download` checks the package's download cache (see `data.default_cache_dir`) and fetches
whatever is missing or broken there, verifying every checksum.
"""

import os
import pathlib

import pytest

from deepbass_jax import data

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def data_folder_candidates(name: str) -> list[pathlib.Path]:
    """The folders that may hold the IDX files of `name`, in the order they are tried."""
    roots = [os.environ.get("DEEPBASS_DATA"), os.environ.get("DEEPBASS_SHARED_DATA"), SHARED_DATA]
    return [pathlib.Path(root) / name for root in roots if root]


def holds_idx_files(folder: pathlib.Path) -> bool:
    return all((folder / f"{stem}.gz").is_file() or (folder / stem).is_file() for stem in data.IDX_FILES)


def find_idx_dir(name: str) -> pathlib.Path:
    """The first candidate folder holding the IDX files of `name`, else the download cache, filled if need be."""
    candidates = data_folder_candidates(name)
    found = next((folder for folder in candidates if holds_idx_files(folder)), None)
    if found is not None:
        return found
    try:
        return data.download(name)
    except data.DataError as error:
        pytest.fail(
            f"{name}: no folder of its four IDX files among {', '.join(map(str, candidates))}, and the download "
            f"failed: {error}\nSet DEEPBASS_DATA to a folder holding {name}/."
        )


@pytest.fixture(scope="session")
def mnist_dir() -> pathlib.Path:
    return find_idx_dir("mnist")


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> pathlib.Path:
    return find_idx_dir("fashion_mnist")
