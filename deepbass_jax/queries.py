"""What a person sees when asked for labels: one folder per query round.

`write_round` fills a round folder with
  - `<id>.png`: the sample, upscaled by nearest neighbour so its smaller side is at least `MIN_SIDE` pixels, on
    one contrast for the whole data set (`value_range`), or for vector data a scatter plot of it in context;
  - `queries.png` (vector data only): every queried point among the labeled ones;
  - `queries.csv`: `id,image[,x0,...,x{D-1}],label` with `label` empty, one row per sample in the order asked;
  - `classes.csv`: `label,name`, one row per class;
  - `index.html`: a self-contained labeling page (images inlined as data: URIs, no network) that downloads
    `answers.csv` with the header `id,label`, which the person saves into the round folder.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import math
import pathlib
from typing import Optional, Sequence

import numpy as np

from deepbass_jax import checkpoint

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
def _class_colors(num_classes: int) -> list:
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
        colors = _class_colors(len(names))
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


def queries_csv(ids: Sequence[int], vectors: Optional[np.ndarray] = None) -> str:
    """`id,image[,x0..x{D-1}],label` with `label` empty; `vectors` [n, D] adds the coordinates."""
    coordinates = [] if vectors is None else [f"x{d}" for d in range(vectors.shape[1])]
    rows = [[i, f"{i}.png", *([] if vectors is None else [str(v) for v in vectors[k]]), ""]
            for k, i in enumerate(ids)]
    return _csv_text(["id", "image", *coordinates, "label"], rows)


def classes_csv(names: Sequence[str]) -> str:
    """`label,name`, one row per class."""
    return _csv_text(["label", "name"], list(enumerate(names)))


# ------------------------------------------------------------------------------------------------ page
def labeling_page(folder: pathlib.Path, ids: Sequence[int], pngs: Sequence[bytes], names: Sequence[str], *,
                  plots: bool = False, overview: Optional[bytes] = None) -> str:
    """A self-contained HTML page for labeling samples `ids` [n] shown as `pngs` [n] (PNG bytes), one button
    per class name; `plots` marks scatter plots (drawn smooth, not pixelated); `overview` is queries.png."""
    folder = pathlib.Path(folder).resolve()
    # Choices are stored in the browser under the folder and what it shows: a round rewritten with other samples
    # at the same path does not inherit them.
    digest = hashlib.sha256(json.dumps([str(folder), [int(i) for i in ids], list(names)]).encode())
    for png in pngs:
        digest.update(png)
    data = {"folder": str(folder), "key": f"deepbass-labels:{folder}:{digest.hexdigest()[:16]}",
            "ids": [int(i) for i in ids], "names": list(names)}
    # "<" escaped so that no string in the JSON can close the <script> element.
    data_json = json.dumps(data).replace("<", "\\u003c")
    thumbs = "\n".join(
        f'<li><button type="button" class="thumb" data-index="{k}"><img src="{_data_uri(png)}" alt="sample {i}">'
        f'<span class="tid">id {i}</span><span class="tanswer">not labeled</span></button></li>'
        for k, (i, png) in enumerate(zip(ids, pngs)))
    buttons = "\n".join(
        f'<button type="button" class="cls" data-label="{c}" aria-pressed="false">'
        f'<span class="num">{c}</span> {html.escape(name)}</button>' for c, name in enumerate(names))
    digits = ("a digit 0-9 picks that class" if len(names) <= 10 else
              "type the class number; it is taken as soon as no longer number could follow, or press Enter")
    overview_html = "" if overview is None else (
        f'<details><summary>All asked points</summary><img class="overview" src="{_data_uri(overview)}" '
        f'alt="all points asked in this round"></details>')
    return _PAGE.format(title=html.escape(folder.name), folder=html.escape(str(folder)), n=len(ids),
                        thumbs=thumbs, buttons=buttons, digits=digits, overview=overview_html,
                        data=data_json, css=_CSS.replace("RENDERING", "auto" if plots else "pixelated"), js=_JS)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


_CSS = """
body { font: 16px/1.4 system-ui, sans-serif; margin: 0; color: #1b1b1b; background: #f6f6f6; }
header, main { max-width: 1200px; margin: 0 auto; padding: 0.5rem 1rem; }
header p { margin: 0.3rem 0; }
h1 { font-size: 1.3rem; margin: 0.2rem 0; }
h2 { font-size: 1.1rem; margin: 0.8rem 0 0.4rem; }
code { background: #e8e8e8; padding: 0 0.25rem; word-break: break-all; }
main { display: flex; gap: 1.5rem; align-items: flex-start; flex-wrap: wrap; }
#viewer { flex: 1 1 480px; background: #fff; border: 1px solid #ccc; border-radius: 6px; padding: 0.75rem 1rem; }
.status { display: flex; justify-content: space-between; flex-wrap: wrap; gap: 0.5rem; align-items: baseline; }
#side { flex: 0 1 340px; }
#big { display: block; width: min(52vh, 100%); height: auto; margin: 0.5rem auto;
       image-rendering: RENDERING; border: 1px solid #999; background: #000; }
#position { font-size: 1.2rem; margin: 0; }
#answer { font-size: 1.2rem; font-weight: bold; margin: 0; }
#counter { font-weight: bold; }
button { font: inherit; cursor: pointer; border: 1px solid #666; border-radius: 5px; background: #fff; color: #111; }
button:hover { background: #eef3fb; }
button:focus-visible { outline: 3px solid #1a5fb4; outline-offset: 2px; }
.classes { display: flex; flex-wrap: wrap; gap: 0.5rem; margin: 0.6rem 0; }
.cls { padding: 0.55rem 0.9rem; font-size: 1.05rem; min-width: 3.5rem; }
.cls .num { display: inline-block; min-width: 1.4em; padding: 0 0.2em; border-radius: 3px; background: #e3e3e3;
            font-weight: bold; text-align: center; }
.cls[aria-pressed="true"] { background: #1a5fb4; color: #fff; border-color: #1a5fb4; }
.cls[aria-pressed="true"] .num { background: #fff; color: #1a5fb4; }
.nav button, #save { padding: 0.45rem 0.9rem; }
#samples { list-style: none; padding: 0; margin: 0; display: grid; grid-template-columns: repeat(auto-fill, 96px);
           gap: 0.4rem; max-height: 50vh; overflow-y: auto; }
.thumb { display: flex; flex-direction: column; align-items: center; width: 96px; padding: 0.25rem; font-size: 0.8rem; }
.thumb img { width: 64px; height: 64px; object-fit: contain; image-rendering: RENDERING; background: #000; }
.thumb[aria-current="true"] { border: 3px solid #1a5fb4; }
.thumb.answered { background: #e6f4e6; }
.thumb.answered .tanswer { color: #176117; font-weight: bold; }
.thumb .tanswer { color: #8a4b00; }
#save { font-weight: bold; background: #176117; color: #fff; border-color: #176117; }
#warning { color: #8a4b00; font-weight: bold; }
#typed { min-height: 1.3em; color: #444; }
#typed:empty { display: none; }
.overview { width: 100%; }
"""

_JS = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("round-data").textContent);
  var ids = data.ids, names = data.names, n = ids.length;
  var storageKey = data.key;
  var answers = {};  // id -> label
  var current = 0, typed = "";
  var big = document.getElementById("big");
  var thumbs = Array.prototype.slice.call(document.querySelectorAll(".thumb"));
  var classButtons = Array.prototype.slice.call(document.querySelectorAll(".cls"));

  function load() {
    var stored = null;
    try { stored = JSON.parse(window.localStorage.getItem(storageKey) || "{}"); } catch (e) { stored = {}; }
    ids.forEach(function (id) {
      var label = stored && stored[id];
      if (Number.isInteger(label) && label >= 0 && label < names.length) { answers[id] = label; }
    });
  }
  function store() {
    try { window.localStorage.setItem(storageKey, JSON.stringify(answers)); } catch (e) { /* private mode */ }
  }
  function labelText(label) { return label + " \\u00b7 " + names[label]; }
  function answeredCount() { return ids.filter(function (id) { return id in answers; }).length; }

  function render() {
    var id = ids[current];
    big.src = thumbs[current].querySelector("img").src;
    big.alt = "sample " + id;
    document.getElementById("position").textContent = "Sample " + (current + 1) + " of " + n + " \\u2014 id " + id;
    document.getElementById("answer").textContent =
      id in answers ? "Label: " + labelText(answers[id]) : "Not labeled yet";
    classButtons.forEach(function (button) {
      button.setAttribute("aria-pressed", String(Number(button.dataset.label) === answers[id]));
    });
    thumbs.forEach(function (thumb, k) {
      var answered = ids[k] in answers;
      thumb.classList.toggle("answered", answered);
      thumb.querySelector(".tanswer").textContent = answered ? "\\u2713 " + labelText(answers[ids[k]]) : "not labeled";
      if (k === current) { thumb.setAttribute("aria-current", "true"); } else { thumb.removeAttribute("aria-current"); }
    });
    document.getElementById("counter").textContent = answeredCount() + " of " + n + " labeled";
    document.getElementById("typed").textContent = typed ? "Typed: " + typed + " (Enter to take it)" : "";
  }
  function go(k) { current = Math.max(0, Math.min(n - 1, k)); typed = ""; render(); }
  function pick(label) {
    answers[ids[current]] = label;
    store();
    document.getElementById("warning").textContent = "";
    go(current + 1);
  }
  function typeDigit(digit) {
    if (names.length <= 10) { if (digit < names.length) { pick(digit); } return; }
    var candidate = typed + String(digit);
    if (Number(candidate) >= names.length) { candidate = String(digit); }  // start over
    typed = candidate;
    if (typed === "0" || Number(typed) * 10 >= names.length) { pick(Number(typed)); } else { render(); }
  }
  function save() {
    var rows = ["id,label"];
    ids.forEach(function (id) { if (id in answers) { rows.push(id + "," + answers[id]); } });
    var missing = n - answeredCount();
    document.getElementById("warning").textContent = missing ?
      missing + " of " + n + " samples have no label yet: answers.csv holds only the labeled ones, and the run " +
      "will ask again for the rest." : "";
    var blob = new Blob([rows.join("\\n") + "\\n"], {type: "text/csv"});
    var link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "answers.csv";
    document.body.appendChild(link);
    link.click();
    document.body.removeChild(link);
    setTimeout(function () { URL.revokeObjectURL(link.href); }, 60000);
    document.getElementById("saved").textContent = "answers.csv downloaded (" + (rows.length - 1) +
      " rows). Move it into " + data.folder + " unless your browser saved it there.";
  }

  classButtons.forEach(function (button) {
    button.addEventListener("click", function () { pick(Number(button.dataset.label)); });
  });
  thumbs.forEach(function (thumb, k) { thumb.addEventListener("click", function () { go(k); }); });
  document.getElementById("prev").addEventListener("click", function () { go(current - 1); });
  document.getElementById("next").addEventListener("click", function () { go(current + 1); });
  document.getElementById("save").addEventListener("click", save);
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var key = event.key;
    if (/^[0-9]$/.test(key)) { typeDigit(Number(key)); }
    else if (key === "Enter" && typed) { pick(Number(typed)); }
    else if (key === "Backspace" && typed) { typed = typed.slice(0, -1); render(); }
    else if (key === "Escape" && typed) { typed = ""; render(); }
    else if (key === "ArrowRight" || key === "ArrowDown" || key === "j") { go(current + 1); }
    else if (key === "ArrowLeft" || key === "ArrowUp" || key === "k") { go(current - 1); }
    else { return; }
    event.preventDefault();
  });
  window.addEventListener("storage", function (event) {
    if (event.key === storageKey) { answers = {}; load(); render(); }
  });

  load();
  var firstOpen = ids.findIndex(function (id) { return !(id in answers); });
  go(firstOpen < 0 ? 0 : firstOpen);
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Label {title}</title>
<style>{css}</style>
</head>
<body>
<header>
<h1>Label the samples of {title}</h1>
<p>Round folder: <code id="folder">{folder}</code></p>
<p>Pick a class for each sample, then press <strong>Save answers.csv</strong> and save the file as
<code>answers.csv</code> in the round folder above (move it there if your browser puts downloads elsewhere).
Choices are kept in this browser while you work, so reloading the page loses nothing.</p>
</header>
<main>
<section id="viewer" aria-label="Current sample">
<div class="status"><p id="position" aria-live="polite"></p><p id="answer" aria-live="polite"></p></div>
<img id="big" alt="">
<div class="classes" role="group" aria-label="Classes">
{buttons}
</div>
<p id="typed" aria-live="polite"></p>
<div class="nav"><button type="button" id="prev">&larr; Previous</button>
<button type="button" id="next">Next &rarr;</button></div>
<p><strong>Keys:</strong> {digits} and moves to the next sample; &larr; &rarr; (or &uarr; &darr;, k j) move
between samples.</p>
</section>
<section id="side" aria-label="All samples">
<p id="counter" aria-live="polite">0 of {n} labeled</p>
<button type="button" id="save">Save answers.csv</button>
<p id="warning" role="alert"></p>
<p id="saved" role="status"></p>
<h2>Samples</h2>
<ol id="samples">
{thumbs}
</ol>
{overview}
</section>
</main>
<script type="application/json" id="round-data">{data}</script>
<script>{js}</script>
</body>
</html>
"""


# ------------------------------------------------------------------------------------------------ entry
def write_round(folder, ids, images, *, num_classes: int, class_names=None, value_range=(0.0, 1.0),
                context=None) -> None:
    """Writes one query round for a person into `folder` (created if missing); every file is written atomically.

    ids: int [n], the samples' ids, in the order shown.
    images: float [n, H, W, C] with C = 1 or 3 (or [n, H, W]), or [n, D] for vector data.
    class_names: optional `num_classes` strings; default the class numbers.
    value_range: (low, high) of the whole data set; images are clipped to it and mapped to 0..255.
    context: vector data only, optional: {"points": [M, D] the pool, "labeled_points": [L, D],
        "labeled_labels": [L] ints}, drawn behind the asked points.
    """
    folder = pathlib.Path(folder)
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
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
    for i, png in zip(ids, pngs):
        checkpoint.atomic_write_bytes(folder / f"{i}.png", png)
    checkpoint.atomic_write_bytes(folder / CLASSES, classes_csv(names).encode())
    page = labeling_page(folder, ids, pngs, names, plots=vectors, overview=overview)
    checkpoint.atomic_write_bytes(folder / PAGE, page.encode())
    # queries.csv last: FileOracle takes its presence to mean that the round is fully written.
    checkpoint.atomic_write_bytes(folder / QUERIES, queries_csv(ids, images if vectors else None).encode())
