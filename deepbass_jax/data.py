"""Data: MNIST / Fashion-MNIST (IDX files, checked), a user's `.npz`, and the yin-yang toy of eqs. 10-12.

Images are float32 in [0, 1] with shape [N, H, W, C] (or [N, D] for flat data); labels are int32 [N].
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import pathlib
import time
import urllib.request
from typing import Optional, Sequence

import ml_collections
import numpy as np
from absl import logging

from deepbass_jax import progress


class DataError(ValueError):
    """Input data that cannot be used; the message names the file, the problem and the remedy."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    train_images: np.ndarray  # [N, H, W, C] or [N, D] float32: the pool
    train_labels: Optional[np.ndarray]  # [N] int32: hidden pool labels (None: a person must label)
    test_images: Optional[np.ndarray]  # [M, ...] float32
    test_labels: Optional[np.ndarray]  # [M] int32
    num_classes: int

    def __post_init__(self):
        for part in ("train", "test"):
            images, labels = getattr(self, f"{part}_images"), getattr(self, f"{part}_labels")
            if images is None:
                continue
            if not np.all(np.isfinite(images)):
                raise DataError(f"{self.name}: {part} images contain NaN or Inf values; clean the data first.")
            if labels is not None:
                if len(labels) != len(images):
                    raise DataError(f"{self.name}: {len(images)} {part} images but {len(labels)} labels.")
                if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
                    raise DataError(
                        f"{self.name}: {part} labels must lie in [0, {self.num_classes}), found "
                        f"{labels.min()}..{labels.max()}."
                    )

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_images.shape[1:])


# SHA-256 of the decompressed IDX files (the canonical distributions).
KNOWN_SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MIRRORS = {
    "mnist": [
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion_mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ],
}
_REMEDY = "delete it and run again to download it afresh, or point --config.data.data_dir at the original files"


def _decompressed_bytes(path: pathlib.Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise DataError(f"{path}: broken gzip data ({error}); {_REMEDY}.") from error
    return raw


def parse_idx(payload: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decoded IDX content (uint8 data only, as in MNIST) -> array of the stored shape."""
    if len(payload) < 4 or payload[0] != 0 or payload[1] != 0 or payload[2] != 0x08:
        raise DataError(
            f"{source}: not an IDX file of unsigned bytes (magic {payload[:4].hex() or 'missing'}, expected "
            f"00000801 or 00000803); {_REMEDY}."
        )
    ndim = payload[3]
    header = 4 + 4 * ndim
    if len(payload) < header:
        raise DataError(f"{source}: truncated IDX header ({len(payload)} bytes); {_REMEDY}.")
    dims = tuple(int.from_bytes(payload[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    found = len(payload) - header
    if found != expected:
        what = "truncated" if found < expected else "too long"
        raise DataError(
            f"{source}: {what}: dimensions {dims} need {expected} bytes of data, found {found}; {_REMEDY}."
        )
    return np.frombuffer(payload, np.uint8, offset=header).reshape(dims)


def read_idx(path, expected_sha256: Optional[str] = None) -> np.ndarray:
    """Reads a `.gz` or raw IDX file, checking magic, dimensions, length and the decompressed SHA-256."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; {_REMEDY}.")
    payload = _decompressed_bytes(path)
    if expected_sha256 is not None:
        digest = hashlib.sha256(payload).hexdigest()
        if digest != expected_sha256:
            raise DataError(
                f"{path}: checksum mismatch (SHA-256 of the content is {digest}, expected {expected_sha256}): "
                f"the file is corrupted or not the original; {_REMEDY}."
            )
    return parse_idx(payload, str(path))


def _find(data_dir: pathlib.Path, stem: str) -> pathlib.Path:
    for candidate in (data_dir / f"{stem}.gz", data_dir / stem):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{data_dir}: neither {stem}.gz nor {stem} is there; put the four IDX files of the data set in "
        f"this directory ({', '.join(IDX_FILES)}, gzipped or not), or leave data_dir unset to download them."
    )


def load_idx_dir(name: str, data_dir) -> Dataset:
    """MNIST-format data set from `data_dir`, every file checked against the known checksums."""
    if name not in KNOWN_SHA256:
        raise DataError(f"no IDX data set called {name!r}; choose one of {sorted(KNOWN_SHA256)}.")
    data_dir = pathlib.Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory does not exist; check --config.data.data_dir.")
    arrays, paths = {}, {}
    for stem in IDX_FILES:
        paths[stem] = _find(data_dir, stem)
        arrays[stem] = read_idx(paths[stem], KNOWN_SHA256[name][stem])
    splits = {}
    for split in ("train", "t10k"):
        images, labels = arrays[f"{split}-images-idx3-ubyte"], arrays[f"{split}-labels-idx1-ubyte"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"{paths[f'{split}-images-idx3-ubyte']} holds {images.shape} images but "
                f"{paths[f'{split}-labels-idx1-ubyte']} holds {labels.shape} labels; they must match; {_REMEDY}."
            )
        splits[split] = (images[..., None].astype(np.float32) / 255.0, labels.astype(np.int32))
    return Dataset(name, *splits["train"], *splits["t10k"], num_classes=10)


def default_cache_dir(name: str) -> pathlib.Path:
    root = os.environ.get("DEEPBASS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "deepbass_jax"
    )
    return pathlib.Path(root) / name


def _fetch(url: str, destination: pathlib.Path, expected_sha256: str, timeout: float) -> None:
    """One attempt: stream `url` into a temp file next to `destination`, verify, then rename atomically."""
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(temporary, "wb") as handle:
            total = int(response.headers.get("Content-Length") or 0) or None
            with progress.Progress(total, f"downloading {destination.name}", unit=" bytes") as bar:
                while chunk := response.read(1 << 16):
                    handle.write(chunk)
                    bar.update(len(chunk))
            handle.flush()
            os.fsync(handle.fileno())
        read_idx(temporary, expected_sha256)
        os.replace(temporary, destination)
    finally:
        if temporary.exists():
            temporary.unlink()


def download(
    name: str,
    cache_dir=None,
    mirrors: Optional[Sequence[str]] = None,
    retries: int = 3,
    timeout: float = 30.0,
    backoff_seconds: float = 1.0,
) -> pathlib.Path:
    """Makes sure the four IDX files of `name` are in the cache, downloading what is missing or broken.

    Each file is tried on every mirror in turn, `retries` times each; a download is verified (SHA-256 of
    the content) before it replaces anything. Returns the directory that holds the files.
    """
    if name not in KNOWN_SHA256:
        raise DataError(f"no downloadable data set called {name!r}; choose one of {sorted(KNOWN_SHA256)}.")
    directory = pathlib.Path(cache_dir) if cache_dir else default_cache_dir(name)
    directory.mkdir(parents=True, exist_ok=True)
    mirrors = list(mirrors if mirrors is not None else MIRRORS[name])
    for stem in IDX_FILES:
        destination = directory / f"{stem}.gz"
        if destination.exists():
            try:
                read_idx(destination, KNOWN_SHA256[name][stem])
                continue
            except DataError as error:
                logging.warning("Cached %s is unusable (%s); downloading it again.", destination, error)
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + f"/{stem}.gz"
            for attempt in range(1, retries + 1):
                try:
                    _fetch(url, destination, KNOWN_SHA256[name][stem], timeout)
                    break
                except DataError as error:  # corrupt content: another attempt on this mirror will not help
                    failures.append(f"{url}: {error}")
                    logging.warning("Mirror %s served a bad file: %s", url, error)
                    break
                except OSError as error:
                    failures.append(f"{url} (attempt {attempt}): {error}")
                    logging.warning("Download of %s failed (attempt %d/%d): %s", url, attempt, retries, error)
                    time.sleep(backoff_seconds * attempt)
            if destination.exists():
                break
        if not destination.exists():
            raise DataError(
                f"could not download {stem}.gz from any mirror:\n  " + "\n  ".join(failures)
                + f"\nDownload the files by hand into {directory}, or pass --config.data.data_dir."
            )
    return directory


def load_npz(path, num_classes: Optional[int] = None) -> Dataset:
    """A user's data: `x` [N, H, W, C], [N, H, W] or [N, D]; optional `y` [N], `x_test`, `y_test`."""
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such file; check --config.data.path.")
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    if "x" not in arrays:
        raise DataError(f"{path}: no array named 'x' (found {sorted(arrays)}); save the images as x=..., "
                        "the labels (optional) as y=....")

    def images(key):
        x = arrays[key]
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim not in (2, 4):
            raise DataError(f"{path}: '{key}' has shape {x.shape}; expected [N, H, W, C], [N, H, W] or [N, D].")
        x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise DataError(f"{path}: '{key}' contains NaN or Inf values; clean the data first.")
        return x

    def labels(key):
        if key not in arrays:
            return None
        y = arrays[key]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: '{key}' must be a 1-D integer array, got {y.dtype} {y.shape}.")
        return y.astype(np.int32)

    x, y = images("x"), labels("y")
    x_test = images("x_test") if "x_test" in arrays else None
    y_test = labels("y_test")
    known = [v for v in (y, y_test) if v is not None and len(v)]
    if num_classes is None:
        if "num_classes" in arrays:
            num_classes = int(arrays["num_classes"])
        elif known:
            num_classes = int(max(v.max() for v in known)) + 1
        else:
            raise DataError(f"{path}: no labels, so the class count is unknown; store num_classes=... in it.")
    try:
        return Dataset(path.stem, x, y, x_test, y_test, num_classes)
    except DataError as error:
        raise DataError(f"{path}: {error}") from error


def _yinyang_sample(rng: np.random.Generator, num_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Eqs. 10-12; the angle in units of pi, as in the authors' code."""
    points = []
    for centre, sign in (((1 / 3, -1 / 10), 1.0), ((-1 / 3, 1 / 10), -1.0)):
        radius = rng.normal(1.0, 1 / 4, num_per_class)
        angle = np.pi * rng.normal(1 / 2, 1 / 3, num_per_class)
        points.append(np.stack([centre[0] + radius * np.cos(angle), centre[1] + sign * radius * np.sin(angle)], 1))
    labels = np.repeat(np.arange(2, dtype=np.int32), num_per_class)
    return np.concatenate(points).astype(np.float32), labels


def yinyang(num_per_class: int = 500, seed: int = 0) -> Dataset:
    """The yin-yang toy of section 4: red (class 0) and blue (class 1), `num_per_class` each, plus an
    independent test sample of the same size. Seeded with numpy's default_rng(seed)."""
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    return Dataset("yinyang", *_yinyang_sample(train_rng, num_per_class), *_yinyang_sample(test_rng, num_per_class), 2)


def balanced_initial_labels(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted pool indices, exactly `per_class` of every class, chosen at random (seeded)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < per_class:
            raise DataError(
                f"class {cls} has only {len(members)} samples, fewer than the {per_class} initial labels "
                "asked per class; lower initial_per_class."
            )
        chosen.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(chosen))


_TFDS_NAMES = {"mnist": "mnist", "fashion_mnist": "fashion_mnist"}


def load_tfds(name: str, data_dir=None) -> Dataset:
    """MNIST / Fashion-MNIST through tensorflow-datasets (an optional extra)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise DataError(
            f"data.source='tfds' needs tensorflow-datasets: pip install -e \".[tfds]\" ({error})."
        ) from error
    if name not in _TFDS_NAMES:
        raise DataError(f"tfds source: no data set called {name!r}; choose one of {sorted(_TFDS_NAMES)}.")
    splits = []
    for split in ("train", "test"):
        images, labels = tfds.as_numpy(
            tfds.load(_TFDS_NAMES[name], split=split, as_supervised=True, batch_size=-1, data_dir=data_dir)
        )
        splits += [images.astype(np.float32) / 255.0, labels.astype(np.int32)]
    return Dataset(name, *splits, num_classes=10)


SOURCES = ("dir", "download", "tfds")
NAMES = ("mnist", "fashion_mnist", "yinyang", "npz")


def default_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "mnist"  # "mnist", "fashion_mnist", "yinyang" or "npz"
    config.source = "download"  # mnist / fashion_mnist: "dir" (data_dir), "download" (into the cache), "tfds"
    config.data_dir = ml_collections.config_dict.placeholder(str)  # folder with the IDX files; implies "dir"
    config.cache_dir = ml_collections.config_dict.placeholder(str)  # download cache (default ~/.cache/deepbass_jax)
    config.path = ml_collections.config_dict.placeholder(str)  # the .npz file for name="npz"
    config.num_per_class = 500  # yinyang: points per class, in the pool and in the test sample
    config.seed = 0  # yinyang: the sample's seed
    return config


def load(config: ml_collections.ConfigDict) -> Dataset:
    """The data set a `data` config describes."""
    if config.name not in NAMES:
        raise DataError(f"data.name={config.name!r} is unknown; choose one of {NAMES}.")
    if config.name == "yinyang":
        return yinyang(config.num_per_class, config.seed)
    if config.name == "npz":
        if not config.path:
            raise DataError("data.name='npz' needs --config.data.path=FILE.npz.")
        return load_npz(config.path)
    if config.data_dir:
        return load_idx_dir(config.name, config.data_dir)
    if config.source not in SOURCES:
        raise DataError(f"data.source={config.source!r} is unknown; choose one of {SOURCES}.")
    if config.source == "dir":
        raise DataError("data.source='dir' needs --config.data.data_dir=PATH (the folder with the IDX files).")
    if config.source == "tfds":
        return load_tfds(config.name, config.cache_dir)
    return load_idx_dir(config.name, download(config.name, config.cache_dir))
