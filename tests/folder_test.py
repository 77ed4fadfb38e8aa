"""data.name="folder": class folders, the unlabeled pool, test/, sizes and colours, bad files, symlinks, the cache."""

import os
import sys

import numpy as np
import pytest
from PIL import Image

from deepbass_jax import data
from deepbass_jax.data import folder


def save(root, relative, pixels, **kwargs):
    """Writes uint8 pixels [H, W] or [H, W, 3] to root/relative (PNG or JPEG by suffix); returns the pixels."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kwargs)
    return pixels


def gray(seed, size=(8, 8)):
    return np.random.default_rng(seed).integers(0, 256, size, np.uint8)


def colour(seed, size=(8, 8)):
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), np.uint8)


def config(path, tmp_path, **fields):
    result = data.default_config()
    result.name, result.path, result.cache_dir = "folder", path and str(path), str(tmp_path / "cache")
    for key, value in fields.items():
        setattr(result, key, value)
    return result


@pytest.fixture
def opens(monkeypatch):
    """Counts Pillow's Image.open calls (one per decoded file)."""
    calls = []
    original = Image.open

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(Image, "open", counting)
    return calls


def test_class_folders_and_unlabeled_top_level(tmp_path):
    root = tmp_path / "pets"
    pixels = {name: save(root, name, gray(i)) for i, name in enumerate(["dog/d1.png", "cat/c1.png", "cat/c2.png",
                                                                        "u2.png", "u1.png", "cat/deep/c3.png"])}
    (root / "notes.txt").write_text("not an image")
    save(root, ".hidden/h.png", gray(9))
    dataset = data.load(config(root, tmp_path))
    files = ("cat/c1.png", "cat/c2.png", "cat/deep/c3.png", "dog/d1.png", "u1.png", "u2.png")
    assert dataset.files == files and dataset.name == "pets"
    assert dataset.class_names == ("cat", "dog") and dataset.num_classes == 2
    np.testing.assert_array_equal(dataset.given_labels, [0, 0, 0, 1, -1, -1])
    assert dataset.given_labels.dtype == np.int32
    assert dataset.train_labels is None  # a person labels the rest; given labels are no oracle's secret
    np.testing.assert_array_equal(dataset.row_ids, np.arange(6))
    assert dataset.train_images.shape == (6, 8, 8, 1) and dataset.train_images.dtype == np.float32
    for row, file in enumerate(files):
        np.testing.assert_array_equal(dataset.train_images[row, ..., 0], pixels[file] / np.float32(255))
    assert dataset.test_images is None and "no test set" in dataset.evaluation()


def test_fully_labeled_folder_has_hidden_labels_too_and_jpeg(tmp_path):
    root = tmp_path / "d"
    save(root, "b/x.jpg", gray(0), quality=95)
    save(root, "a/y.png", gray(1))
    dataset = folder.load_folder(root, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(dataset.given_labels, [0, 1])
    np.testing.assert_array_equal(dataset.train_labels, [0, 1])  # complete: a simulated oracle may use them
    with Image.open(root / "b/x.jpg") as jpeg:
        np.testing.assert_array_equal(dataset.train_images[1, ..., 0], np.asarray(jpeg) / np.float32(255))


def test_class_names_without_class_folders(tmp_path):
    root = tmp_path / "d"
    for i in range(3):
        save(root, f"{i}.png", gray(i))
    dataset = data.load(config(root, tmp_path, class_names="cat, dog,bird"))
    assert dataset.class_names == ("cat", "dog", "bird") and dataset.num_classes == 3
    np.testing.assert_array_equal(dataset.given_labels, [-1, -1, -1])
    assert dataset.train_labels is None and dataset.files == ("0.png", "1.png", "2.png")


def test_class_names_order_the_class_folders_and_may_add_classes(tmp_path):
    root = tmp_path / "d"
    save(root, "cat/a.png", gray(0))
    save(root, "u.png", gray(1))
    dataset = data.load(config(root, tmp_path, class_names="dog,cat,bird"))
    np.testing.assert_array_equal(dataset.given_labels, [1, -1])
    with pytest.raises(data.DataError, match=r"class folder\(s\) \['cat'\] are not among data.class_names"):
        data.load(config(root, tmp_path, class_names="dog,bird"))


def test_neither_class_folders_nor_class_names_is_refused(tmp_path):
    save(tmp_path / "d", "a.png", gray(0))
    with pytest.raises(data.DataError, match="no class folders .* and no --config.data.class_names") as error:
        data.load(config(tmp_path / "d", tmp_path))
    assert "\n" not in str(error.value)


def test_mixed_sizes_are_refused_naming_two_files(tmp_path):
    root = tmp_path / "d"
    save(root, "a/one.png", gray(0, (8, 8)))
    save(root, "a/two.png", gray(1, (8, 8)))
    save(root, "b/three.png", gray(2, (6, 10)))
    with pytest.raises(data.DataError, match=r"a/one.png is 8x8 but b/three.png is 6x10 .*image_size=8x8") as error:
        data.load(config(root, tmp_path))
    assert "\n" not in str(error.value)


def test_image_size_resizes_bilinearly(tmp_path):
    root = tmp_path / "d"
    small = save(root, "a/small.png", gray(0, (6, 10)))
    big = save(root, "a/big.png", colour(1, (16, 16)))
    dataset = data.load(config(root, tmp_path, image_size="8x12"))
    assert dataset.input_shape == (8, 12, 3)
    expected = np.asarray(Image.fromarray(big).resize((12, 8), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(dataset.train_images[0] * 255, expected.astype(np.float32))
    expected = np.asarray(Image.fromarray(small).resize((12, 8), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(dataset.train_images[1] * 255, np.repeat(expected[..., None], 3, -1))
    with pytest.raises(data.DataError, match="data.image_size='8 by 8' is not a size"):
        data.load(config(root, tmp_path, image_size="8 by 8"))


def test_gray_and_rgb(tmp_path):
    root = tmp_path / "d"
    g = save(root, "a/g.png", gray(0))
    assert data.load(config(root, tmp_path)).input_shape == (8, 8, 1)  # every file grayscale
    c = save(root, "a/rgb.png", colour(1))
    auto = data.load(config(root, tmp_path))  # any colour -> all RGB
    assert auto.input_shape == (8, 8, 3)
    np.testing.assert_array_equal(auto.train_images[0] * 255, np.repeat(g[..., None], 3, -1).astype(np.float32))
    np.testing.assert_array_equal(auto.train_images[1] * 255, c.astype(np.float32))
    forced = data.load(config(root, tmp_path, color="gray"))
    assert forced.input_shape == (8, 8, 1)
    luma = np.asarray(Image.fromarray(c).convert("L"))  # Pillow's own conversion
    np.testing.assert_array_equal(forced.train_images[1, ..., 0] * 255, luma.astype(np.float32))
    assert data.load(config(root, tmp_path, color="rgb")).input_shape == (8, 8, 3)
    with pytest.raises(data.DataError, match="data.color='grey' is unknown"):
        data.load(config(root, tmp_path, color="grey"))


def test_test_split_and_unlabeled_dir(tmp_path):
    root = tmp_path / "d"
    save(root, "cat/a.png", gray(0))
    save(root, "pool/u.png", gray(1))
    save(root, "test/dog/t1.png", gray(2))
    save(root, "test/cat/t2.png", gray(3))
    dataset = data.load(config(root, tmp_path, unlabeled_dir="pool"))
    assert dataset.class_names == ("cat", "dog")  # "test" and "pool" are no classes; test's folders count
    assert dataset.files == ("cat/a.png", "pool/u.png")
    np.testing.assert_array_equal(dataset.given_labels, [0, -1])
    np.testing.assert_array_equal(dataset.test_labels, [0, 1])  # sorted by path: test/cat/t2.png, test/dog/t1.png
    assert dataset.test_images.shape == (2, 8, 8, 1) and "test" in dataset.evaluation()
    save(root, "loose.png", gray(4))
    with pytest.raises(data.DataError, match="image.* at the top level .* data.unlabeled_dir='pool'"):
        data.load(config(root, tmp_path, unlabeled_dir="pool"))
    save(root, "test/stray.png", gray(5))
    with pytest.raises(data.DataError, match="test/stray.png lies loose in test/"):
        data.load(config(root, tmp_path))


def test_truncated_file_is_refused_and_the_rest_cached(tmp_path, opens):
    root = tmp_path / "d"
    save(root, "a/good.png", gray(0, (32, 32)))
    save(root, "a/broken.jpg", colour(1, (32, 32)))
    content = (root / "a/broken.jpg").read_bytes()
    (root / "a/broken.jpg").write_bytes(content[: len(content) // 2])
    save(root, "b/broken.png", colour(2, (32, 32)))
    content = (root / "b/broken.png").read_bytes()
    (root / "b/broken.png").write_bytes(content[: len(content) // 2])
    with pytest.raises(data.DataError, match=r"2 image file\(s\) cannot be read .* first a/broken.jpg") as error:
        data.load(config(root, tmp_path))
    assert "\n" not in str(error.value)
    (root / "a/broken.jpg").unlink()
    (root / "b/broken.png").unlink()
    opens.clear()
    assert data.load(config(root, tmp_path)).files == ("a/good.png",)
    assert opens == []  # the readable file came from the cache


def test_symlink_out_of_the_folder_is_refused(tmp_path):
    outside = save(tmp_path, "elsewhere/secret.png", gray(0))
    root = tmp_path / "d"
    save(root, "a/in.png", gray(1))
    (root / "a/inside_link.png").symlink_to(root / "a/in.png")  # inside: fine
    assert data.load(config(root, tmp_path)).files == ("a/in.png", "a/inside_link.png")
    (root / "a/out.png").symlink_to(tmp_path / "elsewhere/secret.png")
    with pytest.raises(data.DataError, match="a/out.png is a symlink to .*, outside the folder") as error:
        data.load(config(root, tmp_path))
    assert "\n" not in str(error.value) and outside is not None
    (root / "a/out.png").unlink()
    (root / "b").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(data.DataError, match="b is a symlink to .*, outside the folder"):
        data.load(config(root, tmp_path))


def test_unsafe_class_folder_names_are_refused(tmp_path):
    root = tmp_path / "d"
    save(root, "a,b/x.png", gray(0))
    with pytest.raises(data.DataError, match=r"class name 'a,b' is unsafe"):
        data.load(config(root, tmp_path))
    save(tmp_path / "e", "x.png", gray(0))
    with pytest.raises(data.DataError, match=r"data.class_names: class name '.cat' is unsafe"):
        data.load(config(tmp_path / "e", tmp_path, class_names="dog,.cat"))


def test_cache_reuse_and_invalidation(tmp_path, opens):
    root = tmp_path / "d"
    for i in range(4):
        save(root, f"a/{i}.png", gray(i))
    save(root, "u.png", gray(9))
    first = data.load(config(root, tmp_path))
    assert len(opens) == 5
    opens.clear()
    second = data.load(config(root, tmp_path))
    assert opens == []  # nothing decoded
    np.testing.assert_array_equal(first.train_images, second.train_images)
    changed = save(root, "a/2.png", gray(42))
    os.utime(root / "a/2.png", ns=(1, 1))  # a different modification time, whatever the clock's resolution
    third = data.load(config(root, tmp_path))
    assert [os.path.basename(str(path)) for path in opens] == ["2.png"]  # only the changed file
    np.testing.assert_array_equal(third.train_images[2, ..., 0], changed / np.float32(255))
    opens.clear()
    (root / "a/3.png").unlink()
    assert data.load(config(root, tmp_path)).files == ("a/0.png", "a/1.png", "a/2.png", "u.png") and opens == []
    data.load(config(root, tmp_path, image_size="4x4"))  # another size is another cache
    assert len(opens) == 4


def test_default_cache_location_and_unwritable_cache(tmp_path, monkeypatch, opens):
    monkeypatch.setenv("DEEPBASS_CACHE", str(tmp_path / "home_cache"))
    root = tmp_path / "d"
    save(root, "a/x.png", gray(0))
    folder.load_folder(root)
    assert list((tmp_path / "home_cache" / "folder").glob("*/*.npz"))
    blocker = tmp_path / "file_not_dir"
    blocker.write_text("")
    opens.clear()
    assert folder.load_folder(root, cache_dir=blocker).files == ("a/x.png",)  # cache skipped with a warning
    assert len(opens) == 1


def test_missing_pillow_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(data.DataError, match=r'needs Pillow .*pip install -e "\.\[folder\]"'):
        data.load(config(tmp_path, tmp_path))


def test_config_and_dataset_fields(tmp_path):
    defaults = data.default_config()
    assert "folder" in data.NAMES and defaults.unlabeled_dir == "" and defaults.image_size == ""
    assert defaults.color == "auto"
    with pytest.raises(data.DataError, match="needs --config.data.path=DIR"):
        data.load(config(None, tmp_path))
    with pytest.raises(data.DataError, match="no such folder"):
        data.load(config(tmp_path / "missing", tmp_path))
    images = np.zeros((2, 3), np.float32)
    with pytest.raises(data.DataError, match="given labels must lie in"):
        data.Dataset("x", images, None, None, None, 2, given_labels=np.array([-2, 0], np.int32))
    with pytest.raises(data.DataError, match="files of length 1"):
        data.Dataset("x", images, None, None, None, 2, files=("a.png",))
