"""Query rounds for a person: upscaled PNGs on one shared contrast, scatter plots for vectors, the CSVs, and a
self-contained labeling page."""

import csv
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest

from deepbass_jax.oracle import rounds

NAMES = ["zero", "one & <two>", "drei"]


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def _expected_gray(values, low, high):
    """What a stored value shows as, in [0, 1] as imread returns it: clipped, mapped linearly, 8 bits."""
    return np.round(np.clip((np.asarray(values, np.float64) - low) / (high - low), 0, 1) * 255) / 255


def _check_upscaled(png, source, low, high):
    """`png` [H', W'(, 3)] read back is `source` [H, W(, 3)] upscaled by one integer factor, >= 112 px."""
    height, width = source.shape[:2]
    factor = png.shape[0] // height
    assert png.shape[:2] == (height * factor, width * factor)
    assert min(png.shape[:2]) >= rounds.MIN_SIDE and (factor == 1 or min(height, width) * (factor - 1) < 112)
    blocks = png.reshape(height, factor, width, factor, *png.shape[2:])
    corners = np.broadcast_to(blocks[:, :1, :, :1], blocks.shape)
    np.testing.assert_array_equal(blocks, corners)  # every factor x factor block is constant
    np.testing.assert_allclose(blocks[:, 0, :, 0], _expected_gray(source, low, high), atol=1e-6)


def _check_tables_and_page(folder, ids, names):
    assert _rows(folder / "classes.csv") == [["label", "name"], *([str(c), n] for c, n in enumerate(names))]
    page = (folder / "index.html").read_text()
    assert "http://" not in page and "https://" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) >= len(ids) and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "href=" not in page and "url(" not in page and "<link" not in page  # nothing else is loaded
    for sample_id in ids:
        assert f'alt="sample {sample_id}"' in page and f"id {sample_id}<" in page
    for name in names:
        assert name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in page
    assert str(folder.resolve()) in page
    return page


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (5, 9, 3), (200, 150, 3), (16, 12)])
def test_images_are_nearest_neighbour_upscales_on_the_data_sets_contrast(tmp_path, shape):
    low, high = -1.0, 3.0
    rng = np.random.default_rng(0)
    images = rng.uniform(low - 0.5, high + 0.5, size=(3, *shape)).astype(np.float32)  # some values outside the range
    ids = [17, 3, 250]
    rounds.write_round(tmp_path / "round_0000", np.array(ids), images, num_classes=3, class_names=NAMES,
                       value_range=(low, high))
    folder = tmp_path / "round_0000"
    for sample_id, image in zip(ids, images):
        png = plt.imread(folder / f"{sample_id}.png")
        source = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        assert png.ndim == source.ndim  # grayscale stays one channel, colour stays RGB
        _check_upscaled(png, source, low, high)
    assert _rows(folder / "queries.csv") == [["id", "image", "label"], *([str(i), f"{i}.png", ""] for i in ids)]
    page = _check_tables_and_page(folder, ids, NAMES)
    assert "image-rendering: pixelated" in page


def test_contrast_is_shared_a_dark_image_stays_dark_beside_a_bright_one(tmp_path):
    dark = np.full((8, 8, 1), 0.1)
    dark[0, 0] = 0.2
    bright = np.full((8, 8, 1), 0.9)
    bright[0, 0] = 0.2
    rounds.write_round(tmp_path, [0, 1], np.stack([dark, bright]), num_classes=2)
    dark_png, bright_png = plt.imread(tmp_path / "0.png"), plt.imread(tmp_path / "1.png")
    assert dark_png[0, 0] == bright_png[0, 0] == pytest.approx(51 / 255)  # the same value, the same gray
    assert dark_png[-1, -1] == pytest.approx(26 / 255) and bright_png[-1, -1] == pytest.approx(230 / 255)
    assert _rows(tmp_path / "classes.csv") == [["label", "name"], ["0", "0"], ["1", "1"]]


@pytest.mark.parametrize("dims", [2, 4])
def test_vectors_get_coordinates_in_the_csv_and_scatter_plots_in_context(tmp_path, dims):
    rng = np.random.default_rng(1)
    pool = rng.normal(size=(200, dims)).astype(np.float32)
    ids = [42, 7, 150]
    context = {"points": pool, "labeled_points": pool[:12], "labeled_labels": np.arange(12) % 3}
    folder = tmp_path / "round_0002"
    rounds.write_round(folder, ids, pool[ids], num_classes=3, class_names=NAMES, context=context)
    rows = _rows(folder / "queries.csv")
    assert rows[0] == ["id", "image", *(f"x{d}" for d in range(dims)), "label"]
    assert [row[:2] for row in rows[1:]] == [[str(i), f"{i}.png"] for i in ids]
    assert all(row[-1] == "" for row in rows[1:])
    np.testing.assert_array_equal(np.array([row[2:-1] for row in rows[1:]], np.float32), pool[ids])
    for name in [f"{i}.png" for i in ids] + ["queries.png"]:
        png = plt.imread(folder / name)
        assert min(png.shape[:2]) >= rounds.MIN_SIDE and png.shape[-1] in (3, 4)
        assert png[..., :3].std() > 0.05  # a drawn plot, not a blank canvas
    page = _check_tables_and_page(folder, ids, NAMES)
    assert "image-rendering: auto" in page and 'alt="all points asked in this round"' in page


def test_vectors_without_context_plot_just_the_asked_points(tmp_path):
    rounds.write_round(tmp_path, [1, 2], np.array([[0.0, 1.0], [2.0, -1.0]]), num_classes=2)
    assert (tmp_path / "1.png").is_file() and (tmp_path / "queries.png").is_file()
    assert _rows(tmp_path / "queries.csv")[1] == ["1", "1.png", "0.0", "1.0", ""]


def test_more_than_ten_classes_document_typing_the_number(tmp_path):
    rounds.write_round(tmp_path, [5], np.zeros((1, 4, 4, 1)), num_classes=12)
    page = (tmp_path / "index.html").read_text()
    assert "press Enter" in page and 'data-label="11"' in page


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"class_names": ["a"]}, "1 class names for 3 classes"),
        ({"value_range": (1.0, 1.0)}, "high > low"),
        ({"ids": [1, 1]}, "repeat"),
        ({"ids": [1]}, "1 ids for 2 images"),
        ({"images": np.zeros((2, 4, 4, 2))}, r"expected \[n, H, W, 1 or 3\]"),
        ({"context": {"points": np.zeros((3, 2)), "labeled_points": [], "labeled_labels": []}}, "vector data"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, kwargs, message):
    arguments = {"ids": [1, 2], "images": np.zeros((2, 4, 4, 1)), "num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        rounds.write_round(tmp_path / "round", arguments.pop("ids"), arguments.pop("images"), **arguments)
    assert not (tmp_path / "round").exists()


def test_context_must_match_the_vectors(tmp_path):
    context = {"points": np.zeros((5, 3)), "labeled_points": np.zeros((1, 2)), "labeled_labels": [0]}
    with pytest.raises(ValueError, match=r"expected \[M, 2\]"):
        rounds.write_round(tmp_path / "round", [0], np.zeros((1, 2)), num_classes=2, context=context)
    context = {"points": np.zeros((5, 2)), "labeled_points": np.zeros((1, 2)), "labeled_labels": [2]}
    with pytest.raises(ValueError, match=r"ints in \[0, 2\)"):
        rounds.write_round(tmp_path / "round", [0], np.zeros((1, 2)), num_classes=2, context=context)
    assert not (tmp_path / "round").exists()
