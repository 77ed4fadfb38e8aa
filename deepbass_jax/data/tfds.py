"""MNIST / Fashion-MNIST through tensorflow-datasets, an optional extra (pip install -e ".[tfds]").

tensorflow-datasets is imported only when this source is used. `from_config` is the loader of
`data.source="tfds"` in `load(config)`.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from deepbass_jax.data.dataset import PIXEL_DIVISOR, DataError, Dataset, unit_float
from deepbass_jax.data.idx import CLASS_NAMES, KNOWN_SHA256


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
        splits += [unit_float(np.concatenate([images for images, _ in batches]), pixel_divisor),
                   np.concatenate([labels for _, labels in batches]).astype(np.int32)]
    return Dataset(name, *splits, num_classes=10, class_names=CLASS_NAMES.get(name))


def from_config(config: ml_collections.ConfigDict) -> Dataset:
    """data.source="tfds": data.name from tensorflow-datasets, with data.data_dir as its data_dir."""
    return load_tfds(config.name, config.data_dir, config.pixel_divisor)
