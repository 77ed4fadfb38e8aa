"""What a person sees when asked for labels: one folder per query round.

`write_round` fills a round folder with
  - `<id>.png` (for ids that are paths `<position>_<path>.png`, made safe: `png_names`): the sample, upscaled by
    nearest neighbour so its smaller side is at least `MIN_SIDE` pixels, on one contrast for the whole data set
    (`value_range`), or for vector data a scatter plot of it in context;
  - `queries.png` (vector data only): every queried point among the labeled ones;
  - `queries.csv`: `id,image[,x0,...,x{D-1}],label` with `label` empty, one row per sample in the order asked (an id
    is a row of the user's file, or a file's path relative to the data folder, quoted as CSV quotes it);
  - `classes.csv`: `label,name`, one row per class;
  - `index.html`: a self-contained labeling page (images inlined as data: URIs, no network) that downloads
    `answers.csv` with the header `id,label`, which the person saves into the round folder. Its HTML, CSS and
    JavaScript are the package data files `page/index.html`, `page/page.css` and `page/page.js`, filled in here.
"""

from __future__ import annotations

import base64
import csv
import functools
import hashlib
import html
import importlib.resources
import io
import json
import math
import pathlib
import re
from typing import Optional, Sequence

import numpy as np

from deepbass_jax.oracle import ids as ids_lib
from deepbass_jax.workdir import checkpoint

QUERIES, CLASSES, PAGE, OVERVIEW = "queries.csv", "classes.csv", "index.html", "queries.png"  # in a round
MIN_SIDE = 112  # pixels on the smaller side of an image PNG
PLOT_INCHES, PLOT_DPI = 6.0, 100  # vector data: 600 x 600 px scatter plots


# ------------------------------------------------------------------------------------------------ images
def to_uint8(images: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Maps `images` [...] linearly from `value_range` (low, high) to 0..255, clipping outside it (NaN -> low).

    The same mapping for every sample, so one gray level means one value across the whole round.
    """
    low, high = _checked_range(value_range)
    scaled = (np.nan_to_num(np.asarray(images, np.float64), nan=low) - low) / (high - low)
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def _checked_range(value_range) -> tuple[float, float]:
    low, high = float(value_range[0]), float(value_range[1])
    if not high > low:
        raise ValueError(f"value_range {value_range} must be (low, high) with high > low.")
    return low, high


def upscale_factor(height: int, width: int, min_side: int = MIN_SIDE) -> int:
    """The smallest integer factor that makes min(height, width) at least `min_side` (1 if it already is)."""
    return max(1, math.ceil(min_side / min(height, width)))


def upscale(picture: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscale of `picture` [H, W] or [H, W, C] to [H * factor, W * factor(, C)]."""
    return np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of uint8 `pixels` [H, W] (grayscale) or [H, W, 3] (RGB).

    Pillow comes with matplotlib (a dependency of this package, which requires pillow).
    """
    from PIL import Image

    return _png_bytes(Image.fromarray(np.ascontiguousarray(pixels, np.uint8), "L" if pixels.ndim == 2 else "RGB"))


def _png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_png(image: np.ndarray, value_range: tuple[float, float]) -> bytes:
    """PNG of one sample `image` [H, W], [H, W, 1] or [H, W, 3], upscaled to at least MIN_SIDE px."""
    pixels = to_uint8(image, value_range)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    return encode_png(upscale(pixels, upscale_factor(*pixels.shape[:2])))


# ------------------------------------------------------------------------------------------------ vectors
def class_colors(num_classes: int) -> list:
    """The colour of each class 0..num_classes-1 as RGBA tuples: the labeling page's, and the run figures' (plots.py
    imports it, so that a class looks the same on the page and in decision_boundary.png)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20" if num_classes <= 20 else "hsv"]
    return [cmap(c if num_classes <= 20 else c / num_classes) for c in range(num_classes)]


def _xy(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The plotted coordinates of `points` [M, D]: x0 and x1 (x1 = 0 when D = 1)."""
    points = np.asarray(points, np.float64)
    return points[:, 0], points[:, 1] if points.shape[1] > 1 else np.zeros(len(points))


def scatter_png(highlight: np.ndarray, highlight_ids: Sequence[int], *, names: Sequence[str],
                context: Optional[dict], title: str, big: bool) -> bytes:
    """PNG of a scatter plot: the `context` (pool grey, labeled points coloured by class) and the points
    `highlight` [k, D] ringed in red and annotated with `highlight_ids` [k]; `big` marks a single sample large.
    Without context, only `highlight` is drawn.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(PLOT_INCHES, PLOT_INCHES), dpi=PLOT_DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if context is not None:
        axes.scatter(*_xy(context["points"]), s=6, color="0.75", label="pool", zorder=1)
        labels = np.asarray(context["labeled_labels"], np.int64)
        colors = class_colors(len(names))
        labeled_x, labeled_y = _xy(context["labeled_points"])
        for c in np.unique(labels):
            chosen = labels == c
            axes.scatter(labeled_x[chosen], labeled_y[chosen], s=28, color=colors[c], edgecolors="black",
                         linewidths=0.4, label=f"{c}: {names[c]}", zorder=2)
    x, y = _xy(highlight)
    axes.scatter(x, y, s=400 if big else 120, facecolors="none", edgecolors="red", linewidths=2.5 if big else 1.8,
                 label="asked" if big else "asked in this round", zorder=3)
    axes.scatter(x, y, s=40 if big else 14, color="red", zorder=3)
    for sample_id, px, py in zip(highlight_ids, x, y):
        axes.annotate(str(sample_id), (px, py), xytext=(10, 10), textcoords="offset points",
                      fontsize=16 if big else 9, fontweight="bold", zorder=4,
                      bbox=dict(boxstyle="round,pad=0.2", facecolor="white", edgecolor="red", alpha=0.85))
    dims = np.asarray(highlight).shape[1]
    shown = "" if dims <= 2 else f" (first 2 of {dims} coordinates)"
    axes.set_xlabel("x0" + shown)
    axes.set_ylabel("x1" + shown if dims > 1 else "(1-D data)")
    axes.set_title(title)
    axes.legend(loc="best", fontsize=8, framealpha=0.85)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _check_context(context: dict, dims: int, num_classes: int) -> dict:
    points = np.asarray(context["points"], np.float64)
    labeled = np.asarray(context["labeled_points"], np.float64).reshape(-1, dims)
    labels = np.asarray(context["labeled_labels"]).reshape(-1)
    if points.ndim != 2 or points.shape[1] != dims:
        raise ValueError(f"context['points'] has shape {points.shape}; expected [M, {dims}].")
    if len(labels) != len(labeled) or ((labels < 0) | (labels >= num_classes)).any():
        raise ValueError(f"context['labeled_labels'] must be {len(labeled)} ints in [0, {num_classes}).")
    return {"points": points, "labeled_points": labeled, "labeled_labels": labels.astype(np.int64)}


# ------------------------------------------------------------------------------------------------ tables
def _csv_text(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    table = io.StringIO(newline="")
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return table.getvalue()


def png_names(ids: Sequence) -> list[str]:
    """The file name of each sample's PNG in the round folder: `<id>.png` for a row's id; for a path (which may
    hold folders, commas, any character) its position in the round and the path without its suffix, made safe
    (at most its last 60 characters): `cats/a, b.png` third -> `002_cats_a_b.png`."""
    return [f"{k:03d}_{_UNSAFE.sub('_', _SUFFIX.sub('', i))[-60:].strip('_')}.png" if isinstance(i, str)
            else f"{i}.png" for k, i in enumerate(ids_lib.plain_ids(ids))]


_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")  # what a PNG name of a path replaces by "_"
_SUFFIX = re.compile(r"\.[^./]*$")  # a path's suffix (.png)


def queries_csv(ids: Sequence, vectors: Optional[np.ndarray] = None) -> str:
    """`id,image[,x0..x{D-1}],label` with `label` empty; `vectors` [n, D] adds the coordinates. A path id is quoted
    as the csv module quotes (a comma, a quote)."""
    coordinates = [] if vectors is None else [f"x{d}" for d in range(vectors.shape[1])]
    rows = [[i, png, *([] if vectors is None else [str(v) for v in vectors[k]]), ""]
            for k, (i, png) in enumerate(zip(ids_lib.plain_ids(ids), png_names(ids)))]
    return _csv_text(["id", "image", *coordinates, "label"], rows)


def classes_csv(names: Sequence[str]) -> str:
    """`label,name`, one row per class."""
    return _csv_text(["label", "name"], list(enumerate(names)))


# ------------------------------------------------------------------------------------------------ page
def labeling_page(folder: pathlib.Path, ids: Sequence, pngs: Sequence[bytes], names: Sequence[str], *,
                  plots: bool = False, overview: Optional[bytes] = None) -> str:
    """A self-contained HTML page for labeling samples `ids` [n] (rows or paths, shown HTML-escaped) shown as
    `pngs` [n] (PNG bytes), one button per class name; `plots` marks scatter plots (drawn smooth, not pixelated);
    `overview` is queries.png."""
    folder = pathlib.Path(folder).resolve()
    ids = ids_lib.plain_ids(ids)
    # Choices are stored in the browser under the folder and what it shows: a round rewritten with other samples
    # at the same path does not inherit them.
    digest = hashlib.sha256(json.dumps([str(folder), ids, list(names)]).encode())
    for png in pngs:
        digest.update(png)
    data = {"folder": str(folder), "key": f"deepbass-labels:{folder}:{digest.hexdigest()[:16]}",
            "ids": ids, "names": list(names)}
    # "<" escaped so that no string in the JSON can close the <script> element.
    data_json = json.dumps(data).replace("<", "\\u003c")
    thumbs = "\n".join(
        f'<li><button type="button" class="thumb" data-index="{k}"><img src="{_data_uri(png)}" alt="sample {i}">'
        f'<span class="tid">id {i}</span><span class="tanswer">not labeled</span></button></li>'
        for k, (i, png) in enumerate(zip((html.escape(str(i)) for i in ids), pngs)))
    buttons = "\n".join(
        f'<button type="button" class="cls" data-label="{c}" aria-pressed="false">'
        f'<span class="num">{c}</span> {html.escape(name)}</button>' for c, name in enumerate(names))
    digits = ("a digit 0-9 picks that class" if len(names) <= 10 else
              "type the class number; it is taken as soon as no longer number could follow, or press Enter")
    overview_html = "" if overview is None else (
        f'<details><summary>All asked points</summary><img class="overview" src="{_data_uri(overview)}" '
        f'alt="all points asked in this round"></details>')
    css = _page_file("page.css").replace("RENDERING", "auto" if plots else "pixelated")
    template = _page_file("index.html")
    return template.format(title=html.escape(folder.name), folder=html.escape(str(folder)), n=len(ids), thumbs=thumbs,
                           buttons=buttons, digits=digits, overview=overview_html, data=data_json, css=css,
                           js=_page_file("page.js"))


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@functools.cache
def _page_file(name: str) -> str:
    """The text of `name` in the package data folder `page/`: `index.html` is a `str.format` template whose
    fields are filled by `labeling_page`; `page.css` has the token RENDERING where an image-rendering value goes."""
    return (importlib.resources.files(__package__) / "page" / name).read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------------ entry
def write_round(folder, ids, images, *, num_classes: int, class_names=None, value_range=(0.0, 1.0),
                context=None) -> None:
    """Writes one query round for a person into `folder` (created if missing); every file is written atomically.

    ids: [n] the samples' ids, in the order shown: ints (rows of the user's file) or strs (files' paths).
    images: float [n, H, W, C] with C = 1 or 3 (or [n, H, W]), or [n, D] for vector data.
    class_names: optional `num_classes` strings; default the class numbers.
    value_range: (low, high) of the whole data set; images are clipped to it and mapped to 0..255.
    context: vector data only, optional: {"points": [M, D] the pool, "labeled_points": [L, D],
        "labeled_labels": [L] ints}, drawn behind the asked points.
    """
    folder = pathlib.Path(folder)
    ids = ids_lib.plain_ids(np.asarray(ids, object).reshape(-1))
    images = np.asarray(images)
    names = [str(c) for c in range(num_classes)] if class_names is None else [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes.")
    if not ids or len(ids) != len(images):
        raise ValueError(f"{len(ids)} ids for {len(images)} images; expected the same number, at least one.")
    if len(set(ids)) != len(ids):
        raise ValueError(f"ids {ids} repeat a sample.")
    vectors = images.ndim == 2
    if not vectors and not (images.ndim == 3 or images.ndim == 4 and images.shape[-1] in (1, 3)):
        raise ValueError(f"images of shape {images.shape}: expected [n, H, W, 1 or 3], [n, H, W] or [n, D].")
    if context is not None and not vectors:
        raise ValueError("context is for vector data [n, D] only.")
    if context is not None:
        context = _check_context(context, images.shape[1], num_classes)
    _checked_range(value_range)
    folder.mkdir(parents=True, exist_ok=True)

    overview = None
    if vectors:
        pngs = [scatter_png(images[k:k + 1], [i], names=names, context=context, title=f"Sample id {i}", big=True)
                for k, i in enumerate(ids)]
        overview = scatter_png(images, ids, names=names, context=context, title=f"{folder.name}: asked points",
                               big=False)
        checkpoint.atomic_write_bytes(folder / OVERVIEW, overview)
    else:
        pngs = [image_png(image, value_range) for image in images]
    for name, png in zip(png_names(ids), pngs):
        checkpoint.atomic_write_bytes(folder / name, png)
    checkpoint.atomic_write_bytes(folder / CLASSES, classes_csv(names).encode())
    page = labeling_page(folder, ids, pngs, names, plots=vectors, overview=overview)
    checkpoint.atomic_write_bytes(folder / PAGE, page.encode())
    # queries.csv last: FileOracle takes its presence to mean that the round is fully written.
    checkpoint.atomic_write_bytes(folder / QUERIES, queries_csv(ids, images if vectors else None).encode())
