"""data.source="tfds": any tensorflow-datasets image-classification data set, read without TensorFlow.

The data sets are tiny builders defined here and prepared into a tmp data_dir in a random-access format (parquet,
array_record), which tensorflow-datasets writes and reads without TensorFlow: the images are given as PNG bytes
(encoded with Pillow), so tfds never encodes one. The test extra installs tensorflow-datasets, not TensorFlow.
"""

import importlib.util
import io
import sys

import ml_collections
import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from deepbass_jax import data

HAS_TENSORFLOW = importlib.util.find_spec("tensorflow") is not None
FILE_FORMATS = ["parquet", pytest.param("array_record", marks=pytest.mark.skipif(
    importlib.util.find_spec("array_record") is None, reason="array_record has wheels for Linux only"))]


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels).save(buffer, format="png")
    return buffer.getvalue()


def _pixels(shape, split: str, index: int) -> np.ndarray:
    """uint8 [H, W, C] of sample `index` of `split`: pixel 0 is 0, pixel 1 is 255, the rest random."""
    pixels = np.random.default_rng([len(split), index]).integers(0, 256, shape, dtype=np.uint8)
    pixels.reshape(-1)[:2] = (0, 255)
    return pixels


class _Tiny(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A small image-classification builder: IMAGE_SHAPE images, one label per sample, SPLITS = {split: size}."""

    VERSION = tfds.core.Version("1.0.0")
    IMAGE_SHAPE, CLASSES, SPLITS = (8, 8, 3), ("red", "green", "blue"), {"train": 12, "test": 6}
    KEYS = ("image", "label")  # the feature names, also the supervised keys
    SUPERVISED = True

    def _info(self):
        image_key, label_key = self.KEYS
        return tfds.core.DatasetInfo(
            builder=self, disable_shuffling=True,  # examples stay in the order generated: label i % C
            features=tfds.features.FeaturesDict({image_key: tfds.features.Image(shape=self.IMAGE_SHAPE),
                                                 label_key: tfds.features.ClassLabel(names=self.CLASSES),
                                                 "note": tfds.features.Text()}),
            supervised_keys=self.KEYS if self.SUPERVISED else None)

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split, size) for split, size in self.SPLITS.items()}

    def _generate_examples(self, split, size):
        image_key, label_key = self.KEYS
        for index in range(size):
            yield index, {image_key: _png(_pixels(self.IMAGE_SHAPE, split, index)),
                          label_key: index % len(self.CLASSES), "note": f"{split} {index}"}


class DeepbassTinyColour(_Tiny):
    """8x8 RGB, 3 named classes, 'train' and 'test'; registered, as a catalogue data set is."""


class DeepbassTinyGray(_Tiny, skip_registration=True):
    """6x10 grayscale under other feature names, 'train' and 'validation' only; known to tfds by its files only."""

    IMAGE_SHAPE, CLASSES, SPLITS, KEYS = (6, 10, 1), ("no", "yes"), {"train": 10, "validation": 4}, ("pic", "kind")


class DeepbassTinyTrainOnly(_Tiny, skip_registration=True):
    """8x8 RGB, only a 'train' split, no supervised keys (so the features 'image' and 'label' are read)."""

    SPLITS, SUPERVISED = {"train": 20}, False


def _prepare(builder_class, data_dir, file_format="parquet") -> str:
    builder_class(data_dir=str(data_dir), file_format=file_format).download_and_prepare()
    return str(data_dir)


def _config(name, tfds_data_dir, **fields) -> ml_collections.ConfigDict:
    config = data.default_config()
    config.source, config.name, config.tfds_data_dir = "tfds", name, tfds_data_dir
    config.update(fields)
    return config


@pytest.mark.parametrize("file_format", FILE_FORMATS)
def test_reads_an_rgb_set_of_any_size_with_its_class_names_and_splits(tmp_path, file_format):
    _check_tiny_colour(data.load(_config("deepbass_tiny_colour", _prepare(DeepbassTinyColour, tmp_path, file_format))))


def _check_tiny_colour(dataset):
    assert dataset.name == "deepbass_tiny_colour" and dataset.num_classes == 3
    assert dataset.class_names == ("red", "green", "blue")
    assert dataset.train_images.shape == (12, 8, 8, 3) and dataset.test_images.shape == (6, 8, 8, 3)
    assert dataset.train_images.dtype == dataset.test_images.dtype == np.float32
    assert dataset.train_labels.dtype == dataset.test_labels.dtype == np.int32
    for split, images, labels in [("train", dataset.train_images, dataset.train_labels),
                                  ("test", dataset.test_images, dataset.test_labels)]:
        expected = np.stack([_pixels((8, 8, 3), split, index) for index in range(len(labels))])
        np.testing.assert_array_equal(images, np.divide(expected, 255, dtype=np.float32))  # exactly uint8 / 255
        np.testing.assert_array_equal(labels, np.arange(len(labels)) % 3)
        assert images.min() == 0.0 and images.max() == 1.0
    np.testing.assert_array_equal(dataset.row_ids, np.arange(12))
    assert dataset.evaluation() == "test accuracy on 6 samples, the tfds 'test' split"


def test_pixel_divisor_applies(tmp_path):
    dataset = data.load(_config("deepbass_tiny_colour", _prepare(DeepbassTinyColour, tmp_path), pixel_divisor=256.0))
    assert dataset.train_images.max() == np.float32(255 / 256)


def test_a_set_prepared_elsewhere_without_test_split_is_tested_on_validation(tmp_path):
    dataset = data.load(_config("deepbass_tiny_gray", _prepare(DeepbassTinyGray, tmp_path)))
    assert dataset.input_shape == (6, 10, 1) and dataset.class_names == ("no", "yes")
    assert len(dataset.train_labels) == 10 and len(dataset.test_labels) == 4
    np.testing.assert_array_equal(dataset.test_images[..., 0] * 255,
                                  np.stack([_pixels((6, 10, 1), "validation", i)[..., 0] for i in range(4)]))
    assert "the tfds 'validation' split (it has no 'test' split)" in dataset.evaluation()


def test_a_train_only_set_has_no_test_set_unless_test_fraction_holds_one_out(tmp_path):
    data_dir = _prepare(DeepbassTinyTrainOnly, tmp_path)
    whole = data.load(_config("deepbass_tiny_train_only", data_dir))
    assert whole.train_images.shape == (20, 8, 8, 3) and whole.test_images is None and whole.test_labels is None
    assert whole.evaluation().startswith("no test set")
    held = data.load(_config("deepbass_tiny_train_only", data_dir, test_fraction=0.25, seed=3))
    assert len(held.train_labels) == 15 and len(held.test_labels) == 5
    test_rows = np.setdiff1d(np.arange(20), held.row_ids)
    np.testing.assert_array_equal(held.test_images, whole.train_images[test_rows])  # ids: rows of 'train'
    np.testing.assert_array_equal(held.train_images, whole.train_images[held.row_ids])
    assert "held out of the tfds 'train' split by data.test_fraction=0.25 (seed 3)" in held.evaluation()
    with pytest.raises(data.DataError, match=r"its 'test' split is the test set; set data.test_fraction=0"):
        data.load(_config("deepbass_tiny_colour", _prepare(DeepbassTinyColour, tmp_path / "colour"),
                          test_fraction=0.25))


class DeepbassTinyVarying(_Tiny):
    """Images of no fixed size; registered, never prepared: the refusal comes before any download."""

    IMAGE_SHAPE = (None, None, 3)

    def _split_generators(self, dl_manager):
        raise AssertionError("a data set that cannot be used must not be prepared")


class DeepbassTinyText(_Tiny):
    """A text classification set: no Image feature."""

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, supervised_keys=("text", "label"), features=tfds.features.FeaturesDict(
            {"text": tfds.features.Text(), "label": tfds.features.ClassLabel(num_classes=2)}))

    def _split_generators(self, dl_manager):
        raise AssertionError("a data set that cannot be used must not be prepared")


@pytest.mark.parametrize("name, message", [
    ("deepbass_no_such_set", r"tensorflow-datasets has no data set called 'deepbass_no_such_set' and none is "
                             r"prepared in .*; give a name of its catalogue"),
    ("deepbass_tiny_varying", r"tfds deepbass_tiny_varying: its images have no fixed size \(shape \(None, None, 3\)\)"),
    ("deepbass_tiny_text", r"tfds deepbass_tiny_text: not an image-classification data set: .* it has "
                           r"\{'text': 'Text', 'label': 'ClassLabel'\}"),
])
def test_refuses_what_it_cannot_read_before_any_work(tmp_path, name, message):
    with pytest.raises(data.DataError, match=message):
        data.load(_config(name, str(tmp_path)))
    assert list(tmp_path.iterdir()) == []  # nothing downloaded or prepared


def test_preparing_a_catalogue_set_needs_tensorflow(tmp_path):
    """An unprepared registered builder is prepared in tfds' default format, tfrecord, which needs TensorFlow."""
    config = _config("deepbass_tiny_colour", str(tmp_path))
    if HAS_TENSORFLOW:  # then it is prepared as tfrecord and read through tf.data
        _check_tiny_colour(data.load(config))
    else:
        with pytest.raises(data.DataError, match=r"preparing deepbass_tiny_colour needs a package that is missing "
                                                 r"\(.*No module named 'tensorflow'\); pip install -e \"\.\[tfds\]\" "
                                                 r"installs TensorFlow\.$"):
            data.load(config)


def test_missing_tensorflow_datasets_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes the import fail
    with pytest.raises(data.DataError, match=r'pip install -e "\.\[tfds\]"'):
        data.load_tfds("mnist")
    for name in ("mnist", "cifar10"):
        with pytest.raises(data.DataError, match=r"^data.source='tfds' needs tensorflow-datasets \(.*\): pip install "
                                                 r"-e \"\.\[tfds\]\"[^\n]*$"):
            data.load(_config(name, None))


def test_source_tfds_routes_every_name_the_other_loaders_do_not_claim(monkeypatch):
    asked = []
    monkeypatch.setattr(data.tfds, "load_tfds", lambda *args: asked.append(args) or "loaded")
    assert data._load(_config("cifar10", "/tfds")) == "loaded"
    assert data._load(_config("mnist", None, data_dir="/old")) == "loaded"  # data_dir: the tfds data_dir before
    assert asked == [("cifar10", "/tfds", 255.0, 0.0, 0), ("mnist", "/old", 255.0, 0.0, 0)]
    assert data.load(_config("yinyang", None, num_per_class=5)).train_images.shape == (10, 2)  # still the toy
    with pytest.raises(data.DataError, match=r"data.name='cifar10' is unknown; choose one of \('mnist', .*\), or "
                                             r"set --config.data.source=tfds"):
        data.load(_config("cifar10", None, source="download"))
