"""Where the mnist_dir / fashion_mnist_dir fixtures find their IDX files (no network: the download is faked)."""

import pathlib

import pytest

from deepbass_jax import data
from tests import conftest


def _idx_folder(path, gzipped=True, stems=data.IDX_FILES):
    """A folder with (empty) files named like the IDX files: only their presence matters here."""
    path.mkdir(parents=True)
    for stem in stems:
        (path / (f"{stem}.gz" if gzipped else stem)).touch()
    return path


@pytest.fixture
def downloads(monkeypatch, tmp_path):
    """The names `data.download` is asked for; it returns the default cache folder without any network."""
    asked = []

    def fake_download(name, cache_dir=None):
        asked.append((name, cache_dir))
        return data.default_cache_dir(name)

    monkeypatch.setattr(data, "download", fake_download)
    monkeypatch.setenv("DEEPBASS_CACHE", str(tmp_path / "cache"))
    return asked


@pytest.fixture
def roots(monkeypatch, tmp_path):
    """$DEEPBASS_DATA, $DEEPBASS_SHARED_DATA and ../shared/data pointed at empty temp folders."""
    paths = {"data": tmp_path / "data", "shared_alias": tmp_path / "alias", "shared": tmp_path / "shared"}
    monkeypatch.setenv("DEEPBASS_DATA", str(paths["data"]))
    monkeypatch.setenv("DEEPBASS_SHARED_DATA", str(paths["shared_alias"]))
    monkeypatch.setattr(conftest, "SHARED_DATA", paths["shared"])
    return paths


def test_folders_are_tried_in_order_and_the_download_comes_last(roots, downloads, monkeypatch, tmp_path):
    shared = _idx_folder(roots["shared"] / "mnist")
    alias = _idx_folder(roots["shared_alias"] / "mnist")
    first = _idx_folder(roots["data"] / "mnist")
    assert conftest.find_idx_dir("mnist") == first
    (first / "t10k-labels-idx1-ubyte.gz").unlink()  # incomplete: does not count
    assert conftest.find_idx_dir("mnist") == alias
    monkeypatch.delenv("DEEPBASS_SHARED_DATA")
    assert conftest.find_idx_dir("mnist") == shared
    monkeypatch.delenv("DEEPBASS_DATA")
    (shared / "train-images-idx3-ubyte.gz").unlink()
    assert downloads == []
    assert conftest.find_idx_dir("mnist") == tmp_path / "cache" / "mnist"
    assert downloads == [("mnist", None)]  # data.download checks the default cache, then fetches what is missing


def test_raw_idx_files_count_and_each_data_set_has_its_own_folder(roots, downloads):
    raw = _idx_folder(roots["data"] / "fashion_mnist", gzipped=False)
    assert conftest.find_idx_dir("fashion_mnist") == raw
    _idx_folder(roots["data"] / "mnist", stems=data.IDX_FILES[:3])
    assert conftest.find_idx_dir("mnist") == data.default_cache_dir("mnist")
    assert downloads == [("mnist", None)]


def test_without_the_variables_only_the_folder_beside_the_checkout_is_tried(monkeypatch, downloads, tmp_path):
    """No $DEEPBASS_DATA or $DEEPBASS_SHARED_DATA: a data set is looked for in ../shared/data/<name> beside the
    repository (whatever the working directory), and nowhere else before the download."""
    monkeypatch.delenv("DEEPBASS_DATA", raising=False)
    monkeypatch.delenv("DEEPBASS_SHARED_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    looked_in = []

    def holds_nothing(folder):  # whatever this machine's ../shared/data holds
        looked_in.append(folder)
        return False

    monkeypatch.setattr(conftest, "holds_idx_files", holds_nothing)
    repository = pathlib.Path(__file__).resolve().parents[1]
    assert conftest.find_idx_dir("mnist") == tmp_path / "cache" / "mnist"
    assert looked_in == [repository.parent / "shared" / "data" / "mnist"]
    assert downloads == [("mnist", None)]


def test_a_failed_download_fails_the_test_and_names_the_places_tried(roots, monkeypatch):
    def failing_download(name, cache_dir=None):
        raise data.DataError(f"could not download {name}")

    monkeypatch.setattr(data, "download", failing_download)
    with pytest.raises(pytest.fail.Exception) as failure:
        conftest.find_idx_dir("mnist")
    message = str(failure.value)
    assert "could not download mnist" in message and "DEEPBASS_DATA" in message
    for root in roots.values():
        assert str(root / "mnist") in message
