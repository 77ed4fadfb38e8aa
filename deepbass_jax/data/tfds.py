"""Any tensorflow-datasets image-classification data set (cifar10, svhn_cropped, kmnist, emnist, mnist, ...).

tensorflow-datasets is an optional extra (pip install -e ".[tfds]"), imported only when this source is used.
`from_config` is the loader of `data.source="tfds"` in `load(config)`: it reads the builder `data.name` from
`data.tfds_data_dir` (else data.data_dir, else tfds' own default, ~/tensorflow_datasets or $TFDS_DATA_DIR), and
downloads and prepares it there first if it is not prepared yet.

What it reads: the builder's Image feature as float32 [N, H, W, C] in [0, 1] (uint8 / data.pixel_divisor), any size
and any number of channels, and its ClassLabel feature as int32 labels, with the class names of
`info.features[label].names` (the features of `info.supervised_keys`, else 'image' and 'label'). The pool is the
'train' split. The test set is the 'test' split; a builder without one gives its 'validation' split, else
data.test_fraction > 0 holds that fraction of 'train' out (numpy default_rng(data.seed); pool ids stay the row
numbers of 'train'), else there is no test set and test accuracy is not measured.

TensorFlow: data prepared in a random-access format (array_record, parquet) is read through
`builder.as_data_source` without it. tfds' default tfrecord files, and preparing a catalogue data set (tfds encodes
its images with TensorFlow), need it; the tfds extra installs it.
"""

from __future__ import annotations

from typing import Optional

import ml_collections
import numpy as np
from absl import logging

from deepbass_jax import progress
from deepbass_jax.data.dataset import PIXEL_DIVISOR, DataError, Dataset, unit_float

# tfrecord (through tf.data): examples per batch. Not batch_size=-1: that batches by the recorded split size, which
# tfds.testing.mock_data leaves at 0, and TensorFlow then aborts the process (seen with tfds 4.9.10, TF 2.21).
_TFDS_BATCH = 10_000
_SOURCE_CHUNK = 1_000  # array_record / parquet: examples per `__getitems__` call of the data source
_TEST_SPLITS = ("test", "validation")  # the test set: the first of these splits the builder has
_INSTALL = 'pip install -e ".[tfds]"'


def load_tfds(name: str, data_dir=None, pixel_divisor: float = PIXEL_DIVISOR, test_fraction: float = 0.0,
              seed: int = 0) -> Dataset:
    """The tensorflow-datasets builder `name` ("cifar10", "emnist/letters", ...) in data_dir (None: tfds' default).

    Returns a Dataset of float32 images [N, H, W, C] in [0, 1] and int32 labels [N], with the builder's class names;
    the splits as the module docstring says. Prepares the data set first (a download) if data_dir lacks it.
    """
    tfds = _import_tfds()
    builder = _builder(tfds, name, data_dir)
    image_key, label_key = _feature_keys(tfds, builder, name)  # checked before anything is downloaded or read
    _prepare(builder, name)
    available = list(builder.info.splits)
    if "train" not in available:
        raise DataError(f"tfds {name}: no 'train' split to use as the pool (it has {available}); data.source='tfds' "
                        "reads 'train' and 'test'.")
    test_split = next((split for split in _TEST_SPLITS if split in available), None)
    if test_split and test_fraction:
        raise DataError(f"tfds {name}: its {test_split!r} split is the test set; set data.test_fraction=0 (it holds "
                        "a test set out of 'train' only for data sets without a 'test' or 'validation' split).")
    x, y = _read_split(tfds, builder, name, "train", image_key, label_key, pixel_divisor)
    ids = np.arange(len(x), dtype=np.int64)
    x_test = y_test = None
    test_source = f"the tfds {test_split!r} split"
    if test_split:
        if test_split != "test":
            logging.info("tfds %s has no 'test' split; its %r split is the test set.", name, test_split)
            test_source += " (it has no 'test' split)"
        x_test, y_test = _read_split(tfds, builder, name, test_split, image_key, label_key, pixel_divisor)
    elif test_fraction:
        num_test = round(test_fraction * len(x))
        if not 0 < num_test < len(x):
            raise DataError(f"tfds {name}: data.test_fraction={test_fraction} holds out {num_test} of the {len(x)} "
                            "'train' samples; choose a fraction that leaves samples on both sides.")
        order = np.random.default_rng(seed).permutation(len(x))
        test, train = np.sort(order[:num_test]), np.sort(order[num_test:])
        x, y, x_test, y_test, ids = x[train], y[train], x[test], y[test], ids[train]
        test_source = f"held out of the tfds 'train' split by data.test_fraction={test_fraction} (seed {seed})"
    else:
        logging.info("tfds %s has no 'test' or 'validation' split: no test set (data.test_fraction holds one out).",
                     name)
    label = builder.info.features[label_key]
    return Dataset(name, x, y, x_test, y_test, num_classes=label.num_classes, ids=ids,
                   class_names=tuple(label.names), test_source=test_source)


def _import_tfds():
    try:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise DataError(
            f"data.source='tfds' needs tensorflow-datasets ({error}): {_INSTALL}, or, for MNIST / Fashion-MNIST, use "
            "data.source='download' or 'dir'."
        ) from error
    return tfds


def _missing_package(name: str, doing: str, error: ImportError) -> DataError:
    """tfds needs a package to prepare or read `name`: the one line that says which and how to install it."""
    fix = f"{_INSTALL} installs TensorFlow" if "tensorflow" in str(error) else "install that package"
    return DataError(f"data.source='tfds': {doing} {name} needs a package that is missing "
                     f"({' '.join(str(error).split())}); {fix}.")


def _builder(tfds, name: str, data_dir):
    """tfds' builder of `name`: its catalogue entry, or a data set prepared in data_dir without code."""
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError as error:
        where = f" and none is prepared in {data_dir}" if data_dir else ""
        raise DataError(
            f"data.source='tfds': tensorflow-datasets has no data set called {name!r}{where}; give a name of its "
            "catalogue (tfds.list_builders()) or set data.tfds_data_dir to the folder it is prepared in."
        ) from error
    except ImportError as error:
        raise _missing_package(name, "the tfds builder of", error) from error
    return builder


def _prepare(builder, name: str) -> None:
    """Downloads and prepares the data set in the builder's data_dir unless it is there (tfds needs TensorFlow)."""
    if not builder.is_prepared():
        logging.info("tfds: preparing %s in %s (a download, once).", name, builder.data_dir)
        try:
            builder.download_and_prepare()
        except ImportError as error:
            raise _missing_package(name, "preparing", error) from error
        except Exception as error:  # a download or preparation failed: say where and what to do
            raise DataError(
                f"data.source='tfds': could not download and prepare {name} in {builder.data_dir} "
                f"({type(error).__name__}: {' '.join(str(error).split())[:300]}); check the network, or prepare it "
                "where there is one and point data.tfds_data_dir at that folder."
            ) from error


def _feature_keys(tfds, builder, name: str) -> tuple[str, str]:
    """The (image, label) feature names: info.supervised_keys, else 'image' and 'label'; checked."""
    features = builder.info.features
    keys = builder.info.supervised_keys
    if not (isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(key, str) for key in keys)):
        keys = ("image", "label")
    image_key, label_key = keys
    names = list(features.keys())
    if not (image_key in names and isinstance(features[image_key], tfds.features.Image)
            and label_key in names and isinstance(features[label_key], tfds.features.ClassLabel)):
        kinds = {key: type(features[key]).__name__ for key in names}
        raise DataError(
            f"tfds {name}: not an image-classification data set: data.source='tfds' reads an Image feature "
            f"{image_key!r} and a ClassLabel feature {label_key!r} (info.supervised_keys, else 'image' and 'label'); "
            f"it has {kinds}."
        )
    shape = tuple(features[image_key].shape)
    if None in shape:
        raise DataError(
            f"tfds {name}: its images have no fixed size (shape {shape}); data.source='tfds' needs one [H, W, C] for "
            "all: resize them and save them in an .npz (data.name=npz)."
        )
    return image_key, label_key


def _read_split(tfds, builder, name: str, split: str, image_key: str, label_key: str,
                pixel_divisor: float) -> tuple[np.ndarray, np.ndarray]:
    """One split -> (float32 images [N, H, W, C] in [0, 1], int32 labels [N])."""
    try:
        source = builder.as_data_source(split=split)
    except NotImplementedError:  # tfrecord: no random access, read through tf.data
        images, labels = _read_with_tensorflow(tfds, builder, name, split, image_key, label_key)
    else:
        images, labels = _read_source(source, name, split, image_key, label_key)
    if not len(labels):
        raise DataError(f"tfds {name}: its {split!r} split is empty; prepare it again (delete {builder.data_dir}).")
    return _unit_images(images, pixel_divisor), labels.astype(np.int32)


def _read_source(source, name: str, split: str, image_key: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """A random-access data source (array_record, parquet), in chunks, without TensorFlow."""
    images, labels = [], []
    with progress.Progress(len(source), f"reading tfds {name} {split}", unit=" images") as bar:
        for start in range(0, len(source), _SOURCE_CHUNK):
            examples = source.__getitems__(list(range(start, min(start + _SOURCE_CHUNK, len(source)))))
            images.append(np.stack([example[image_key] for example in examples]))
            labels.append(np.asarray([example[label_key] for example in examples]))
            bar.update(len(examples))
    return (np.concatenate(images), np.concatenate(labels)) if images else (np.zeros(0), np.zeros(0, np.int64))


def _read_with_tensorflow(tfds, builder, name: str, split: str, image_key: str,
                          label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """tfrecord files, through tf.data in batches of _TFDS_BATCH; only the two features are decoded (and batched)."""
    try:
        decoders = tfds.decode.PartialDecoding({image_key: True, label_key: True})
        dataset = builder.as_dataset(split=split, decoders=decoders, batch_size=_TFDS_BATCH)
        batches = list(tfds.as_numpy(dataset))
    except ImportError as error:
        raise _missing_package(name, f"reading the tfrecord files of the {split!r} split of", error) from error
    if not batches:
        return np.zeros(0), np.zeros(0, np.int64)
    return (np.concatenate([batch[image_key] for batch in batches]),
            np.concatenate([batch[label_key] for batch in batches]))


def _unit_images(images: np.ndarray, pixel_divisor: float) -> np.ndarray:
    """uint8 images / pixel_divisor; other unsigned integers / their largest value; float images as stored."""
    if images.dtype == np.uint8:
        return unit_float(images, pixel_divisor)
    if np.issubdtype(images.dtype, np.unsignedinteger):
        return np.divide(images, np.iinfo(images.dtype).max, dtype=np.float32)
    return images.astype(np.float32)


def from_config(config: ml_collections.ConfigDict) -> Dataset:
    """data.source="tfds": the builder data.name in data.tfds_data_dir (else data.data_dir, else tfds' default)."""
    data_dir: Optional[str] = config.get("tfds_data_dir") or config.get("data_dir")
    return load_tfds(config.name, data_dir, config.pixel_divisor, config.get("test_fraction", 0.0),
                     config.get("seed", 0))
