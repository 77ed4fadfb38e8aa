"""Data: real MNIST / Fashion-MNIST from the shared IDX files, every bad-input case, download against local
mirrors, npz, yin-yang statistics, initial labels, load(config); and the progress reporter downloads use.
The tfds source: tfds_test.py."""

import gzip
import http.server
import io
import logging
import sys
import threading

import ml_collections
import numpy as np
import pytest

from deepbass_jax import data, progress

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return data.load_idx_dir("mnist", mnist_dir)


def test_mnist_from_gzipped_idx_files(mnist):
    assert mnist.train_images.shape == (60000, 28, 28, 1) and mnist.test_images.shape == (10000, 28, 28, 1)
    assert mnist.train_images.dtype == mnist.test_images.dtype == np.float32
    assert mnist.train_labels.dtype == mnist.test_labels.dtype == np.int32
    assert mnist.train_images.min() == 0.0 and mnist.train_images.max() == 1.0
    np.testing.assert_array_equal(mnist.train_labels[:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    np.testing.assert_array_equal(np.bincount(mnist.train_labels), MNIST_TRAIN_COUNTS)
    np.testing.assert_array_equal(np.bincount(mnist.test_labels), MNIST_TEST_COUNTS)
    assert mnist.train_images.mean(dtype=np.float64) * 255 == pytest.approx(33.318, abs=1e-3)
    assert mnist.num_classes == 10 and mnist.input_shape == (28, 28, 1)


def test_fashion_mnist(fashion_mnist_dir):
    fashion = data.load_idx_dir("fashion_mnist", fashion_mnist_dir)
    assert fashion.train_images.shape == (60000, 28, 28, 1) and fashion.test_images.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(fashion.train_labels), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(fashion.test_labels), [1000] * 10)
    assert fashion.train_images.mean(dtype=np.float64) * 255 == pytest.approx(72.94, abs=1e-2)


def _payload(folder, stem) -> bytes:
    """The decompressed IDX file `stem` of a fixture's folder, which may hold it gzipped or raw."""
    gzipped = folder / f"{stem}.gz"
    return gzip.decompress(gzipped.read_bytes()) if gzipped.is_file() else (folder / stem).read_bytes()


def _copy_raw(source_dir, target_dir, stems=data.IDX_FILES):
    """Decompressed copies of the shared files: raw IDX that tests may damage."""
    target_dir.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        (target_dir / stem).write_bytes(_payload(source_dir, stem))
    return target_dir


def _idx_bytes(array: np.ndarray) -> bytes:
    """A valid IDX file of unsigned bytes holding `array`."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_raw_idx_files_read_like_gzipped_ones(mnist, mnist_dir, tmp_path):
    raw = data.load_idx_dir("mnist", _copy_raw(mnist_dir, tmp_path / "raw"))
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(raw, field), getattr(mnist, field))


def test_read_idx_round_trips_small_files(tmp_path):
    images = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    (tmp_path / "images").write_bytes(_idx_bytes(images))
    (tmp_path / "images.gz").write_bytes(gzip.compress(_idx_bytes(images)))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "images"), images)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "images.gz"), images)


# --------------------------------------------------------------------------------------- bad IDX input
def test_missing_directory(tmp_path):
    with pytest.raises(data.DataError, match=r"nowhere: data directory does not exist; check --config.data"):
        data.load_idx_dir("mnist", tmp_path / "nowhere")


def test_missing_files_are_all_listed(mnist_dir, tmp_path):
    folder = _copy_raw(mnist_dir, tmp_path / "partial", data.IDX_FILES[1:2])
    with pytest.raises(data.DataError) as raised:
        data.load_idx_dir("mnist", folder)
    message = str(raised.value)
    assert message.startswith(f"{folder}: missing train-images-idx3-ubyte.gz (or train-images-idx3-ubyte), ")
    assert "t10k-images-idx3-ubyte.gz (or t10k-images-idx3-ubyte)" in message
    assert "t10k-labels-idx1-ubyte.gz (or t10k-labels-idx1-ubyte)" in message
    assert "train-labels" not in message and "leave data_dir unset to download" in message


def test_truncated_file_is_reported_as_truncated_not_as_a_checksum_mismatch(mnist_dir, tmp_path):
    folder = _copy_raw(mnist_dir, tmp_path / "truncated")
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1016])
    with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte: truncated: dimensions \(60000, 28, 28\) "
                                             r"need 47040000 bytes of data, found 1000; delete it"):
        data.load_idx_dir("mnist", folder)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"\x00\x00\x0d\x01" + b"\x00" * 12, r"not an IDX file of unsigned bytes \(magic 00000d01, expected 00000801"),
        (b"PK\x03\x04", r"not an IDX file of unsigned bytes \(magic 504b0304"),
        (b"", r"magic missing"),
        (b"\x00\x00\x08\x03\x00\x00", r"truncated: 6 bytes, too short for the header of 3 dimensions"),
        (_idx_bytes(np.zeros(3)) + b"\x00", r"too long: dimensions \(3,\) need 3 bytes of data, found 4"),
        (gzip.compress(_idx_bytes(np.zeros((2, 3, 3))), mtime=0)[:-10], r"broken gzip data"),
    ],
)
def test_bad_idx_file_names_the_file_the_problem_and_the_remedy(tmp_path, payload, message):
    path = tmp_path / "input-file"
    path.write_bytes(payload)
    with pytest.raises(data.DataError, match=message) as raised:
        data.read_idx(path)
    assert str(raised.value).startswith(f"{path}: ") and "--config.data.data_dir" in str(raised.value)


def test_unreadable_file(tmp_path):
    with pytest.raises(data.DataError, match=r"absent-file: cannot be read \(No such file or directory\)"):
        data.read_idx(tmp_path / "absent-file")


def test_checksum_mismatch_names_the_file(mnist_dir, tmp_path):
    folder = _copy_raw(mnist_dir, tmp_path / "flipped")
    path = folder / "t10k-labels-idx1-ubyte"
    payload = bytearray(path.read_bytes())
    payload[100] = (payload[100] + 1) % 10  # still a valid label: only the checksum can tell
    path.write_bytes(bytes(payload))
    with pytest.raises(data.DataError, match=r"t10k-labels-idx1-ubyte: checksum mismatch .* corrupted"):
        data.load_idx_dir("mnist", folder)
    original = data.read_idx(_copy_raw(mnist_dir, tmp_path / "original", [path.name]) / path.name)
    changed = data.read_idx(path) != original  # readable without a digest
    np.testing.assert_array_equal(np.flatnonzero(changed), [100 - 8])  # the one label after the 8-byte header


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
    """Serves a folder on 127.0.0.1 in a background thread and records the requested paths."""

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


@pytest.fixture(scope="module")
def servers(mnist_dir, tmp_path_factory):
    """URL of a mirror that is down; a server with corrupted copies of the files; a good one."""
    corrupted, intact = tmp_path_factory.mktemp("corrupted"), tmp_path_factory.mktemp("intact")
    for stem in data.IDX_FILES:
        payload = bytearray(_payload(mnist_dir, stem))
        (intact / f"{stem}.gz").write_bytes(gzip.compress(bytes(payload), compresslevel=1))
        payload[-1] ^= 0x01  # a valid IDX file with one wrong byte
        (corrupted / f"{stem}.gz").write_bytes(gzip.compress(bytes(payload), compresslevel=1))
    bad, good = _Server(corrupted), _Server(intact)
    down = _Server(tmp_path_factory.mktemp("down"))
    down.close()  # nothing listens there any more
    yield down.url, bad, good
    bad.close()
    good.close()


@pytest.fixture
def mirrors(servers):
    """The servers with their request logs cleared; `missing` is a good host without the files (404)."""
    down_url, bad, good = servers
    bad.requests.clear()
    good.requests.clear()
    return down_url, bad, good, good.url + "missing/"


def _downloaded(folder):
    return sorted(p.name for p in folder.iterdir())


def test_download_skips_down_missing_and_corrupt_mirrors_and_caches(mirrors, tmp_path, mnist, caplog):
    down_url, bad, good, missing = mirrors
    cache = tmp_path / "cache"
    folder = data.download("mnist", cache, [down_url, missing, bad.url, good.url], retries=2, timeout=5,
                           backoff_seconds=0)
    assert folder == cache
    assert _downloaded(cache) == sorted(f"{stem}.gz" for stem in data.IDX_FILES)  # no temp file left
    dataset = data.load_idx_dir("mnist", cache)  # checks every checksum
    np.testing.assert_array_equal(dataset.train_labels, mnist.train_labels)
    assert sorted(bad.requests) == sorted(f"/{stem}.gz" for stem in data.IDX_FILES)  # corrupt: no retry
    assert sorted(good.requests) == sorted([f"/missing/{s}.gz" for s in data.IDX_FILES]  # 404: no retry
                                           + [f"/{s}.gz" for s in data.IDX_FILES])
    corrupt_warnings = [r.getMessage() for r in caplog.records if "served a corrupted" in r.getMessage()]
    assert len(corrupt_warnings) == 4 and all(bad.url in message for message in corrupt_warnings)
    requests = len(good.requests)
    data.download("mnist", cache, [good.url], retries=1, timeout=5, backoff_seconds=0)
    assert len(good.requests) == requests  # everything cached and valid: no new request


def test_download_keeps_files_put_there_by_hand_and_repairs_broken_ones(mirrors, mnist_dir, tmp_path):
    _, _, good, _ = mirrors
    cache = _copy_raw(mnist_dir, tmp_path / "cache")  # raw files, as a person would unpack them
    broken = cache / "t10k-labels-idx1-ubyte"
    broken.write_bytes(broken.read_bytes()[:-1])
    data.download("mnist", cache, [good.url], retries=1, timeout=5, backoff_seconds=0)
    assert good.requests == ["/t10k-labels-idx1-ubyte.gz"]
    assert data.load_idx_dir("mnist", cache).test_labels.shape == (10000,)  # the fresh .gz takes precedence


def test_download_reports_every_failed_mirror(mirrors, tmp_path):
    down_url, bad, _, missing = mirrors
    cache = tmp_path / "cache"
    with pytest.raises(data.DataError, match=r"could not download train-images-idx3-ubyte.gz from any of 3 mirrors"
                       ) as raised:
        data.download("mnist", cache, [down_url, missing, bad.url], retries=2, timeout=5, backoff_seconds=0)
    message = str(raised.value)
    assert f"{down_url}train-images-idx3-ubyte.gz (attempt 1 of 2)" in message
    assert f"{down_url}train-images-idx3-ubyte.gz (attempt 2 of 2)" in message
    assert f"{missing}train-images-idx3-ubyte.gz (attempt 1 of 2): HTTP Error 404" in message
    assert f"{missing}train-images-idx3-ubyte.gz (attempt 2" not in message
    assert f"{bad.url}train-images-idx3-ubyte.gz: corrupted download: checksum mismatch" in message
    assert f"by hand into {cache}, or pass --config.data.data_dir" in message
    assert not list(cache.iterdir())  # no partial or temporary file is left behind


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("DEEPBASS_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.default_cache_dir("mnist") == tmp_path / "home" / ".cache" / "deepbass_jax" / "mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.default_cache_dir("mnist") == tmp_path / "xdg" / "deepbass_jax" / "mnist"
    monkeypatch.setenv("DEEPBASS_CACHE", str(tmp_path / "mine"))
    assert data.default_cache_dir("fashion_mnist") == tmp_path / "mine" / "fashion_mnist"


def test_load_downloads_into_the_cache(mirrors, tmp_path, monkeypatch):
    _, _, good, _ = mirrors
    monkeypatch.setitem(data.MIRRORS, "mnist", [good.url])
    monkeypatch.setenv("DEEPBASS_CACHE", str(tmp_path / "cache"))
    config = data.default_config()
    assert config.source == "download" and config.data_dir is None
    dataset = data.load(config)
    assert dataset.train_images.shape == (60000, 28, 28, 1) and len(good.requests) == 4
    assert _downloaded(tmp_path / "cache" / "mnist") == sorted(f"{stem}.gz" for stem in data.IDX_FILES)


# ------------------------------------------------------------------------------------------------ npz
def test_npz_adds_a_channel_scales_uint8_and_infers_classes(tmp_path):
    path = tmp_path / "mine.npz"
    x = np.random.default_rng(0).integers(0, 256, (6, 32, 32), dtype=np.uint8)
    np.savez(path, x=x, y=np.array([0, 1, 2, 3, 4, 0]))
    dataset = data.load_npz(path)
    assert dataset.train_images.shape == (6, 32, 32, 1) and dataset.train_images.dtype == np.float32
    np.testing.assert_allclose(dataset.train_images[..., 0] * 255, x, atol=1e-4)
    assert dataset.train_labels.dtype == np.int32 and dataset.num_classes == 5
    assert dataset.input_shape == (32, 32, 1) and dataset.name == "mine" and dataset.test_images is None


def test_npz_colour_images_and_flat_features_keep_their_shape_and_values(tmp_path):
    features = np.linspace(-3.0, 7.0, 28).reshape(4, 7)  # float64, outside [0, 1]: kept as they are
    np.savez(tmp_path / "rgb.npz", x=np.zeros((4, 32, 32, 3), np.float32), y=np.array([0, 1, 1, 0]),
             x_test=np.ones((2, 32, 32, 3), np.float32), y_test=np.array([1, 0]))
    np.savez(tmp_path / "flat.npz", x=features, y=np.array([0, 1, 2, 0]))
    rgb, flat = data.load_npz(tmp_path / "rgb.npz"), data.load_npz(tmp_path / "flat.npz")
    assert rgb.input_shape == (32, 32, 3) and rgb.test_images.shape == (2, 32, 32, 3) and rgb.num_classes == 2
    assert flat.input_shape == (7,) and flat.num_classes == 3 and flat.train_images.dtype == np.float32
    np.testing.assert_allclose(flat.train_images, features, rtol=1e-6)


def test_npz_test_fraction_holds_out_labeled_samples(tmp_path):
    x, y = np.arange(40, dtype=np.float32).reshape(20, 2), np.arange(20) % 4
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    dataset = data.load_npz(tmp_path / "mine.npz", test_fraction=0.25, seed=3)
    assert dataset.train_images.shape == (15, 2) and dataset.test_images.shape == (5, 2)
    together = np.concatenate([dataset.train_images, dataset.test_images])
    np.testing.assert_array_equal(np.sort(together[:, 0]), x[:, 0])  # a partition of the samples
    np.testing.assert_array_equal(dataset.test_labels, y[(dataset.test_images[:, 0] / 2).astype(int)])
    again = data.load_npz(tmp_path / "mine.npz", test_fraction=0.25, seed=3)
    np.testing.assert_array_equal(again.test_images, dataset.test_images)
    with pytest.raises(data.DataError, match=r"mine.npz: test_fraction=0.01 needs .* \(here 0 of 20 would be"):
        data.load_npz(tmp_path / "mine.npz", test_fraction=0.01)


def test_npz_without_labels_needs_a_class_count(tmp_path):
    np.savez(tmp_path / "unlabeled.npz", x=np.zeros((4, 7), np.float32), num_classes=3)
    dataset = data.load_npz(tmp_path / "unlabeled.npz")
    assert dataset.train_labels is None and dataset.num_classes == 3
    np.savez(tmp_path / "nothing.npz", x=np.zeros((4, 7), np.float32))
    with pytest.raises(data.DataError, match="nothing.npz: no labels, so the class count is unknown"):
        data.load_npz(tmp_path / "nothing.npz")


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"images": np.zeros((2, 4)), "labels": np.zeros(2)}, r"no array named 'x' \(found \['images', 'labels'\]\)"),
        ({"x": np.array([[np.nan, 0.0]]), "y": np.array([0])}, "train images contain NaN or Inf"),
        ({"x": np.zeros((2, 4)), "y": np.array([0, -2])}, r"'y' holds -2; labels are 0\.\.C-1, or -1 for a sample"),
        ({"x": np.zeros((2, 4)), "y": np.array([0, 1]), "num_classes": 1}, r"labels must lie in \[0, 1\), found 0..1"),
        ({"x": np.zeros((2, 4)), "y": np.array([0, 1, 1])}, "2 train images but labels of shape"),
        ({"x": np.zeros(5), "y": np.array([0])}, r"'x' has shape \(5,\)"),
        ({"x": np.zeros((2, 4), np.int64), "y": np.array([0, 1])}, "'x' has dtype int64; store uint8"),
        ({"x": np.zeros((2, 4)), "y": np.array([0.5, 1.0])}, "'y' must be a 1-D integer array"),
        ({"x": np.zeros((2, 4)), "y": np.array([0, 1]), "x_test": np.zeros((2, 5))}, "test images have shape"),
        ({"x": np.zeros((2, 4)), "y": np.array([0, 1]), "y_test": np.array([0])}, "test labels without test"),
    ],
)
def test_bad_npz_names_the_file_and_the_problem(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(data.DataError, match=message) as raised:
        data.load_npz(path)
    assert str(raised.value).startswith(f"{path}: ")


def test_npz_labels_outside_the_declared_classes(tmp_path):
    np.savez(tmp_path / "labels.npz", x=np.zeros((2, 4)), y=np.array([0, 3]), num_classes=3)
    with pytest.raises(data.DataError, match=r"labels.npz: .*labels must lie in \[0, 3\), found 0..3"):
        data.load_npz(tmp_path / "labels.npz")


def test_not_an_npz_file(tmp_path):
    np.save(tmp_path / "array.npy", np.zeros(3))
    for path in (tmp_path / "array.npy", tmp_path / "absent.npz"):
        with pytest.raises(data.DataError, match=rf"{path.name}: no such .npz file; save one with numpy.savez"):
            data.load_npz(path)


# ------------------------------------------------------------------------------------------- yin-yang
def test_yinyang_is_seeded_balanced_and_has_a_separate_test_sample():
    a, b, c = data.yinyang(100, seed=1), data.yinyang(100, seed=1), data.yinyang(100, seed=2)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    np.testing.assert_array_equal(a.test_images, b.test_images)
    assert not np.array_equal(a.train_images, c.train_images)
    assert a.train_images.shape == a.test_images.shape == (200, 2) and a.train_images.dtype == np.float32
    assert a.train_labels.dtype == np.int32 and a.num_classes == 2 and a.input_shape == (2,)
    np.testing.assert_array_equal(np.bincount(a.train_labels), [100, 100])
    np.testing.assert_array_equal(a.test_labels, a.train_labels)
    assert not np.any(np.isin(a.test_images[:, 0], a.train_images[:, 0]))  # drawn independently


@pytest.mark.parametrize("cls, centre, sign", [(0, (1 / 3, -1 / 10), 1.0), (1, (-1 / 3, 1 / 10), -1.0)])
@pytest.mark.parametrize("part", ["train", "test"])
def test_yinyang_sample_statistics_follow_eqs_10_to_12(part, cls, centre, sign):
    toy = data.yinyang(20000, seed=0)
    images, labels = getattr(toy, f"{part}_images"), getattr(toy, f"{part}_labels")
    offset = images[labels == cls] - np.array(centre, np.float32)
    # x = centre + r (cos phi, sign * sin phi), so |offset| = |r| and atan2(sign * dy, dx) = phi (mod 2 pi).
    radius = np.linalg.norm(offset, axis=1)
    # r ~ N(1, 1/4^2): r < 0 (z < -4) has probability 3e-5, so |r| has r's moments to well within the
    # tolerance; the standard errors of mean and std for 20,000 samples are 0.0018 and 0.0013.
    assert radius.mean() == pytest.approx(1.0, abs=0.01)
    assert radius.std() == pytest.approx(0.25, abs=0.01)
    # phi / pi ~ N(1/2, 1/3^2) lies in (-1/2, 3/2) for all but 0.27% of the samples (|z| > 3). atan2 / pi
    # lies in (-1, 1] and maps (1, 3/2) onto (-1, -1/2), so adding 2 below -1/2 recovers phi / pi for the
    # other 99.73%; each tail sample moves by 2 across the mean, which changes mean and std by < 0.005.
    # Standard errors for 20,000 samples: 0.0024 (mean), 0.0017 (std).
    angle = np.arctan2(sign * offset[:, 1], offset[:, 0]) / np.pi
    angle = np.where(angle < -0.5, angle + 2.0, angle)
    assert angle.mean() == pytest.approx(0.5, abs=0.012)
    assert angle.std() == pytest.approx(1 / 3, abs=0.012)


def test_yinyang_classes_are_the_two_mirrored_arcs():
    toy = data.yinyang(20000, seed=0)
    red, blue = toy.train_images[toy.train_labels == 0], toy.train_images[toy.train_labels == 1]
    # sin phi > 0 iff phi / pi in (0, 1), i.e. |z| < 3/2: probability 0.8664 (standard error here 0.0024).
    # Red lies above its centre (1/3, -1/10) that often, blue below its centre (-1/3, 1/10).
    assert np.mean(red[:, 1] > -0.1) == pytest.approx(0.8664, abs=0.01)
    assert np.mean(blue[:, 1] < 0.1) == pytest.approx(0.8664, abs=0.01)
    # E[r cos phi] = 0, so the class means are (1/3, -1/10 + c) and its mirror image (standard error 0.007).
    np.testing.assert_allclose(red.mean(0), -blue.mean(0), atol=0.03)


def test_balanced_initial_labels():
    labels = np.repeat(np.arange(10), 50)
    chosen = data.balanced_initial_labels(labels, per_class=10, seed=0)
    assert chosen.shape == (100,) and np.all(np.diff(chosen) > 0)  # sorted and distinct
    np.testing.assert_array_equal(np.bincount(labels[chosen]), [10] * 10)
    np.testing.assert_array_equal(chosen, data.balanced_initial_labels(labels, 10, seed=0))
    assert not np.array_equal(chosen, data.balanced_initial_labels(labels, 10, seed=1))
    with pytest.raises(data.DataError, match="class 3 has only 2 samples, fewer than the 4"):
        data.balanced_initial_labels(np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3]), 4, seed=0)
    with pytest.raises(data.DataError, match="class 1 has only 0 samples"):
        data.balanced_initial_labels(np.array([0, 0, 2, 2]), 1, seed=0)
    with pytest.raises(data.DataError, match="class 3 has only 0 samples"):
        data.balanced_initial_labels(np.array([0, 1, 2]), 1, seed=0, num_classes=4)


# ------------------------------------------------------------------------------------------- load()
def test_load_dispatches(mnist_dir, tmp_path):
    config = data.default_config()
    config.name, config.num_per_class, config.seed = "yinyang", 10, 4
    np.testing.assert_array_equal(data.load(config).train_images, data.yinyang(10, seed=4).train_images)
    config = data.default_config()
    config.data_dir = str(mnist_dir)  # a folder overrides the default "download"
    assert data.load(config).train_images.shape == (60000, 28, 28, 1)
    np.savez(tmp_path / "mine.npz", x=np.zeros((10, 3), np.float32), y=np.arange(10) % 2)
    config = data.default_config()
    config.name, config.path, config.test_fraction = "npz", str(tmp_path / "mine.npz"), 0.2
    assert data.load(config).test_images.shape == (2, 3)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"name": "cifar"}, r"data.name='cifar' is unknown; choose one of \('mnist', 'fashion_mnist'"),
        ({"source": "ftp"}, r"data.source='ftp' is unknown; choose one of \('dir', 'download', 'tfds'\)"),
        ({"source": "dir"}, r"data.source='dir' needs --config.data.data_dir"),
        ({"name": "npz"}, r"data.name='npz' needs --config.data.path"),
    ],
)
def test_load_rejects_bad_configs(fields, message):
    config = ml_collections.ConfigDict({**data.default_config().to_dict(), **fields})
    with pytest.raises(data.DataError, match=message):
        data.load(config)


# ------------------------------------------------------------------------------------------- progress
class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_logs_every_tenth_when_not_on_a_terminal(monkeypatch, caplog):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    caplog.set_level(logging.INFO)
    with progress.Progress(100, "work", log_every_seconds=0) as bar:
        for _ in range(100):
            bar.update(1)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("work: ")]
    assert [line.split()[1] for line in lines] == [f"{n}/100" for n in range(10, 101, 10)]
    caplog.clear()
    with progress.Progress(None, "slow", log_every_seconds=3600) as bar:
        bar.update(5)
        bar.update(7)
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == ["slow: 12"]  # once, at the end
    assert sys.stderr.getvalue() == ""


def test_progress_draws_one_line_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Terminal())
    items = list(progress.progress(range(7), "steps"))
    assert items == list(range(7))
    output = sys.stderr.getvalue()
    assert output.startswith("\rsteps [") and output.endswith("\n") and output.count("\n") == 1
    assert output.rsplit("\r", 1)[1].startswith(f"steps [{'#' * 30}] 7/7 (100%)")
