"""Data: real MNIST / Fashion-MNIST from the shared IDX files, every bad-input case, download, npz, toy."""

import gzip
import http.server
import shutil
import sys
import threading

import ml_collections
import numpy as np
import pytest

from deepbass_jax import data

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return data.load_idx_dir("mnist", mnist_dir)


def test_mnist_from_gzipped_idx_files(mnist):
    assert mnist.train_images.shape == (60000, 28, 28, 1) and mnist.test_images.shape == (10000, 28, 28, 1)
    assert mnist.train_images.dtype == np.float32 and mnist.train_labels.dtype == np.int32
    assert mnist.train_images.min() == 0.0 and mnist.train_images.max() == 1.0
    np.testing.assert_array_equal(mnist.train_labels[:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    np.testing.assert_array_equal(np.bincount(mnist.train_labels), MNIST_TRAIN_COUNTS)
    np.testing.assert_array_equal(np.bincount(mnist.test_labels), MNIST_TEST_COUNTS)
    assert mnist.train_images.mean() * 255 == pytest.approx(33.318, abs=1e-3)
    assert mnist.num_classes == 10 and mnist.input_shape == (28, 28, 1)


def test_fashion_mnist(fashion_mnist_dir):
    fashion = data.load_idx_dir("fashion_mnist", fashion_mnist_dir)
    np.testing.assert_array_equal(np.bincount(fashion.train_labels), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(fashion.test_labels), [1000] * 10)
    assert fashion.train_images.mean() * 255 == pytest.approx(72.94, abs=1e-2)


def _copy_raw(source_dir, target_dir, stems=data.IDX_FILES):
    """Decompressed copies of the shared files: raw IDX that tests may damage."""
    target_dir.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        (target_dir / stem).write_bytes(gzip.decompress((source_dir / f"{stem}.gz").read_bytes()))
    return target_dir


def test_raw_idx_files_read_like_gzipped_ones(mnist, mnist_dir, tmp_path):
    raw = data.load_idx_dir("mnist", _copy_raw(mnist_dir, tmp_path / "raw"))
    np.testing.assert_array_equal(raw.train_images, mnist.train_images)
    np.testing.assert_array_equal(raw.test_labels, mnist.test_labels)


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_missing_directory(tmp_path):
    with pytest.raises(data.DataError, match=r"nowhere: data directory does not exist; check --config.data"):
        data.load_idx_dir("mnist", tmp_path / "nowhere")


def test_missing_file(mnist_dir, tmp_path):
    folder = _copy_raw(mnist_dir, tmp_path / "partial", data.IDX_FILES[:1])
    with pytest.raises(data.DataError, match=r"neither train-labels-idx1-ubyte.gz nor train-labels-idx1-ubyte"):
        data.load_idx_dir("mnist", folder)


def test_truncated_file(mnist_dir, tmp_path):
    folder = _copy_raw(mnist_dir, tmp_path / "truncated")
    path = folder / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:1008])
    with pytest.raises(data.DataError, match=r"train-labels-idx1-ubyte: truncated: dimensions \(60000,\) need "
                                             r"60000 bytes of data, found 1000; delete it"):
        data.read_idx(path)


def test_wrong_magic(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 12)
    with pytest.raises(data.DataError, match=r"labels: not an IDX file of unsigned bytes \(magic 00000d01"):
        data.read_idx(path)


def test_checksum_mismatch_names_the_file(mnist_dir, tmp_path):
    folder = _copy_raw(mnist_dir, tmp_path / "flipped")
    path = folder / "t10k-labels-idx1-ubyte"
    payload = bytearray(path.read_bytes())
    payload[100] = (payload[100] + 1) % 10
    path.write_bytes(bytes(payload))
    with pytest.raises(data.DataError, match=r"t10k-labels-idx1-ubyte: checksum mismatch .* corrupted"):
        data.load_idx_dir("mnist", folder)


def test_broken_gzip(tmp_path):
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(_idx_bytes(np.zeros((2, 3, 3))))[:-10])
    with pytest.raises(data.DataError, match=r"images.gz: broken gzip data"):
        data.read_idx(path)


def test_image_and_label_count_mismatch(tmp_path, monkeypatch):
    monkeypatch.setitem(data.KNOWN_SHA256, "tiny", {stem: None for stem in data.IDX_FILES})
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((5, 28, 28))))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(4)))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((2, 28, 28))))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(2)))
    with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte holds \(5, 28, 28\) images but .*"
                                             r"train-labels-idx1-ubyte holds \(4,\) labels"):
        data.load_idx_dir("tiny", tmp_path)


# ------------------------------------------------------------------------------------------- download
class _Server:
    """Serves a folder on 127.0.0.1 and counts the requests."""

    def __init__(self, folder):
        self.requests = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mirrors(mnist_dir, tmp_path):
    """A mirror that is down, one that serves corrupted files, and a good one."""
    corrupted = tmp_path / "corrupted"
    corrupted.mkdir()
    for stem in data.IDX_FILES:
        payload = bytearray(gzip.decompress((mnist_dir / f"{stem}.gz").read_bytes()))
        payload[-1] ^= 0xFF
        (corrupted / f"{stem}.gz").write_bytes(gzip.compress(bytes(payload), compresslevel=1))
    bad, good = _Server(corrupted), _Server(mnist_dir)
    down = _Server(tmp_path)
    down_url = down.url
    down.close()  # nothing listens there any more
    yield down_url, bad, good
    bad.close()
    good.close()


def test_download_skips_a_down_and_a_corrupt_mirror_and_caches(mirrors, tmp_path, mnist):
    down_url, bad, good = mirrors
    cache = tmp_path / "cache"
    folder = data.download("mnist", cache, [down_url, bad.url, good.url], retries=2, timeout=5, backoff_seconds=0)
    assert folder == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{stem}.gz" for stem in data.IDX_FILES)
    assert len(bad.requests) == 4 and len(good.requests) == 4  # one try per file: corrupt content is final
    np.testing.assert_array_equal(data.load_idx_dir("mnist", cache).train_labels, mnist.train_labels)
    data.download("mnist", cache, [good.url], retries=1, timeout=5, backoff_seconds=0)
    assert len(good.requests) == 4  # everything cached and valid: no new request


def test_download_reports_every_failed_mirror(mirrors, tmp_path):
    down_url, bad, _ = mirrors
    with pytest.raises(data.DataError, match=r"could not download train-images-idx3-ubyte.gz") as raised:
        data.download("mnist", tmp_path / "cache", [down_url, bad.url], retries=2, timeout=5, backoff_seconds=0)
    message = str(raised.value)
    assert down_url in message and bad.url in message and "checksum mismatch" in message
    assert "(attempt 2)" in message and "--config.data.data_dir" in message
    assert not list((tmp_path / "cache").iterdir())  # no partial or temporary file is left behind


def test_load_downloads_into_the_cache(mirrors, tmp_path, monkeypatch):
    _, _, good = mirrors
    monkeypatch.setitem(data.MIRRORS, "mnist", [good.url])
    monkeypatch.setenv("DEEPBASS_CACHE", str(tmp_path / "cache"))
    config = data.default_config()
    assert config.source == "download" and config.data_dir is None
    dataset = data.load(config)
    assert dataset.train_images.shape == (60000, 28, 28, 1)
    assert (tmp_path / "cache" / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()


# ------------------------------------------------------------------------------------------------ npz
def test_npz_adds_a_channel_scales_uint8_and_infers_classes(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, x=np.full((6, 32, 32), 255, np.uint8), y=np.array([0, 1, 2, 3, 4, 0]))
    dataset = data.load_npz(path)
    assert dataset.train_images.shape == (6, 32, 32, 1) and dataset.train_images.max() == 1.0
    assert dataset.num_classes == 5 and dataset.input_shape == (32, 32, 1)


def test_npz_colour_images_and_flat_features_keep_their_shape(tmp_path):
    np.savez(tmp_path / "rgb.npz", x=np.zeros((4, 20, 24, 3), np.float32), y=np.array([0, 1, 1, 0]))
    np.savez(tmp_path / "flat.npz", x=np.zeros((4, 7), np.float32), y=np.array([0, 1, 2, 0]))
    assert data.load_npz(tmp_path / "rgb.npz").input_shape == (20, 24, 3)
    assert data.load_npz(tmp_path / "flat.npz").input_shape == (7,)


def test_npz_without_labels_needs_a_class_count(tmp_path):
    np.savez(tmp_path / "unlabeled.npz", x=np.zeros((4, 7), np.float32), num_classes=3)
    dataset = data.load_npz(tmp_path / "unlabeled.npz")
    assert dataset.train_labels is None and dataset.num_classes == 3
    np.savez(tmp_path / "nothing.npz", x=np.zeros((4, 7), np.float32))
    with pytest.raises(data.DataError, match="nothing.npz: no labels"):
        data.load_npz(tmp_path / "nothing.npz")


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"images": np.zeros((2, 4))}, r"no array named 'x' \(found \['images'\]\)"),
        ({"x": np.array([[np.nan, 0.0]]), "y": np.array([0])}, "'x' contains NaN"),
        ({"x": np.zeros((2, 4)), "y": np.array([0, -1])}, r"labels must lie in \[0, 1\), found -1..0"),
        ({"x": np.zeros((2, 4)), "y": np.array([0, 1, 1])}, "2 train images but 3 labels"),
        ({"x": np.zeros(5), "y": np.array([0])}, r"'x' has shape \(5,\)"),
        ({"x": np.zeros((2, 4)), "y": np.array([0.5, 1.0])}, "'y' must be a 1-D integer array"),
    ],
)
def test_bad_npz_names_the_file_and_the_problem(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(data.DataError, match=message) as raised:
        data.load_npz(path)
    assert "bad.npz" in str(raised.value)


def test_npz_labels_outside_the_declared_classes(tmp_path):
    np.savez(tmp_path / "labels.npz", x=np.zeros((2, 4)), y=np.array([0, 3]), num_classes=3)
    with pytest.raises(data.DataError, match=r"labels.npz: .*labels must lie in \[0, 3\), found 0..3"):
        data.load_npz(tmp_path / "labels.npz")


# ------------------------------------------------------------------------------------------- yin-yang
def test_yinyang_is_seeded_balanced_and_has_a_separate_test_sample():
    a, b, c = data.yinyang(100, seed=1), data.yinyang(100, seed=1), data.yinyang(100, seed=2)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    assert not np.array_equal(a.train_images, c.train_images)
    assert a.train_images.shape == a.test_images.shape == (200, 2)
    np.testing.assert_array_equal(np.bincount(a.train_labels), [100, 100])
    np.testing.assert_array_equal(a.test_labels, a.train_labels)
    assert not np.array_equal(a.train_images, a.test_images)


@pytest.mark.parametrize("cls, centre, sign", [(0, (1 / 3, -1 / 10), 1.0), (1, (-1 / 3, 1 / 10), -1.0)])
def test_yinyang_sample_statistics_follow_eqs_10_to_12(cls, centre, sign):
    toy = data.yinyang(20000, seed=0)
    offset = toy.train_images[toy.train_labels == cls] - np.array(centre, np.float32)
    radius = np.linalg.norm(offset, axis=1)
    # r ~ N(1, 1/4^2): the norm is |r|, and r < 0 has probability 3e-5, so |r| has r's moments here.
    assert radius.mean() == pytest.approx(1.0, abs=0.01)
    assert radius.std() == pytest.approx(0.25, abs=0.01)
    # phi / pi ~ N(1/2, 1/3^2) lies in (-1/2, 3/2) but for 0.3% of the samples (|z| > 3); atan2 wraps
    # (1, 3/2) onto (-1, -1/2), so unwrapping that interval by +2 recovers phi / pi for the other 99.7%.
    angle = np.arctan2(sign * offset[:, 1], offset[:, 0]) / np.pi
    angle = np.where(angle < -0.5, angle + 2.0, angle)
    assert angle.mean() == pytest.approx(0.5, abs=0.01)
    assert angle.std() == pytest.approx(1 / 3, abs=0.01)


def test_balanced_initial_labels():
    labels = np.repeat(np.arange(10), 50)
    chosen = data.balanced_initial_labels(labels, per_class=10, seed=0)
    assert len(np.unique(chosen)) == 100 and np.all(np.diff(chosen) > 0)
    np.testing.assert_array_equal(np.bincount(labels[chosen]), [10] * 10)
    np.testing.assert_array_equal(chosen, data.balanced_initial_labels(labels, 10, seed=0))
    assert not np.array_equal(chosen, data.balanced_initial_labels(labels, 10, seed=1))
    with pytest.raises(data.DataError, match="class 3 has only 2 samples, fewer than the 4"):
        data.balanced_initial_labels(np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3]), 4, seed=0)


# ----------------------------------------------------------------------------------- tfds and load()
def test_tfds_source_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(data.DataError, match=r'pip install -e "\.\[tfds\]"'):
        data.load_tfds("mnist")


def test_tfds_source_with_mock_data():
    tfds = pytest.importorskip(
        "tensorflow_datasets", reason="tensorflow-datasets is an optional extra: pip install -e '.[tfds]'"
    )
    with tfds.testing.mock_data(num_examples=12):
        dataset = data.load_tfds("mnist")
    assert dataset.train_images.shape == (12, 28, 28, 1) and dataset.train_images.dtype == np.float32
    assert dataset.train_labels.dtype == np.int32 and dataset.num_classes == 10


def test_load_dispatches_and_rejects_unknown_names(mnist_dir):
    config = data.default_config()
    config.name = "yinyang"
    config.num_per_class = 10
    assert data.load(config).train_images.shape == (20, 2)
    config = data.default_config()
    config.data_dir = str(mnist_dir)
    assert data.load(config).train_images.shape[0] == 60000
    with pytest.raises(data.DataError, match=r"data.name='cifar' is unknown"):
        data.load(ml_collections.ConfigDict({**data.default_config().to_dict(), "name": "cifar"}))
    config = data.default_config()
    config.source = "dir"
    with pytest.raises(data.DataError, match="needs --config.data.data_dir"):
        data.load(config)
