"""The Dataset every source returns, its error, and uint8 pixels -> floats: what the sources share.

Kept apart from `__init__`, which imports every source, so that a source can import these without a cycle.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np


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
    # [N] each pool sample's file, a POSIX path relative to the user's folder (None: no files, e.g. an .npz)
    files: Optional[tuple[str, ...]] = None
    # [N] int32 labels the user gave with the data (a folder's class folders), -1 where unknown (None: none given);
    # unlike train_labels, these are no secret of a simulated oracle
    given_labels: Optional[np.ndarray] = None

    def __post_init__(self):
        if self.ids is not None and np.shape(self.ids) != (len(self.train_images),):
            raise DataError(
                f"{self.name}: {len(self.train_images)} pool samples but ids of shape {np.shape(self.ids)}.")
        for field in ("files", "given_labels"):
            if getattr(self, field) is not None and len(getattr(self, field)) != len(self.train_images):
                raise DataError(f"{self.name}: {len(self.train_images)} pool samples but {field} of length "
                                f"{len(getattr(self, field))}; give one per pool sample (or None).")
        given = self.given_labels
        if given is not None and len(given) and (given.min() < -1 or given.max() >= self.num_classes):
            raise DataError(f"{self.name}: given labels must lie in [0, {self.num_classes}) or be -1 (unknown), found "
                            f"{given.min()}..{given.max()}.")
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


def unit_float(pixels: np.ndarray, divisor: float = PIXEL_DIVISOR) -> np.ndarray:
    """uint8 pixels [...] (0..255) -> float32 [...] in [0, 255 / divisor]."""
    return np.divide(pixels, divisor, dtype=np.float32)
