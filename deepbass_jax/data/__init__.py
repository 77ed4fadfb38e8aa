"""Data: MNIST / Fashion-MNIST (IDX files, checked), a user's `.npz`, and the yin-yang toy of eqs. 10-12.

Images are float32 in [0, 1] with shape [N, H, W, C] (or [N, D] for flat data); labels are int32 [N].
`load(config)` looks data.name up in LOADERS: "npz" is a user's file (npz.py), "yinyang" the toy (toy.py), and
"mnist" / "fashion_mnist" look data.source up in SOURCE_LOADERS: a folder of IDX files or a download into the
user cache (idx.py), or the optional tensorflow-datasets (tfds.py). A name LOADERS does not know goes to
ANY_NAME_SOURCES[data.source]: data.source="tfds" reads any tensorflow-datasets image-classification data set
(cifar10, svhn_cropped, ...). Every loader maps the `data` config (see `default_config`) to a `Dataset`
(dataset.py), so a new data set is one module and one line in LOADERS.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import ml_collections
import numpy as np

from deepbass_jax.data import folder, idx, npz, tfds, toy
from deepbass_jax.data.dataset import PIXEL_DIVISOR, DataError, Dataset
from deepbass_jax.data.idx import (CLASS_NAMES, IDX_FILES, KNOWN_SHA256, MIRRORS, default_cache_dir, download,
                                   load_idx_dir, read_idx)
from deepbass_jax.data.npz import load_npz
from deepbass_jax.data.tfds import load_tfds
from deepbass_jax.data.toy import YINYANG_ANGLES, YINYANG_CONSTANTS, yinyang
from deepbass_jax.data.toy import _yinyang_sample  # noqa: F401  (data._yinyang_sample: tests/toy_ablation_test.py)

__all__ = ["ANY_NAME_SOURCES", "CLASS_NAMES", "DataError", "Dataset", "IDX_FILES", "KNOWN_SHA256", "LOADERS",
           "MIRRORS", "NAMES", "PIXEL_DIVISOR", "SOURCES", "SOURCE_LOADERS", "YINYANG_ANGLES", "YINYANG_CONSTANTS",
           "balanced_initial_labels", "check_per_class", "default_cache_dir", "default_config", "download", "load",
           "load_idx_dir", "load_npz", "load_tfds", "read_idx", "yinyang"]

Loader = Callable[[ml_collections.ConfigDict], Dataset]  # the `data` config -> the data set it describes


def check_per_class(labels: np.ndarray, per_class: int, num_classes: int) -> None:
    """DataError unless each class 0..num_classes-1 has at least `per_class` samples among labels [N]."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes)[:num_classes]
    rarest = int(np.argmin(counts))
    if counts[rarest] < per_class:
        lower = f"lower config.initial_per_class to at most {counts[rarest]} (class {rarest} is the rarest), or "
        raise DataError(
            f"class {rarest} has only {counts[rarest]} samples, fewer than the {per_class} initial labels asked "
            f"per class; {lower if counts[rarest] else ''}use a larger pool (config.pool_size, 0 = all)."
        )


def balanced_initial_labels(labels: np.ndarray, per_class: int, seed: int,
                            num_classes: Optional[int] = None) -> np.ndarray:
    """labels [N] -> sorted indices [per_class * C], `per_class` of each class 0..C-1 (default_rng(seed)).

    C is `num_classes`, by default the largest label + 1, so a class with no sample at all is an error too.
    """
    labels = np.asarray(labels)
    classes = range(int(labels.max()) + 1 if num_classes is None else num_classes)
    check_per_class(labels, per_class, len(classes))
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in classes:
        chosen.append(rng.choice(np.flatnonzero(labels == cls), per_class, replace=False))
    return np.sort(np.concatenate(chosen))


# ------------------------------------------------------------------------------------------ load(config)
SOURCE_LOADERS: dict[str, Loader] = {  # data.source -> where mnist / fashion_mnist come from
    "dir": idx.from_dir,  # the IDX files in data.data_dir
    "download": idx.from_download,  # data.data_dir if set, else downloaded into data.cache_dir
    "tfds": tfds.from_config,  # tensorflow-datasets (an optional extra)
}


def _from_source(config: ml_collections.ConfigDict) -> Dataset:
    """mnist / fashion_mnist, from where data.source says."""
    if config.source not in SOURCE_LOADERS:
        raise DataError(f"data.source={config.source!r} is unknown; choose one of {SOURCES}.")
    return SOURCE_LOADERS[config.source](config)


LOADERS: dict[str, Loader] = {  # data.name -> its loader
    "mnist": _from_source,
    "fashion_mnist": _from_source,
    "yinyang": toy.from_config,
    "npz": npz.from_config,
    "folder": folder.from_config,  # a folder of PNG / JPEG images (folder.py; Pillow, an optional extra)
}
ANY_NAME_SOURCES: dict[str, Loader] = {  # data.source -> the loader of every data.name LOADERS does not know
    "tfds": tfds.from_config,  # the tensorflow-datasets builder data.name (cifar10, svhn_cropped, emnist, ...)
}
NAMES = tuple(LOADERS)
SOURCES = tuple(SOURCE_LOADERS)


def default_config() -> ml_collections.ConfigDict:
    """The `data` part of a run's config: which data set, and where it comes from."""
    config = ml_collections.ConfigDict()
    config.name = "mnist"  # "mnist", "fashion_mnist", "yinyang", "npz" or "folder"
    # mnist / fashion_mnist: "dir" (data_dir), "download" (into cache_dir) or "tfds"; "tfds" also reads any other
    # data.name from tensorflow-datasets (cifar10, svhn_cropped, kmnist, emnist, ...: an optional extra)
    config.source = "download"
    config.data_dir = ml_collections.config_dict.placeholder(str)  # IDX folder (overrides "download")
    # source="tfds": the tfds data_dir holding the prepared data set, where a missing one is downloaded to
    # (default: data_dir if set, else tfds' own, ~/tensorflow_datasets or $TFDS_DATA_DIR)
    config.tfds_data_dir = ml_collections.config_dict.placeholder(str)
    # download cache; name="folder": the decoded-image cache (default ~/.cache/deepbass_jax/<name or "folder">)
    config.cache_dir = ml_collections.config_dict.placeholder(str)
    config.path = ml_collections.config_dict.placeholder(str)  # name="npz": the .npz file; name="folder": the folder
    config.unlabeled_dir = ""  # name="folder": subfolder of path holding the unlabeled pool ("": path's top level)
    config.image_size = ""  # name="folder": "HxW" resizes every image (bilinear); "": all must share one size
    config.color = "auto"  # name="folder": "auto" (C=1 if every file is grayscale, else RGB), "gray" or "rgb"
    # name="npz" without x_test, or source="tfds" without a 'test' or 'validation' split: the fraction of the
    # labeled samples held out as test set
    config.test_fraction = 0.0
    config.num_per_class = 500  # name="yinyang": points per class, in the pool and in the test sample
    config.seed = 0  # yinyang: the sample; npz, tfds: the test split held out by test_fraction
    # "cat,dog,...": names of classes 0..C-1 for queries, pages and exports ("": the file's, or the folder's class
    # folders; name="folder" without class folders needs them, and with them they fix the order and add classes)
    config.class_names = ""
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
    loader = LOADERS.get(config.name) or ANY_NAME_SOURCES.get(config.get("source"))
    if loader is None:
        raise DataError(f"data.name={config.name!r} is unknown; choose one of {NAMES}, or set "
                        "--config.data.source=tfds to read it from tensorflow-datasets.")
    return loader(config)
