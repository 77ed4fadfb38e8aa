"""A user's data set in one `.npz` file: images `x`, optional labels `y`, test split and class names.

`load_npz` reads and checks the file; `from_config` is the loader of `data.name="npz"` in `load(config)`.
"""

from __future__ import annotations

import pathlib
import zipfile
from typing import Optional

import ml_collections
import numpy as np

from deepbass_jax.data.dataset import PIXEL_DIVISOR, DataError, Dataset, unit_float


def _npz_images(path: pathlib.Path, key: str, x: np.ndarray, pixel_divisor: float = PIXEL_DIVISOR) -> np.ndarray:
    """x [N, H, W, C], [N, H, W] or [N, D], uint8 (0..255) or float -> float32 with a channel axis for images."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim not in (2, 4):
        raise DataError(f"{path}: '{key}' has shape {x.shape}; expected [N, H, W, C], [N, H, W] or [N, D].")
    if x.dtype == np.uint8:
        return unit_float(x, pixel_divisor)
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
    A `y` of -1 marks a sample nobody labeled yet: then `y` gives the known labels (`Dataset.given_labels`, ground
    truth from the start, test_fraction drawn among them) and a person labels the rest (config.oracle=file).
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
    if y is not None and len(y) and y.min() < -1:
        raise DataError(f"{path}: 'y' holds {y.min()}; labels are 0..C-1, or -1 for a sample nobody labeled yet.")
    if test_fraction:
        labeled_rows = np.arange(len(x)) if y is None else np.flatnonzero(y >= 0)
        num_test = round(test_fraction * len(labeled_rows))
        if x_test is not None or y is None or not 0 < num_test < len(x):
            raise DataError(
                f"{path}: test_fraction={test_fraction} needs labels 'y', no 'x_test', and samples on both sides "
                f"(here {num_test} of {len(x)} would be test samples); set test_fraction=0 to use the file as it is."
            )
        order = np.random.default_rng(seed).permutation(labeled_rows)  # test samples come from the labeled rows
        test = np.sort(order[:num_test])
        train = np.setdiff1d(np.arange(len(x)), test)
        x, y, x_test, y_test, ids = x[train], y[train], x[test], y[test], ids[train]
    test_source = (f"held out of the file's rows by data.test_fraction={test_fraction} (seed {seed})" if test_fraction
                   else "the file's x_test / y_test")
    class_names = _npz_class_names(path, arrays)
    num_classes = _npz_num_classes(path, arrays, [labels[labels >= 0] for labels in (y, y_test) if labels is not None],
                                   class_names)
    partly = y is not None and (y < 0).any()  # -1: unknown; the known labels are ground truth from the start
    try:
        return Dataset(path.stem, x, None if partly else y, x_test, y_test, num_classes, ids, class_names, test_source,
                       given_labels=y if partly else None)
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


def from_config(config: ml_collections.ConfigDict) -> Dataset:
    """data.name="npz": the file data.path, with data.test_fraction and data.seed."""
    if not config.path:
        raise DataError("data.name='npz' needs --config.data.path=FILE.npz.")
    return load_npz(config.path, config.test_fraction, config.seed, config.pixel_divisor)
