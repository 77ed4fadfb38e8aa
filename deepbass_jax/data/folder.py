"""A user's folder of PNG / JPEG images: class folders are given labels, loose images the unlabeled pool.

    DIR/cat/*.png, DIR/dog/*.jpg    given labels; the class names are the folder names, sorted (or, with
                                    data.class_names=a,b,c, that order, and every class folder must be named there)
    DIR/*.png                       the unlabeled pool (or DIR/<data.unlabeled_dir>/**, with that set)
    DIR/test/cat/*.png              optional test split, by class folder ("test" is then no class)

Class folders and DIR/<unlabeled_dir> are read recursively; DIR's top level is not. Without any class folder the
classes come from data.class_names. Only *.png, *.jpg and *.jpeg count (any case); other files are ignored, and so
are hidden entries (a name starting with '.'), which therefore never become a class.

Pixels: as the files are, grayscale (C=1) when every image is grayscale, else RGB (C=3) for all (data.color="auto"),
or forced by data.color="gray" (Pillow's ITU-R 601-2 luma) / "rgb". Alpha is dropped. data.image_size="HxW" resizes
every image (Pillow, bilinear; a JPEG is first reduced in the decoder, as Image.draft does); without it, images of
different sizes are refused. uint8 pixels are divided by data.pixel_divisor.

Returned: the pool (every class-folder and unlabeled image, sorted by path) with `files` [N] (each one's path
relative to DIR, POSIX) and `given_labels` [N] (-1: unknown). `train_labels`, the hidden labels a simulated oracle
may reveal, is None unless every pool image sits in a class folder (then it equals `given_labels`).

Bad files are REFUSED, not skipped: every file is decoded first (the readable ones are cached), then one line names
how many could not be read and the first of them, so a run never trains on a silently smaller pool.
Nothing is read outside DIR: a symlink whose target lies outside DIR is refused.

Cache: decoding 20,000 files takes seconds, reading them back from the cache a fraction of one. Each folder holding
images has one .npz in data.cache_dir (default: default_cache_dir("folder")), under a hash of DIR's real path, per
data.image_size. An entry is reused while its file's path, size and modification time are unchanged; a changed,
new or removed file re-decodes only that file. A cache that cannot be read or written is skipped with a warning.

Pillow is an optional extra: pip install -e ".[folder]". `from_config` is the loader of data.name="folder".
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
import pathlib
import re
from typing import Iterator, Optional

import ml_collections
import numpy as np
from absl import logging

from deepbass_jax import progress
from deepbass_jax.data.dataset import PIXEL_DIVISOR, DataError, Dataset, unit_float
from deepbass_jax.data.idx import default_cache_dir

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # files that count as images (any case)
TEST_DIR = "test"  # DIR/test/CLASS/*: the test split
COLORS = ("auto", "gray", "rgb")  # data.color
CACHE_VERSION = 1  # bump when the cached pixels of a file would change
_DECODE_THREADS = 4  # the decoder releases the GIL on large files; small PNGs are Python-bound either way
_THREADS_ABOVE_BYTES = 32 * 1024  # mean file size above which decoding uses threads (below, they only contend)
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f,/\\]")  # no control characters, commas (class_names) or separators


def _pillow():
    """PIL.Image, or one line saying how to install the extra."""
    try:
        from PIL import Image  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise DataError(f"data.name='folder' needs Pillow ({error}): pip install -e \".[folder]\".") from error
    return Image


# ------------------------------------------------------------------------------------------ options
def parse_image_size(text: Optional[str]) -> Optional[tuple[int, int]]:
    """"HxW" (or "S" for SxS) -> (H, W); "" or None -> None (keep the files' size)."""
    if not text:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", str(text))
    if not match or int(match[1]) < 1 or int(match[2] or match[1]) < 1:
        raise DataError(f"data.image_size={text!r} is not a size; give HxW in pixels, e.g. "
                        "--config.data.image_size=28x28.")
    return int(match[1]), int(match[2] or match[1])


def check_class_name(name: str, where: str) -> str:
    """`name`, unless it would be unsafe as a folder or CSV field later (DataError naming `where`)."""
    if not name or name.startswith(".") or name != name.strip() or _UNSAFE_NAME.search(name):
        raise DataError(
            f"{where}: class name {name!r} is unsafe (empty, leading '.', surrounding spaces, a comma, a slash or a "
            "control character); rename it with letters, digits, spaces, '-' or '_'."
        )
    return name


# ------------------------------------------------------------------------------------------ the layout
@dataclasses.dataclass(frozen=True)
class Layout:
    """What DIR holds, before any pixel is read. Paths are relative to DIR, POSIX, sorted."""

    class_folders: tuple[str, ...]  # names of the class folders in DIR and DIR/test, sorted
    pool: tuple[tuple[str, Optional[str]], ...]  # (file, its class folder or None: unlabeled)
    test: tuple[tuple[str, str], ...]  # (file, its class folder)


def _check_inside(root: pathlib.Path, entry: os.DirEntry, relative: str) -> None:
    """Refuses `entry` when it is a symlink whose real path lies outside `root` (a real path). Other entries are
    inside: the walk only enters real folders inside `root`."""
    if entry.is_symlink():
        real = pathlib.Path(os.path.realpath(entry.path))
        if not real.is_relative_to(root):
            raise DataError(f"{root}: {relative} is a symlink to {real}, outside the folder; copy that file or "
                            "folder into it instead (nothing outside the data folder is read).")


def _entries(root: pathlib.Path, directory: pathlib.Path, relative: str, skipped: list[str]) -> list[tuple]:
    """(name, relative path, is_dir) of `directory`'s non-hidden entries, sorted; hidden ones go to `skipped`."""
    found = []
    with os.scandir(directory) as scan:
        for entry in scan:
            path = f"{relative}/{entry.name}" if relative else entry.name
            if entry.name.startswith("."):
                skipped.append(path)
                continue
            _check_inside(root, entry, path)
            if entry.is_dir():
                found.append((entry.name, path, True))
            elif entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES):
                found.append((entry.name, path, False))
    return sorted(found)


def _walk(root: pathlib.Path, relative: str, skipped: list[str], seen: set) -> Iterator[str]:
    """Every image file under DIR/relative, recursively (each real folder once: no symlink loops)."""
    real = os.path.realpath(root / relative)
    if real in seen:
        return
    seen.add(real)
    for _, path, is_dir in _entries(root, root / relative, relative, skipped):
        if is_dir:
            yield from _walk(root, path, skipped, seen)
        else:
            yield path


def scan(path, unlabeled_dir: str = "") -> Layout:
    """DIR -> its Layout; refuses symlinks out of DIR, unsafe class folder names and loose images in DIR/test."""
    root = pathlib.Path(os.path.realpath(pathlib.Path(path).expanduser()))
    if not root.is_dir():
        raise DataError(f"{path}: no such folder; give --config.data.path=DIR, a folder of class folders and images.")
    if unlabeled_dir and (unlabeled_dir in (".", "..", TEST_DIR) or "/" in unlabeled_dir or "\\" in unlabeled_dir):
        raise DataError(f"data.unlabeled_dir={unlabeled_dir!r} must name one folder in {root} (not {TEST_DIR!r}); "
                        "leave it empty for images at the top level.")
    skipped: list[str] = []
    pool, test, loose, classes, seen = [], [], [], set(), {str(root)}
    for name, relative, is_dir in _entries(root, root, "", skipped):
        if not is_dir:
            loose.append(relative)
        elif name == unlabeled_dir:
            pool += [(file, None) for file in _walk(root, relative, skipped, seen)]
        elif name == TEST_DIR:
            for class_name, class_path, class_is_dir in _entries(root, root / TEST_DIR, TEST_DIR, skipped):
                if not class_is_dir:
                    raise DataError(f"{root}: {class_path} lies loose in {TEST_DIR}/; put each test image in "
                                    f"{TEST_DIR}/CLASS/ so that its label is known.")
                classes.add(check_class_name(class_name, f"{root}/{class_path}"))
                test += [(file, class_name) for file in _walk(root, class_path, skipped, seen)]
        else:
            classes.add(check_class_name(name, f"{root}/{relative}"))
            pool += [(file, name) for file in _walk(root, relative, skipped, seen)]
    if unlabeled_dir and loose:
        raise DataError(f"{root}: {len(loose)} image(s) at the top level (first: {loose[0]}) but data.unlabeled_dir="
                        f"{unlabeled_dir!r} says the unlabeled pool is {unlabeled_dir}/; move them there, or leave "
                        "data.unlabeled_dir empty.")
    if unlabeled_dir and not (root / unlabeled_dir).is_dir():
        raise DataError(f"{root}: no folder {unlabeled_dir}/ for data.unlabeled_dir={unlabeled_dir!r}; create it or "
                        "leave data.unlabeled_dir empty (images at the top level).")
    pool += [(file, None) for file in loose]
    if skipped:
        logging.warning("%s: %d hidden entries ignored (first: %s).", root, len(skipped), skipped[0])
    return Layout(tuple(sorted(classes)), tuple(sorted(pool)), tuple(sorted(test)))


# ------------------------------------------------------------------------------------------ decoding
class _Unreadable(Exception):
    """A file Pillow cannot decode as PNG / JPEG."""


def decode(path, image_size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """One PNG / JPEG file -> uint8 [H, W] (grayscale) or [H, W, 3] (colour), resized to image_size (H, W)."""
    image_module = _pillow()
    try:
        with image_module.open(path, formats=("PNG", "JPEG")) as image:
            if image_size is not None and image.format == "JPEG":
                image.draft(image.mode, (image_size[1], image_size[0]))  # DCT scaling, at least the size asked
            image.load()
            pixels = _natural(image)
    except Exception as error:  # noqa: BLE001  (Pillow raises OSError, SyntaxError, ValueError, zlib.error, ...)
        raise _Unreadable(str(error) or type(error).__name__) from error
    if image_size is not None and pixels.shape[:2] != image_size:
        resized = image_module.fromarray(pixels).resize((image_size[1], image_size[0]),
                                                        image_module.Resampling.BILINEAR)
        pixels = np.asarray(resized)
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def _natural(image) -> np.ndarray:
    """A loaded Pillow image -> uint8 [H, W] or [H, W, 3], as the file is (alpha dropped, 16 bits -> 8)."""
    if image.mode in ("L", "1", "LA"):
        return np.asarray(image.convert("L") if image.mode != "L" else image)
    if image.mode.startswith("I"):  # 16-bit grayscale PNG
        return (np.asarray(image).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
    rgb = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    if image.mode in ("P", "PA") and (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0]  # a palette of grays (e.g. after pngquant) is a grayscale image
    return rgb


def to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """uint8 [H, W] or [H, W, 3] -> uint8 [H, W, channels]: gray -> RGB repeats it, RGB -> gray is Pillow's luma."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[-1] == channels:
        return pixels
    if channels == 3:
        return np.repeat(pixels, 3, axis=-1)
    weights = np.array([19595, 38470, 7471], np.uint32)  # ITU-R 601-2, as Pillow's convert("L")
    return ((pixels.astype(np.uint32) @ weights + 0x8000) >> 16).astype(np.uint8)[..., None]


# ------------------------------------------------------------------------------------------ the cache
def _size_tag(image_size: Optional[tuple[int, int]]) -> str:
    return "native" if image_size is None else f"{image_size[0]}x{image_size[1]}"


def _cache_file(cache_root: pathlib.Path, folder: str, image_size) -> pathlib.Path:
    digest = hashlib.sha256(folder.encode()).hexdigest()[:16]
    return cache_root / f"{digest}-{_size_tag(image_size)}.npz"


def _read_cache(file: pathlib.Path, folder: str) -> dict[str, tuple[int, int, np.ndarray]]:
    """{relative path: (size, mtime_ns, pixels)} of one folder's cache; {} when absent or unusable."""
    if not file.is_file():
        return {}
    try:
        with np.load(file, allow_pickle=False) as archive:
            if int(archive["version"]) != CACHE_VERSION or str(archive["folder"]) != folder:
                return {}
            names, sizes, mtimes = archive["names"], archive["sizes"], archive["mtimes"]
            shapes, offsets, pixels = archive["shapes"], archive["offsets"], archive["pixels"]
    except Exception as error:  # noqa: BLE001  (a damaged cache is rebuilt, never fatal)
        logging.warning("Ignoring the unreadable image cache %s (%s); it is rebuilt.", file, error)
        return {}
    return {str(name): (int(size), int(mtime), pixels[start:stop].reshape(tuple(shape) if shape[2] else shape[:2]))
            for name, size, mtime, shape, start, stop in zip(names, sizes, mtimes, shapes, offsets[:-1], offsets[1:])}


def _write_cache(file: pathlib.Path, folder: str, entries: dict[str, tuple[int, int, np.ndarray]]) -> None:
    """One folder's cache, written atomically (a temporary file renamed into place); a warning if it fails.

    Pixels are stored flat, one after the other; shapes [n, 3] are (H, W, C) with C = 0 for [H, W] grayscale."""
    names = sorted(entries)
    arrays = [entries[name][2] for name in names]
    shapes = np.array([(a.shape[0], a.shape[1], a.shape[2] if a.ndim == 3 else 0) for a in arrays], np.int64)
    offsets = np.concatenate([[0], np.cumsum([a.size for a in arrays], dtype=np.int64)]).astype(np.int64)
    temporary = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as handle:
            np.savez(handle, version=np.int64(CACHE_VERSION), folder=np.str_(folder), names=np.array(names, str),
                     sizes=np.array([entries[n][0] for n in names], np.int64),
                     mtimes=np.array([entries[n][1] for n in names], np.int64),
                     shapes=shapes.reshape(-1, 3), offsets=offsets,
                     pixels=np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0, np.uint8))
        os.replace(temporary, file)
    except OSError as error:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass
        logging.warning("Cannot write the image cache %s (%s); the next load decodes these files again.", file, error)


def read_images(root: pathlib.Path, files: list[str], image_size=None, cache_root=None) -> list[np.ndarray]:
    """files [N] (relative to root) -> N uint8 arrays [H, W] or [H, W, 3]; cached per folder when cache_root is set.

    Every file is decoded (or taken from the cache) before unreadable ones are refused in one line.
    """
    by_folder: dict[str, list[str]] = {}
    for file in files:
        by_folder.setdefault(file.rpartition("/")[0], []).append(file)
    stats = {file: os.stat(root / file) for file in files}
    loaded, missing, caches = {}, [], {}
    for folder, members in by_folder.items():
        cache_file = None if cache_root is None else _cache_file(cache_root, folder, image_size)
        cached = {} if cache_file is None else _read_cache(cache_file, folder)
        caches[folder] = (cache_file, cached)
        for file in members:
            hit = cached.get(file)
            if hit is not None and hit[:2] == (stats[file].st_size, stats[file].st_mtime_ns):
                loaded[file] = hit[2]
            else:
                missing.append(file)
    bad = _decode_all(root, missing, image_size, loaded)
    decoded = set(missing)
    for folder, (cache_file, cached) in caches.items():
        fresh = {file: (stats[file].st_size, stats[file].st_mtime_ns, loaded[file])
                 for file in by_folder[folder] if file in loaded}
        if cache_file is not None and (set(fresh) != set(cached) or not fresh.keys().isdisjoint(decoded)):
            _write_cache(cache_file, folder, fresh)
    if bad:
        file, reason = bad[0]
        raise DataError(f"{root}: {len(bad)} image file(s) cannot be read as PNG / JPEG, first {file} ({reason}); "
                        "re-save or remove them (the readable ones are cached).")
    logging.info("%s: %d images, %d decoded, %d from the cache.", root, len(files), len(missing),
                 len(files) - len(missing))
    return [loaded[file] for file in files]


def _decode_all(root: pathlib.Path, files: list[str], image_size, into: dict) -> list[tuple[str, str]]:
    """Decodes `files` into `into` {file: pixels}; returns [(file, reason)] of those that failed."""
    if not files:
        return []
    _pillow()

    def one(file):
        try:
            return file, decode(root / file, image_size), None
        except _Unreadable as error:
            return file, None, error

    mean_bytes = sum(os.path.getsize(root / file) for file in files[:256]) / min(len(files), 256)
    threads = min(_DECODE_THREADS, os.cpu_count() or 1) if mean_bytes > _THREADS_ABOVE_BYTES else 1
    bad = []
    with progress.Progress(len(files), f"decoding images in {root}", unit=" files") as bar, \
            concurrent.futures.ThreadPoolExecutor(threads) as pool:
        results = pool.map(one, files) if threads > 1 else map(one, files)
        for file, pixels, error in results:
            if error is None:
                into[file] = pixels
            else:
                bad.append((file, str(error)))
            bar.update()
    return bad


# ------------------------------------------------------------------------------------------ the data set
def stack(arrays: list[np.ndarray], files: list[str], channels: int) -> np.ndarray:
    """N uint8 arrays [H, W] or [H, W, 3] -> uint8 [N, H, W, channels]; images of two sizes are refused."""
    sizes = [pixels.shape[:2] for pixels in arrays]
    odd = next((i for i, size in enumerate(sizes) if size != sizes[0]), None)
    if odd is not None:
        (h0, w0), (h1, w1) = sizes[0], sizes[odd]
        raise DataError(
            f"images differ in size: {files[0]} is {h0}x{w0} but {files[odd]} is {h1}x{w1} (HxW); resize them all "
            f"with --config.data.image_size={h0}x{w0} (or any HxW)."
        )
    out = np.empty((len(arrays), *sizes[0], channels), np.uint8) if arrays else np.zeros((0, 1, 1, channels), np.uint8)
    for row, pixels in enumerate(arrays):
        out[row] = to_channels(pixels, channels)
    return out


def _class_indices(root: pathlib.Path, folders: tuple[str, ...], class_names: tuple[str, ...]) -> dict[str, int]:
    """{class folder: class index}: the folders sorted, or the order of data.class_names (which names them all)."""
    if not class_names:
        if not folders:
            raise DataError(f"{root}: no class folders (DIR/CLASS/*.png) and no --config.data.class_names=a,b,c, so "
                            "the classes are unknown; give either.")
        return {name: index for index, name in enumerate(folders)}
    for name in class_names:
        check_class_name(name, "data.class_names")
    if len(set(class_names)) != len(class_names):
        raise DataError(f"data.class_names={','.join(class_names)} names a class twice; name each class once.")
    unnamed = sorted(set(folders) - set(class_names))
    if unnamed:
        raise DataError(f"{root}: class folder(s) {unnamed} are not among data.class_names={','.join(class_names)}; "
                        "add them there, or drop --config.data.class_names to take the folder names.")
    return {name: index for index, name in enumerate(class_names)}


def load_folder(path, unlabeled_dir: str = "", class_names: tuple[str, ...] = (), image_size: str = "",
                color: str = "auto", cache_dir=None, pixel_divisor: float = PIXEL_DIVISOR,
                use_cache: bool = True) -> Dataset:
    """DIR (see the module docstring) -> Dataset: pool float32 [N, H, W, C] with `files` [N] and `given_labels` [N]
    (-1: unknown), the test split of DIR/test/CLASS/ if any. `cache_dir` None: default_cache_dir("folder")."""
    if color not in COLORS:
        raise DataError(f"data.color={color!r} is unknown; choose one of {COLORS}.")
    size = parse_image_size(image_size)
    _pillow()
    layout = scan(path, unlabeled_dir)
    root = pathlib.Path(os.path.realpath(pathlib.Path(path).expanduser()))
    classes = _class_indices(root, layout.class_folders, tuple(class_names))
    if not layout.pool:
        raise DataError(f"{root}: no PNG / JPEG images outside {TEST_DIR}/; put the images to label in it (loose, or "
                        "in DIR/CLASS/ when their class is known).")
    pool_files = [file for file, _ in layout.pool]
    test_files = [file for file, _ in layout.test]
    cache_root = None
    if use_cache:
        base = pathlib.Path(cache_dir).expanduser() if cache_dir else default_cache_dir("folder")
        cache_root = base / hashlib.sha256(str(root).encode()).hexdigest()[:16]
    arrays = read_images(root, pool_files + test_files, size, cache_root)
    channels = {"gray": 1, "rgb": 3, "auto": 3 if any(a.ndim == 3 for a in arrays) else 1}[color]
    try:
        pixels = stack(arrays, pool_files + test_files, channels)
    except DataError as error:
        raise DataError(f"{root}: {error}") from error
    images = unit_float(pixels, pixel_divisor)
    given = np.array([-1 if name is None else classes[name] for _, name in layout.pool], np.int32)
    test_labels = np.array([classes[name] for _, name in layout.test], np.int32)
    num_pool = len(pool_files)
    return Dataset(
        root.name, images[:num_pool], given.copy() if (given >= 0).all() else None,
        images[num_pool:] if test_files else None, test_labels if test_files else None, len(classes),
        ids=np.arange(num_pool, dtype=np.int64), class_names=tuple(classes),
        test_source=f"the class folders in {root}/{TEST_DIR}", files=tuple(pool_files), given_labels=given,
    )


def from_config(config: ml_collections.ConfigDict) -> Dataset:
    """data.name="folder": data.path with data.unlabeled_dir, class_names, image_size, color and cache_dir."""
    if not config.path:
        raise DataError("data.name='folder' needs --config.data.path=DIR, a folder of images (DIR/CLASS/*.png for "
                        "known labels).")
    names = tuple(name.strip() for name in config.class_names.split(",")) if config.get("class_names") else ()
    return load_folder(config.path, config.get("unlabeled_dir") or "", names, config.get("image_size") or "",
                       config.get("color") or "auto", config.get("cache_dir"), config.pixel_divisor)
