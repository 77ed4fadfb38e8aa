"""MNIST / Fashion-MNIST as IDX files: read and checked (SHA-256), or downloaded from mirrors into a cache.

`read_idx` reads one file, `load_idx_dir` a folder of the four, `download` fills the cache; `from_dir` and
`from_download` are the `data.source` loaders "dir" and "download" of `load(config)`.
"""

from __future__ import annotations

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
import zlib
from typing import Optional, Sequence

import ml_collections
import numpy as np
from absl import logging

from deepbass_jax import progress
from deepbass_jax.data.dataset import PIXEL_DIVISOR, DataError, Dataset, unit_float

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
        splits += [unit_float(arrays[images][..., None], pixel_divisor), arrays[labels].astype(np.int32)]
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


# ------------------------------------------------------------------------------ data.source loaders
def from_dir(config: ml_collections.ConfigDict) -> Dataset:
    """data.source="dir": the IDX files of data.name in data.data_dir."""
    if not config.data_dir:
        raise DataError("data.source='dir' needs --config.data.data_dir=PATH (the folder with the IDX files).")
    return load_idx_dir(config.name, config.data_dir, config.pixel_divisor)


def from_download(config: ml_collections.ConfigDict) -> Dataset:
    """data.source="download": the IDX files of data.name in data.data_dir if set, else downloaded into the cache."""
    folder = config.data_dir or download(config.name, config.cache_dir)
    return load_idx_dir(config.name, folder, config.pixel_divisor)
