"""Data: MNIST / Fashion-MNIST (IDX files, checked), a user's `.npz`, and the yin-yang toy of eqs. 10-12.

Images are float32 in [0, 1] with shape [N, H, W, C] (or [N, D] for flat data); labels are int32 [N].
Sources: a folder of IDX files (`load_idx_dir`), a download into the user cache (`download`), the optional
tensorflow-datasets (`load_tfds`), a user's `.npz` (`load_npz`) and the toy (`yinyang`); `load(config)` picks.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import math
import os
import pathlib
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from typing import Optional, Sequence

import ml_collections
import numpy as np
from absl import logging

from deepbass_jax import progress


class DataError(ValueError):
    """Input data that cannot be used; the message names the file, the problem and the remedy."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A pool (with its hidden labels) and a test set, checked on construction."""

    name: str
    train_images: np.ndarray  # [N, H, W, C] or [N, D] float32: the pool
    train_labels: Optional[np.ndarray]  # [N] int32: hidden pool labels (None: a person must label)
    test_images: Optional[np.ndarray]  # [M, ...] float32, same input shape as the pool
    test_labels: Optional[np.ndarray]  # [M] int32
    num_classes: int
    ids: Optional[np.ndarray] = None  # [N] int64: each pool sample's row in the user's file (None: its position)
    class_names: Optional[tuple[str, ...]] = None  # [num_classes] names shown to a person (None: the numbers)
    test_source: str = "the test split"  # where the test set comes from, in words

    def __post_init__(self):
        if self.ids is not None and np.shape(self.ids) != (len(self.train_images),):
            raise DataError(
                f"{self.name}: {len(self.train_images)} pool samples but ids of shape {np.shape(self.ids)}.")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise DataError(
                f"{self.name}: {len(self.class_names)} class names {list(self.class_names)} for {self.num_classes} "
                f"classes; give exactly one name per class 0..{self.num_classes - 1}."
            )
        if self.train_images.ndim < 2:
            raise DataError(f"{self.name}: images have shape {self.train_images.shape}; expected [N, ...].")
        if self.test_images is None and self.test_labels is not None:
            raise DataError(f"{self.name}: test labels without test images; give both or neither.")
        if self.test_images is not None and self.test_images.shape[1:] != self.input_shape:
            raise DataError(
                f"{self.name}: test images have shape {self.test_images.shape[1:]} but the pool has "
                f"{self.input_shape}; both must have the same input shape."
            )
        for part in ("train", "test"):
            images, labels = getattr(self, f"{part}_images"), getattr(self, f"{part}_labels")
            if images is not None and not np.all(np.isfinite(images)):
                bad = int((~np.isfinite(images)).reshape(len(images), -1).any(axis=1).sum())
                raise DataError(
                    f"{self.name}: {part} images contain NaN or Inf values ({bad} of {len(images)} samples); "
                    "replace or drop those samples first."
                )
            if labels is None:
                continue
            if labels.shape != (len(images),):
                raise DataError(
                    f"{self.name}: {len(images)} {part} images but labels of shape {labels.shape}; give exactly "
                    "one label per image."
                )
            if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise DataError(
                    f"{self.name}: {part} labels must lie in [0, {self.num_classes}), found "
                    f"{labels.min()}..{labels.max()}; number the classes 0, 1, ..., {self.num_classes - 1}."
                )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample: (H, W, C) or (D,)."""
        return tuple(self.train_images.shape[1:])

    @property
    def row_ids(self) -> np.ndarray:
        """[N] int64: the id of each pool sample, its row number in the user's file (before any test split)."""
        return np.arange(len(self.train_images), dtype=np.int64) if self.ids is None else self.ids

    def class_name(self, label: int) -> str:
        return str(label) if self.class_names is None else self.class_names[label]

    def evaluation(self) -> str:
        """How the run is evaluated, in words: said before any work is done."""
        if self.test_labels is None:
            return "no test set: test accuracy is not measured (the summary says 'no test set')"
        return f"test accuracy on {len(self.test_labels)} samples, {self.test_source}"


PIXEL_DIVISOR = 255.0  # uint8 pixels / 255 -> [0, 1]; the authors' code divided by 256 (data.pixel_divisor)


def _unit_float(pixels: np.ndarray, divisor: float = PIXEL_DIVISOR) -> np.ndarray:
    """uint8 pixels [...] (0..255) -> float32 [...] in [0, 255 / divisor]."""
    return np.divide(pixels, divisor, dtype=np.float32)


# ------------------------------------------------------------------------------------------ IDX files
# SHA-256 of the decompressed IDX files of the canonical distributions.
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
_REMEDY = "delete it and run again to download it afresh, or point --config.data.data_dir at the original files"


def _decode_idx(raw: bytes, expected_sha256: Optional[str]) -> np.ndarray:
    """Gzipped or raw IDX bytes -> uint8 array of the stored shape; DataError names the problem only."""
    payload = raw
    if raw[:2] == b"\x1f\x8b":
        try:
            payload = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"broken gzip data ({error})") from error
    if len(payload) < 4 or payload[:3] != b"\x00\x00\x08" or payload[3] == 0:
        raise DataError(
            f"not an IDX file of unsigned bytes (magic {payload[:4].hex() or 'missing'}, expected 00000801 "
            "for labels or 00000803 for images)"
        )
    ndim = payload[3]
    header = 4 + 4 * ndim
    if len(payload) < header:
        raise DataError(f"truncated: {len(payload)} bytes, too short for the header of {ndim} dimensions")
    dims = tuple(int.from_bytes(payload[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected, found = math.prod(dims), len(payload) - header
    if found != expected:
        what = "truncated" if found < expected else "too long"
        raise DataError(f"{what}: dimensions {dims} need {expected} bytes of data, found {found}")
    if expected_sha256 is not None:
        digest = hashlib.sha256(payload).hexdigest()
        if digest != expected_sha256:
            raise DataError(
                f"checksum mismatch (SHA-256 of the content is {digest}, expected {expected_sha256}): "
                "the file is corrupted or not the original"
            )
    return np.frombuffer(payload, np.uint8, offset=header).reshape(dims)


def read_idx(path, expected_sha256: Optional[str] = None) -> np.ndarray:
    """A `.gz` or raw IDX file -> read-only uint8 array of its shape ([N] labels, [N, 28, 28] images).

    Checks the magic number, the dimensions against the length, and (if given) the SHA-256 of the content.
    """
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror}); {_REMEDY}.") from error
    try:
        return _decode_idx(raw, expected_sha256)
    except DataError as error:
        raise DataError(f"{path}: {error}; {_REMEDY}.") from error


def _cached(directory: pathlib.Path, stem: str) -> Optional[pathlib.Path]:
    """`<stem>.gz`, else `<stem>`, in `directory`; None when neither is there."""
    return next((p for p in (directory / f"{stem}.gz", directory / stem) if p.is_file()), None)


def load_idx_dir(name: str, data_dir, pixel_divisor: float = PIXEL_DIVISOR) -> Dataset:
    """The four IDX files of `name` in `data_dir` (gzipped or not), each checked against KNOWN_SHA256; pixels
    divided by `pixel_divisor`."""
    if name not in KNOWN_SHA256:
        raise DataError(f"no IDX data set called {name!r}; choose one of {sorted(KNOWN_SHA256)}.")
    data_dir = pathlib.Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory does not exist; check --config.data.data_dir.")
    paths = {stem: _cached(data_dir, stem) for stem in IDX_FILES}
    missing = [f"{stem}.gz (or {stem})" for stem, path in paths.items() if path is None]
    if missing:
        raise DataError(
            f"{data_dir}: missing {', '.join(missing)}; put the four IDX files of {name} in this directory, "
            "gzipped or not, or leave data_dir unset to download them."
        )
    arrays = {stem: read_idx(path, KNOWN_SHA256[name][stem]) for stem, path in paths.items()}
    splits = []
    for split in ("train", "t10k"):
        images, labels = f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"
        if arrays[images].ndim != 3 or arrays[labels].ndim != 1 or len(arrays[images]) != len(arrays[labels]):
            raise DataError(
                f"{paths[images]} holds {arrays[images].shape} images but {paths[labels]} holds "
                f"{arrays[labels].shape} labels; they must match; {_REMEDY}."
            )
        splits += [_unit_float(arrays[images][..., None], pixel_divisor), arrays[labels].astype(np.int32)]
    return Dataset(name, *splits, num_classes=10, class_names=CLASS_NAMES.get(name))


# Fashion-MNIST's classes as its authors name them; MNIST's are the digits themselves.
CLASS_NAMES = {"fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                                 "Bag", "Ankle boot")}


# ------------------------------------------------------------------------------------------- download
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


def default_cache_dir(name: str) -> pathlib.Path:
    """$DEEPBASS_CACHE/<name>, else $XDG_CACHE_HOME/deepbass_jax/<name>, else ~/.cache/deepbass_jax/<name>."""
    root = os.environ.get("DEEPBASS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "deepbass_jax"
    )
    return pathlib.Path(root) / name


def _fetch(url: str, destination: pathlib.Path, expected_sha256: str, timeout: float) -> None:
    """One attempt: stream `url` to a temp file beside `destination`, verify it, then rename it into place."""
    handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    temporary = pathlib.Path(temporary)
    try:
        with os.fdopen(handle, "wb") as file, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with progress.Progress(total, f"downloading {url}", unit=" bytes") as bar:
                while chunk := response.read(1 << 16):
                    file.write(chunk)
                    bar.update(len(chunk))
            file.flush()
            os.fsync(file.fileno())
        _decode_idx(temporary.read_bytes(), expected_sha256)
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


def _download_file(stem: str, destination: pathlib.Path, expected_sha256: str, mirrors: Sequence[str],
                   retries: int, timeout: float, backoff_seconds: float) -> None:
    """Tries every mirror in turn, `retries` times each; DataError lists every failure."""
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + f"/{stem}.gz"
        for attempt in range(1, retries + 1):
            try:
                return _fetch(url, destination, expected_sha256, timeout)
            except DataError as error:  # corrupt content: another attempt at this mirror will not help
                failures.append(f"{url}: corrupted download: {error}")
                logging.warning("Mirror %s served a corrupted %s.gz (%s); trying the next one.", mirror, stem, error)
                break
            except (OSError, http.client.HTTPException) as error:
                failures.append(f"{url} (attempt {attempt} of {retries}): {error}")
                logging.warning("Mirror %s failed for %s.gz (attempt %d of %d): %s", mirror, stem, attempt,
                                retries, error)
                if isinstance(error, urllib.error.HTTPError) and error.code < 500 and error.code not in (408, 429):
                    break  # e.g. 404: the mirror does not have the file
                if attempt < retries:
                    time.sleep(backoff_seconds * attempt)
    raise DataError(
        f"could not download {stem}.gz from any of {len(mirrors)} mirrors:\n  " + "\n  ".join(failures)
        + f"\nDownload the four files by hand into {destination.parent}, or pass --config.data.data_dir."
    )


def download(name: str, cache_dir=None, mirrors: Optional[Sequence[str]] = None, retries: int = 3,
             timeout: float = 30.0, backoff_seconds: float = 1.0) -> pathlib.Path:
    """Makes sure the four IDX files of `name` are in the cache; returns that directory.

    Valid files already there (`.gz` or raw) are kept. Missing or broken ones are fetched from `mirrors`
    (default MIRRORS[name]) and checked (SHA-256 of the content) before they atomically replace anything.
    """
    if name not in KNOWN_SHA256:
        raise DataError(f"no downloadable data set called {name!r}; choose one of {sorted(KNOWN_SHA256)}.")
    directory = pathlib.Path(cache_dir).expanduser() if cache_dir else default_cache_dir(name)
    directory.mkdir(parents=True, exist_ok=True)
    mirrors = list(MIRRORS[name] if mirrors is None else mirrors)
    for stem in IDX_FILES:
        cached = _cached(directory, stem)
        if cached is not None:
            try:
                read_idx(cached, KNOWN_SHA256[name][stem])
                continue
            except DataError as error:
                logging.warning("Cached file is unusable, downloading it again: %s", error)
        _download_file(stem, directory / f"{stem}.gz", KNOWN_SHA256[name][stem], mirrors, retries, timeout,
                       backoff_seconds)
    return directory


# ------------------------------------------------------------------------------------ a user's .npz
def _npz_images(path: pathlib.Path, key: str, x: np.ndarray, pixel_divisor: float = PIXEL_DIVISOR) -> np.ndarray:
    """x [N, H, W, C], [N, H, W] or [N, D], uint8 (0..255) or float -> float32 with a channel axis for images."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim not in (2, 4):
        raise DataError(f"{path}: '{key}' has shape {x.shape}; expected [N, H, W, C], [N, H, W] or [N, D].")
    if x.dtype == np.uint8:
        return _unit_float(x, pixel_divisor)
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{path}: '{key}' has dtype {x.dtype}; store uint8 (0..255) or float images.")
    return x.astype(np.float32)


def _npz_labels(path: pathlib.Path, key: str, y: np.ndarray) -> np.ndarray:
    """y [N] of integers -> int32."""
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: '{key}' must be a 1-D integer array, got {y.dtype} {y.shape}.")
    return y.astype(np.int32)


def load_npz(path, test_fraction: float = 0.0, seed: int = 0, pixel_divisor: float = PIXEL_DIVISOR) -> Dataset:
    """A user's data: `x` [N, H, W, C], [N, H, W] or [N, D]; optional `y` [N], `x_test`, `y_test`, `num_classes`,
    `classes` [C] (class names).

    uint8 images are divided by `pixel_divisor`. Evaluation is one of three: the file's own `x_test`, `y_test`;
    or, without them, `test_fraction` > 0 holds out that fraction of the labeled `x` as the test set (numpy
    default_rng(seed)); or no test set. Pool ids stay the row numbers of `x` either way. Labels are 0..C-1:
    C is `num_classes`, else the number of `classes`, else the largest label + 1, and then every class must occur.
    """
    path = pathlib.Path(path).expanduser()
    if not path.is_file() or not zipfile.is_zipfile(path):
        raise DataError(f"{path}: no such .npz file; save one with numpy.savez(path, x=images, y=labels).")
    try:
        with np.load(path) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot be read ({error}); save it with numpy.savez, no object arrays.") from error
    if "x" not in arrays:
        raise DataError(f"{path}: no array named 'x' (found {sorted(arrays)}); save the images as x=..., "
                        "the labels (optional) as y=....")
    x = _npz_images(path, "x", arrays["x"], pixel_divisor)
    y = _npz_labels(path, "y", arrays["y"]) if "y" in arrays else None
    x_test = _npz_images(path, "x_test", arrays["x_test"], pixel_divisor) if "x_test" in arrays else None
    y_test = _npz_labels(path, "y_test", arrays["y_test"]) if "y_test" in arrays else None
    ids = np.arange(len(x), dtype=np.int64)
    if test_fraction:
        num_test = round(test_fraction * len(x))
        if x_test is not None or y is None or not 0 < num_test < len(x):
            raise DataError(
                f"{path}: test_fraction={test_fraction} needs labels 'y', no 'x_test', and samples on both sides "
                f"(here {num_test} of {len(x)} would be test samples); set test_fraction=0 to use the file as it is."
            )
        order = np.random.default_rng(seed).permutation(len(x))
        test, train = np.sort(order[:num_test]), np.sort(order[num_test:])
        x, y, x_test, y_test, ids = x[train], y[train], x[test], y[test], ids[train]
    test_source = (f"held out of the file's rows by data.test_fraction={test_fraction} (seed {seed})" if test_fraction
                   else "the file's x_test / y_test")
    class_names = _npz_class_names(path, arrays)
    num_classes = _npz_num_classes(path, arrays, [labels for labels in (y, y_test) if labels is not None],
                                   class_names)
    try:
        return Dataset(path.stem, x, y, x_test, y_test, num_classes, ids, class_names, test_source)
    except DataError as error:  # "<stem>: problem" -> "<path>: problem"
        raise DataError(f"{path}: {str(error).removeprefix(path.stem + ': ')}") from error


def _npz_class_names(path: pathlib.Path, arrays: dict) -> Optional[tuple[str, ...]]:
    if "classes" not in arrays:
        return None
    names = arrays["classes"]
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise DataError(f"{path}: 'classes' must be a 1-D array of names (strings), got {names.dtype} {names.shape}; "
                        "save it as classes=np.array(['cat', 'dog', ...]).")
    return tuple(str(n.decode() if isinstance(n, bytes) else n) for n in names)


def _npz_num_classes(path: pathlib.Path, arrays: dict, labels: list[np.ndarray],
                     class_names: Optional[tuple[str, ...]]) -> int:
    """C of the file; labels numbered other than 0..C-1 are refused with the fix."""
    labeled = [y for y in labels if len(y)]
    if "num_classes" in arrays:
        return int(arrays["num_classes"])
    if class_names is not None:
        return len(class_names)
    if not labeled:
        raise DataError(f"{path}: no labels, so the class count is unknown; store num_classes=... (or classes=[names]) "
                        "in it.")
    everything = np.concatenate(labeled)
    low, high = int(everything.min()), int(everything.max())
    absent = sorted(set(range(high + 1)) - set(np.unique(everything).tolist()))
    if low >= 0 and absent:
        fix = (f"store y - {low} (and y_test - {low}) to number them 0..{high - low}" if absent == list(range(low))
               else f"renumber the classes 0..C-1, or store num_classes={high + 1} if those classes really have no "
                    "sample")
        raise DataError(
            f"{path}: labels run {low}..{high} but class(es) {absent[:10]}{'...' if len(absent) > 10 else ''} never "
            f"occur; labels must be 0..C-1 with C classes: {fix}."
        )
    return high + 1


# -------------------------------------------------------------------------------------------- yin-yang
YINYANG_ANGLES = ("pi", "radians")  # units of eq. 10's angle; see _yinyang_sample
YINYANG_CONSTANTS = {  # name -> (centre x, centre y, std of phi) of eqs. 10-12; see _yinyang_sample
    "paper": (1 / 3, 1 / 10, 1 / 3),
    "authors": (0.33, 0.1, 0.33),
}


def _yinyang_sample(rng: np.random.Generator, num_per_class: int, angle: str = "pi",
                    constants: str = "paper") -> tuple[np.ndarray, np.ndarray]:
    """Eqs. 10-12 -> points [2 * num_per_class, 2] float32, labels [2 * num_per_class] int32 (red 0, blue 1).

    r ~ N(1, (1/4)^2); red = (a, -b) + r (cos phi, sin phi), blue = (-a, b) + r (cos phi, -sin phi) with
    (a, b) = (1/3, 1/10) ("paper", eqs. 11-12) or (0.33, 0.1) ("authors": the constants of the authors'
    helpers.generate2Dcase, which also takes 0.33 for the 1/3 of phi's std).
    angle "pi": phi = pi * N(1/2, (1/3)^2), the angle in units of pi as in the authors' code (two interlocked
    half-moons, Figs. 1-2); "radians": phi ~ N(1/2, (1/3)^2) in radians, eq. 10 read literally (two short arcs
    around 29 degrees: nearly separable blobs, unlike the figures).
    """
    if angle not in YINYANG_ANGLES:
        raise DataError(f"yinyang angle={angle!r} is unknown; choose one of {YINYANG_ANGLES}.")
    if constants not in YINYANG_CONSTANTS:
        raise DataError(f"yinyang constants={constants!r} are unknown; choose one of {sorted(YINYANG_CONSTANTS)}.")
    a, b, angle_std = YINYANG_CONSTANTS[constants]
    unit = np.pi if angle == "pi" else 1.0
    points = []
    for centre, sign in (((a, -b), 1.0), ((-a, b), -1.0)):
        radius = rng.normal(1.0, 1 / 4, num_per_class)
        phi = unit * rng.normal(1 / 2, angle_std, num_per_class)
        points.append(np.stack([centre[0] + radius * np.cos(phi), centre[1] + sign * radius * np.sin(phi)], 1))
    labels = np.repeat(np.arange(2, dtype=np.int32), num_per_class)
    return np.concatenate(points).astype(np.float32), labels


def yinyang(num_per_class: int = 500, seed: int = 0, *, test_per_class: Optional[int] = None, angle: str = "pi",
            constants: str = "paper") -> Dataset:
    """The yin-yang toy of section 4: red (class 0) and blue (class 1), `num_per_class` each, pool [2n, 2].

    The test sample has `test_per_class` points per class (None: `num_per_class`, as the authors' code), drawn
    independently: pool and test use the two streams that numpy's SeedSequence(seed).spawn(2) gives to
    default_rng. `angle` and `constants`: see `_yinyang_sample` (the defaults are the paper's eqs. 10-12 with
    the angle in units of pi).
    """
    pool_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    test_per_class = num_per_class if test_per_class is None else test_per_class
    return Dataset("yinyang", *_yinyang_sample(pool_rng, num_per_class, angle, constants),
                   *_yinyang_sample(test_rng, test_per_class, angle, constants), 2,
                   test_source="drawn independently of the pool (eqs. 10-12)")


def balanced_initial_labels(labels: np.ndarray, per_class: int, seed: int,
                            num_classes: Optional[int] = None) -> np.ndarray:
    """labels [N] -> sorted indices [per_class * C], `per_class` of each class 0..C-1 (default_rng(seed)).

    C is `num_classes`, by default the largest label + 1, so a class with no sample at all is an error too.
    """
    labels = np.asarray(labels)
    classes = range(int(labels.max()) + 1 if num_classes is None else num_classes)
    counts = np.bincount(labels, minlength=len(classes))[: len(classes)]
    rarest = int(np.argmin(counts))
    if counts[rarest] < per_class:
        lower = f"lower config.initial_per_class to at most {counts[rarest]} (class {rarest} is the rarest), or "
        raise DataError(
            f"class {rarest} has only {counts[rarest]} samples, fewer than the {per_class} initial labels asked "
            f"per class; {lower if counts[rarest] else ''}use a larger pool (config.pool_size, 0 = all)."
        )
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in classes:
        chosen.append(rng.choice(np.flatnonzero(labels == cls), per_class, replace=False))
    return np.sort(np.concatenate(chosen))


# -------------------------------------------------------------------------------- tensorflow-datasets
# Not batch_size=-1: that batches by the recorded split size, which tfds.testing.mock_data leaves at 0, and
# TensorFlow then aborts the process (seen with tfds 4.9.10, TF 2.21).
_TFDS_BATCH = 10_000


def load_tfds(name: str, data_dir=None, pixel_divisor: float = PIXEL_DIVISOR) -> Dataset:
    """MNIST / Fashion-MNIST through tensorflow-datasets (an optional extra), as float32 [N, 28, 28, 1]."""
    if name not in KNOWN_SHA256:  # tensorflow-datasets uses the same names
        raise DataError(f"tfds source: no data set called {name!r}; choose one of {sorted(KNOWN_SHA256)}.")
    try:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise DataError(
            f"data.source='tfds' needs tensorflow-datasets ({error}): pip install -e \".[tfds]\", or use "
            "data.source='download' or 'dir'."
        ) from error
    splits = []
    for split in ("train", "test"):
        batches = list(tfds.as_numpy(
            tfds.load(name, split=split, as_supervised=True, batch_size=_TFDS_BATCH, data_dir=data_dir)
        ))
        splits += [_unit_float(np.concatenate([images for images, _ in batches]), pixel_divisor),
                   np.concatenate([labels for _, labels in batches]).astype(np.int32)]
    return Dataset(name, *splits, num_classes=10, class_names=CLASS_NAMES.get(name))


# ------------------------------------------------------------------------------------------ load(config)
NAMES = ("mnist", "fashion_mnist", "yinyang", "npz")
SOURCES = ("dir", "download", "tfds")


def default_config() -> ml_collections.ConfigDict:
    """The `data` part of a run's config: which data set, and where it comes from."""
    config = ml_collections.ConfigDict()
    config.name = "mnist"  # "mnist", "fashion_mnist", "yinyang" or "npz"
    config.source = "download"  # mnist / fashion_mnist: "dir" (data_dir), "download" (into cache_dir) or "tfds"
    config.data_dir = ml_collections.config_dict.placeholder(str)  # IDX folder (overrides "download"); tfds data_dir
    config.cache_dir = ml_collections.config_dict.placeholder(str)  # download cache (default ~/.cache/deepbass_jax)
    config.path = ml_collections.config_dict.placeholder(str)  # name="npz": the .npz file
    config.test_fraction = 0.0  # name="npz" without x_test: fraction of the labeled x held out as test set
    config.num_per_class = 500  # name="yinyang": points per class, in the pool and in the test sample
    config.seed = 0  # yinyang: the sample; npz: the test split
    config.class_names = ""  # "cat,dog,...": names of classes 0..C-1 for queries, pages and exports ("": the file's)
    # uint8 pixels are divided by this: 255 maps them onto [0, 1] (every recorded result); the authors' code
    # divided by 256, a 0.4 % smaller input scale (--config.data.pixel_divisor=256)
    config.pixel_divisor = PIXEL_DIVISOR
    return config


def load(config: ml_collections.ConfigDict) -> Dataset:
    """The data set a `data` config (see `default_config`) describes, with config.class_names if given."""
    dataset = _load(config)
    if config.get("class_names"):
        names = tuple(name.strip() for name in config.class_names.split(","))
        if len(names) != dataset.num_classes:
            raise DataError(
                f"data.class_names names {len(names)} classes ({', '.join(names)}) but {dataset.name} has "
                f"{dataset.num_classes}; give one comma-separated name per class 0..{dataset.num_classes - 1}."
            )
        dataset = dataclasses.replace(dataset, class_names=names)
    return dataset


def _load(config: ml_collections.ConfigDict) -> Dataset:
    if config.name not in NAMES:
        raise DataError(f"data.name={config.name!r} is unknown; choose one of {NAMES}.")
    if config.name == "yinyang":
        return yinyang(config.num_per_class, config.seed)
    if config.name == "npz":
        if not config.path:
            raise DataError("data.name='npz' needs --config.data.path=FILE.npz.")
        return load_npz(config.path, config.test_fraction, config.seed, config.pixel_divisor)
    if config.source not in SOURCES:
        raise DataError(f"data.source={config.source!r} is unknown; choose one of {SOURCES}.")
    if config.source == "tfds":
        return load_tfds(config.name, config.data_dir, config.pixel_divisor)
    if config.data_dir:
        return load_idx_dir(config.name, config.data_dir, config.pixel_divisor)
    if config.source == "dir":
        raise DataError("data.source='dir' needs --config.data.data_dir=PATH (the folder with the IDX files).")
    return load_idx_dir(config.name, download(config.name, config.cache_dir), config.pixel_divisor)
