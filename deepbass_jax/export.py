"""What a person takes out of a run: its images sorted into class folders by labels.csv, and its network applied to
new images. No flags: experiments/export_labels.py and experiments/predict.py parse them, and a script or a
notebook calls these functions directly.

Sorting (`export_images`): every image of a folder run whose labels.csv row has a chosen source goes to
OUT/CLASS/NAME (CLASS: the row's class_name, else its label number; NAME: the file's own name, subfolders flattened).
Rows are taken in labels.csv's order (by path); when a name is taken already in its class folder (ignoring case, as
macOS and Windows do), the file is named by its whole path in DIR with '__' for '/' (top__sub__x.png; then _2, _3
before the suffix if even that is taken). OUT/export.csv records every placement (id, file, exported, label,
class_name, source, probability, entropy). Nothing is written outside OUT: every name is checked first, and the
export is refused, before OUT is even created, for a class or file name that could leave it ('..', '/', a
backslash, NUL or another control character, a leading '.', an absolute path), an image that is missing or is a
link out of the run's folder DIR, an OUT inside DIR or holding it, a missing parent of OUT, and an OUT that is not
empty (with `overwrite`: unless it holds an earlier export, whose listed files alone are removed first). Files are
created exclusively (an existing file or link is never followed), and no path is written through a link in OUT.

Predicting (`load_network`, `read_new_data`, `predict`, `write_predictions`): one seed's network from the run's
newest checkpoint (an unfinished run's too: `Network.describe` says which iteration's), applied to a folder of
images (read as the run read its folder: its data.image_size, its channels, its pixel divisor) or to an .npz `x`;
each sample's prediction is the argmax of the mean of T' MC-dropout passes (eq. 7), with that class's mean
probability and the normalized entropy (eq. 3), drawn with the key the run's final labels.csv used: on the run's
own pool the numbers are labels.csv's. The input shape and class count the network takes come from its
parameters and the pinned config, so the run's data need not be there any more.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import errno
import io
import json
import os
import pathlib
import re
import shutil
import zipfile
from typing import Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from deepbass_jax import algorithm, models, progress
from deepbass_jax.data import folder as folder_lib, npz as npz_lib
from deepbass_jax.data.dataset import unit_float
from deepbass_jax.workdir import checkpoint, runfolder

SOURCES = ("given", "oracle", "pseudo-label", "prediction")  # labels.csv's `source` values
MODES = ("copy", "link", "symlink")  # copy the files, hard-link them, or make symbolic links to them
MANIFEST = "export.csv"  # OUT/export.csv: where each exported image came from
KNOWN_INPUT_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "yinyang": (2,)}  # data.name -> sample
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ExportError(ValueError):
    """A run, a folder or a file that cannot be exported or predicted on; one line naming the problem and the
    remedy."""


# ------------------------------------------------------------------------------------------ the run's files
def seed_folder(workdir, seed_index: int = 0) -> pathlib.Path:
    """The folder of seed `seed_index` (0: config.seed) of the run in `workdir`: the workdir itself for one seed,
    else its seed_<s>/ folders by seed number."""
    workdir = pathlib.Path(workdir).expanduser()
    if (workdir / runfolder.CONFIG).is_file():
        folders = [workdir]
    else:
        numbered = [(int(m[1]), p) for p in workdir.glob("seed_*")
                    if (m := re.fullmatch(r"seed_(-?\d+)", p.name)) and (p / runfolder.CONFIG).is_file()]
        folders = [p for _, p in sorted(numbered)]
    if not folders:
        raise ExportError(f"{workdir} holds no run (no {runfolder.CONFIG}); give the --workdir of an experiments.main "
                          "run.")
    if not 0 <= seed_index < len(folders):
        raise ExportError(f"--seed_index={seed_index}, but {workdir} holds {len(folders)} seed(s); choose 0.."
                          f"{len(folders) - 1}.")
    return folders[seed_index]


def pinned_config(folder: pathlib.Path) -> ml_collections.ConfigDict:
    """The config.json the run pinned in `folder`."""
    try:
        return ml_collections.ConfigDict(json.loads((folder / runfolder.CONFIG).read_text()))
    except (OSError, ValueError) as error:
        raise ExportError(f"{folder / runfolder.CONFIG} cannot be read ({error}); restore it from the run.") from error


def read_labels(folder: pathlib.Path) -> list[dict]:
    """The rows of `folder`/labels.csv as dicts of strings."""
    path = folder / runfolder.LABELS
    if not path.is_file():
        raise ExportError(f"{folder} has no {runfolder.LABELS} yet: a run writes it at its end (and every "
                          "config.labels_export_every iterations, unless that is -1); finish the run first.")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"id", "label", "source"} - set(rows[0] if rows else ())
    if missing:
        raise ExportError(f"{path} has no column(s) {sorted(missing)}; restore the file the run wrote.")
    return rows


def finished(folder: pathlib.Path) -> bool:
    return (folder / runfolder.SUMMARY).is_file()


# ------------------------------------------------------------------------------------------ sorting the images
@dataclasses.dataclass(frozen=True)
class Placement:
    """Where one image of labels.csv goes: OUT/`folder`/`name`."""

    id: str  # labels.csv's id, as written: a row number, or for a folder of images the file's path
    file: str  # its path in DIR, relative, POSIX
    folder: str  # its class folder in OUT: the class name, else the label number
    name: str  # its name there: the file's own, or its path with '__' for '/' when that was taken
    label: int
    class_name: str
    source: str
    probability: str
    entropy: str

    @property
    def target(self) -> str:
        return f"{self.folder}/{self.name}"

    @property
    def renamed(self) -> bool:
        return self.name != self.file.rpartition("/")[2]


def unsafe_name(name: str) -> Optional[str]:
    """Why `name` cannot be one folder or file name inside OUT, or None when it can."""
    if not name:
        return "is empty"
    if name.startswith("."):
        return "starts with '.'"
    if "/" in name or "\\" in name:
        return "holds a path separator ('/' or '\\')"
    if _CONTROL.search(name):
        return "holds NUL or another control character"
    return None


def unsafe_path(file: str) -> Optional[str]:
    """Why `file` is not a plain relative POSIX path of visible names inside DIR, or None when it is."""
    if file.startswith("/") or re.match(r"[A-Za-z]:", file) or "\\" in file:
        return "is absolute or holds a backslash"
    for part in file.split("/"):
        reason = unsafe_name(part)
        if reason:
            return f"has a part {part!r} that {reason}"
    return None


def plan_export(rows: Sequence[dict], sources: Sequence[str] = SOURCES, where: str = runfolder.LABELS
                ) -> list[Placement]:
    """labels.csv rows (dicts of strings, in the file's order) -> the placements of those whose source is in
    `sources`; ExportError (naming `where` and the id) for a class or file name that could leave OUT."""
    taken: dict[str, set] = {}  # class folder (casefold) -> names taken there (casefold)
    placements = []
    for row in rows:
        if row.get("source") not in sources:
            continue
        sample_id = row.get("id") or ""
        try:
            label = int(row["label"])
        except (TypeError, ValueError) as error:
            raise ExportError(f"{where}, id {sample_id}: the label {row['label']!r} is not a number; restore the file "
                              "the run wrote.") from error
        file = row.get("file") or ""
        reason = unsafe_path(file)
        if reason:
            raise ExportError(f"{where}, id {sample_id}: the file {file!r} {reason}, so it could lie outside the run's "
                              "folder; restore the row the run wrote (files are paths inside DIR).")
        folder = row["class_name"] if "class_name" in row else str(label)
        reason = unsafe_name(folder) or (f"is the name of the export's own {MANIFEST}"
                                         if folder.casefold() == MANIFEST.casefold() else None)
        if reason:
            raise ExportError(f"{where}, id {sample_id}: the class name {folder!r} {reason}, so it cannot be a folder "
                              "inside --out; rename the class (data.class_names, or its class folder) and run again.")
        name = file.rpartition("/")[2]
        used = taken.setdefault(folder.casefold(), set())
        if name.casefold() in used:
            name = file.replace("/", "__")
            stem, suffix = pathlib.PurePosixPath(name).stem, pathlib.PurePosixPath(name).suffix
            count = 1
            while name.casefold() in used:
                count += 1
                name = f"{stem}_{count}{suffix}"
        used.add(name.casefold())
        placements.append(Placement(sample_id, file, folder, name, label, row.get("class_name", str(label)),
                                    row["source"], row.get("probability", ""), row.get("entropy", "")))
    return placements


@dataclasses.dataclass(frozen=True)
class ExportSummary:
    """What `export_images` did."""

    out: pathlib.Path
    root: pathlib.Path  # DIR, the run's images
    mode: str
    placements: list
    finished: bool  # whether the run had finished (else labels.csv is its last export during the run)
    replaced: int  # files of an earlier export removed first

    def counts(self) -> dict:
        """{class folder: {source: images}}, classes in order of first appearance."""
        table: dict = {}
        for p in self.placements:
            table.setdefault(p.folder, collections.Counter())[p.source] += 1
        return table

    def lines(self) -> list[str]:
        """The summary for a person: a line of counts per class and source, the total, renamed files."""
        counts = self.counts()
        used = [s for s in SOURCES if any(c[s] for c in counts.values())]
        verb = {"copy": "copied", "link": "hard-linked", "symlink": "symlinked"}[self.mode]
        lines = [f"{len(self.placements)} images of {self.root} {verb} into {self.out}, by class and label source:"]
        width = max([len("class"), len("total")] + [len(name) for name in counts])
        header = ["class".ljust(width)] + [s.rjust(max(len(s), 5)) for s in used] + ["total".rjust(5)]
        lines.append("  ".join(header))
        for name, count in list(counts.items()) + [("total", sum(counts.values(), collections.Counter()))]:
            lines.append("  ".join([name.ljust(width)] + [str(count[s]).rjust(max(len(s), 5)) for s in used]
                                   + [str(sum(count.values())).rjust(5)]))
        renamed = sum(p.renamed for p in self.placements)
        if renamed:
            lines.append(f"{renamed} file(s) named by their path ('__' for '/') to keep names apart in a class folder; "
                         f"{MANIFEST} lists where each image came from.")
        if self.replaced:
            lines.append(f"{self.replaced} file(s) of the earlier export there were removed first.")
        if not self.finished:
            lines.append(f"The run has not finished: these are the labels of its last {runfolder.LABELS} export.")
        return lines


def export_images(workdir, out, sources: Sequence[str] = SOURCES, mode: str = "copy", overwrite: bool = False,
                  seed_index: int = 0, data_path=None) -> ExportSummary:
    """Sorts the images of the folder run in `workdir` into `out`/CLASS/ by its labels.csv (see the module
    docstring); `data_path` replaces the run's data.path (images moved since). Checks everything before it writes."""
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown or not sources:
        raise ExportError(f"--sources={','.join(sources)}: {unknown or 'none'} not among {','.join(SOURCES)}; give "
                          "some of those, comma-separated.")
    if mode not in MODES:
        raise ExportError(f"--mode={mode} is unknown; choose one of {', '.join(MODES)}.")
    folder = seed_folder(workdir, seed_index)
    config = pinned_config(folder)
    rows = read_labels(folder)
    labels_csv = folder / runfolder.LABELS
    if rows and "file" not in rows[0]:
        raise ExportError(f"{labels_csv} has no file column: the run's data (data.name={config.data.name!r}) is not "
                          "a folder of images, so there are no files to sort; give the --workdir of a run with "
                          "--config.data.name=folder.")
    placements = plan_export(rows, sources, str(labels_csv))
    if not (data_path or config.data.get("path")):
        raise ExportError(f"{folder / runfolder.CONFIG} names no data.path; give the run's images with "
                          "--data_path=DIR.")
    root = pathlib.Path(os.path.realpath(pathlib.Path(data_path or config.data.path).expanduser()))
    if not root.is_dir():
        raise ExportError(f"the run's images {root} are not there (no such folder); give their new place with "
                          "--data_path=DIR.")
    sources_real = _source_files(root, placements, labels_csv)
    out_real, previous = _check_out(pathlib.Path(out).expanduser(), root, placements, overwrite, mode)
    # Everything is checked: from here on, only OUT changes.
    replaced = _remove_previous(out_real, previous)
    out_real.mkdir(exist_ok=True)
    _write_manifest(out_real, placements)
    made = set()
    with progress.Progress(len(placements), f"exporting images into {out_real}", unit=" files") as bar:
        for placement, source in zip(placements, sources_real):
            class_folder = out_real / placement.folder
            if placement.folder not in made:
                class_folder.mkdir(exist_ok=True)
                made.add(placement.folder)
            _place(source, class_folder / placement.name, mode, out_real)
            bar.update()
    return ExportSummary(out_real, root, mode, placements, finished(folder), replaced)


def _source_files(root: pathlib.Path, placements: list, labels_csv) -> list[pathlib.Path]:
    """The real path of each placement's image, each a file inside `root`; refuses links out of it and missing
    images (naming how many and the first)."""
    real_paths, missing = [], []
    for p in placements:
        real = pathlib.Path(os.path.realpath(root / p.file))
        if not real.is_relative_to(root):
            raise ExportError(f"{labels_csv}, id {p.id}: {root / p.file} is a link to {real}, outside the run's folder "
                              f"{root}; nothing is exported from outside it: replace the link with the image itself.")
        if not real.is_file():
            missing.append(p.file)
        real_paths.append(real)
    if missing:
        raise ExportError(f"{len(missing)} image(s) of {labels_csv} are not in {root} (first: {missing[0]}); put them "
                          "back, or give the folder they moved to with --data_path=DIR.")
    return real_paths


def _check_out(out: pathlib.Path, root: pathlib.Path, placements: list, overwrite: bool, mode: str):
    """(OUT's real path, the earlier export's files to remove there); refuses an OUT that overlaps DIR, a file, a
    missing parent, a non-empty OUT that holds no earlier export, and any path the export would write through."""
    out_real = pathlib.Path(os.path.realpath(out))
    if out_real == root or out_real.is_relative_to(root):
        raise ExportError(f"--out={out} lies inside the run's images {root}, where a later run would take the export "
                          "for class folders; choose an --out outside it.")
    if root.is_relative_to(out_real):
        raise ExportError(f"--out={out} holds the run's images {root}; choose an --out beside them, not above them.")
    if not out_real.parent.is_dir():
        raise ExportError(f"--out={out}: its parent folder {out_real.parent} does not exist; create it first, or "
                          "choose an --out in an existing folder.")
    if os.path.lexists(out_real) and not out_real.is_dir():
        raise ExportError(f"--out={out} is a file, not a folder; choose a new or empty folder.")
    previous: list[str] = []
    if out_real.is_dir() and any(out_real.iterdir()):
        if not overwrite:
            raise ExportError(f"--out={out} is not empty; choose a new or empty folder, or pass --overwrite to replace "
                              "an earlier export there.")
        manifest = out_real / MANIFEST
        if manifest.is_symlink() or not manifest.is_file():
            raise ExportError(f"--out={out} is not empty and holds no {MANIFEST}, so it is no earlier export; "
                              "--overwrite replaces only an export's own files: choose a new or empty folder.")
        with open(manifest, newline="", encoding="utf-8") as handle:
            previous = [row.get("exported") or "" for row in csv.DictReader(handle)]
        for entry in previous:
            parts = entry.split("/")
            if len(parts) != 2 or any(unsafe_name(part) for part in parts):
                raise ExportError(f"{manifest} lists {entry!r}, which is not CLASS/NAME inside {out}; remove that row, "
                                  "or choose a new or empty --out.")
    earlier = {entry.casefold() for entry in previous}
    for target in [*previous, *(p.target for p in placements)]:
        class_folder, path = out_real / target.partition("/")[0], out_real / target
        if os.path.lexists(class_folder) and (class_folder.is_symlink() or not class_folder.is_dir()):
            raise ExportError(f"{class_folder} is a link or a file, not a class folder, and the export would write "
                              "through it; remove it, or choose a new or empty --out.")
        if os.path.lexists(path) and (target.casefold() not in earlier or (path.is_dir() and not path.is_symlink())):
            raise ExportError(f"{path} exists and is no file of an earlier export; move it away, or choose a new or "
                              "empty --out.")
    if mode == "link" and placements:
        if os.stat(root).st_dev != os.stat(out_real if out_real.is_dir() else out_real.parent).st_dev:
            raise ExportError(f"--mode=link makes hard links, which cannot cross file systems, and --out={out} is on "
                              f"another one than {root}; use --mode=copy or --mode=symlink.")
    return out_real, previous


def _remove_previous(out_real: pathlib.Path, previous: list[str]) -> int:
    """Removes the files an earlier export listed (links as links) and its class folders left empty."""
    removed = 0
    for entry in previous:
        try:
            (out_real / entry).unlink()
            removed += 1
        except FileNotFoundError:
            pass
    for class_folder in sorted({entry.partition("/")[0] for entry in previous}):
        try:
            (out_real / class_folder).rmdir()
        except OSError:  # not empty (a file of someone else's, or of this export) or gone
            pass
    return removed


def _write_manifest(out_real: pathlib.Path, placements: list) -> None:
    """OUT/export.csv, written before the images: a stopped export is an earlier export that --overwrite replaces."""
    table = io.StringIO(newline="")
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["id", "file", "exported", "label", "class_name", "source", "probability", "entropy"])
    writer.writerows([p.id, p.file, p.target, p.label, p.class_name, p.source, p.probability, p.entropy]
                     for p in placements)
    checkpoint.atomic_write_bytes(out_real / MANIFEST, table.getvalue().encode())


def _place(source: pathlib.Path, target: pathlib.Path, mode: str, out_real: pathlib.Path) -> None:
    """Copies or links `source` to `target`, which must not exist yet (nothing existing is followed)."""
    try:
        if mode == "copy":
            with open(source, "rb") as reader, open(target, "xb") as writer:
                shutil.copyfileobj(reader, writer, 1 << 20)
            shutil.copystat(source, target)
        elif mode == "link":
            os.link(source, target)
        else:
            os.symlink(source, target)
    except OSError as error:
        hint = ("hard links cannot cross file systems: use --mode=copy or --mode=symlink, and "
                if error.errno == errno.EXDEV else "fix that, and ")
        raise ExportError(f"writing {target} failed ({error.strerror or error}); the export in {out_real} is "
                          f"incomplete: {hint}run the same command with --overwrite.") from error


# ------------------------------------------------------------------------------------------ the network
@dataclasses.dataclass(frozen=True)
class Network:
    """One seed's trained network from a run's newest checkpoint, and how the run read its data."""

    workdir: pathlib.Path
    folder: pathlib.Path  # the seed's folder (config.json, labels.csv)
    model: ml_collections.ConfigDict  # the pinned config.model
    saved_shapes: dict  # {parameter path: one seed's shape}
    params: dict  # one seed's parameters, stacked [1, ...] for algorithm.pool_stats
    seed: int
    iteration: int  # the iteration after which the checkpoint was saved (0: after the initial fit)
    iterations: int  # config.iterations
    finished: bool
    num_passes: int  # config.mc_passes_pool, T'
    chunk_size: int
    image_size: Optional[tuple]  # the run's data.image_size (H, W): new images are resized to it, or None
    pixel_divisor: float
    input_shape: Optional[tuple]  # one sample's shape, as the run's data had it (None: unknown, see `fit`)
    num_classes: Optional[int]
    class_names: Optional[tuple]

    def describe(self) -> str:
        """Which network this is, in words."""
        after = "the initial fit" if self.iteration == 0 else f"iteration {self.iteration}"
        if self.finished:
            return f"the final network of seed {self.seed} (after {after})"
        return (f"the network of seed {self.seed} after {after} of {self.iterations}: the run has not finished, so its "
                "newest checkpoint is used")

    def fit(self, shape: tuple) -> Optional[int]:
        """The class count for which the pinned config.model on samples of `shape` has exactly the saved
        parameters' shapes, or None: then the network does not take samples of that shape."""
        return _classes_at(self.model, tuple(shape), self.saved_shapes)

    def with_input(self, shape: tuple) -> "Network":
        """This network taking samples of `shape` (which `fit` accepts)."""
        num_classes = self.fit(shape)
        assert num_classes is not None, shape
        names = self.class_names if self.num_classes == num_classes else _class_names(self.folder, num_classes)
        return dataclasses.replace(self, input_shape=tuple(shape), num_classes=num_classes, class_names=names)

    @property
    def apply_fn(self):
        return models.make_apply(models.build(self.model, self.num_classes))

    @property
    def mc_key(self) -> jax.Array:
        """The key of the MC-dropout passes: the run's pool-inference key of the iteration after the checkpoint's
        (for a finished run, the one of its final labels.csv)."""
        return algorithm.iteration_keys(jax.random.key(self.seed), self.iteration + 1)[0]


def load_network(workdir, seed_index: int = 0) -> Network:
    """Seed `seed_index`'s network from the newest good checkpoint in `workdir`, without writing anything there."""
    workdir = pathlib.Path(workdir).expanduser()
    folder = seed_folder(workdir, seed_index)
    config = pinned_config(folder)
    newest = checkpoint.load_newest(workdir / runfolder.CHECKPOINT)
    if newest is None:
        raise ExportError(f"{workdir} has no checkpoint ({runfolder.CHECKPOINT}): the run has not finished its "
                          "initial fit; run experiments.main with this --workdir until it has.")
    if newest.problems:
        logging.warning("Using the previous checkpoint %s: %s.", newest.path, "; ".join(newest.problems))
    flat = flax.traverse_util.flatten_dict(newest.state["train_state"]["params"])
    seeds = {np.shape(value)[0] for value in flat.values()}
    if seeds != {config.num_seeds} or seed_index >= config.num_seeds:
        raise ExportError(f"{newest.path} holds {sorted(seeds)} seed(s) but {folder / runfolder.CONFIG} says "
                          f"{config.num_seeds}; the checkpoint is not this run's.")
    params = flax.traverse_util.unflatten_dict({key: np.asarray(value[seed_index: seed_index + 1], np.float32)
                                                for key, value in flat.items()})
    network = Network(
        workdir, folder, config.model, {key: tuple(np.shape(value)[1:]) for key, value in flat.items()}, params,
        int(config.seed), int(newest.state["iteration"]), int(config.iterations), finished(folder),
        int(config.mc_passes_pool), int(config.chunk_size), folder_lib.parse_image_size(config.data.get("image_size")),
        float(config.data.get("pixel_divisor", 255.0)), None, None, None)
    candidates = _run_input_shapes(config, folder)
    for shape in candidates:
        if network.fit(shape) is not None:
            return network.with_input(shape)
    if candidates:
        raise ExportError(f"{newest.path} does not fit the network of {folder / runfolder.CONFIG} on the run's samples "
                          f"of shape {candidates[0]}; the checkpoint is not this run's.")
    return network  # the run's sample shape is unknown: the new data's is taken if the parameters fit it


def _param_shapes(model: ml_collections.ConfigDict, num_classes: int, shape: tuple) -> dict:
    module = models.build(model, num_classes)
    x = np.zeros((1, *shape), np.float32)
    tree = jax.eval_shape(lambda key: module.init(key, x, deterministic=True)["params"], jax.random.key(0))
    return {key: tuple(value.shape) for key, value in flax.traverse_util.flatten_dict(flax.core.unfreeze(tree)).items()}


def _classes_at(model: ml_collections.ConfigDict, shape: tuple, saved: dict) -> Optional[int]:
    """The class count C for which config.model on samples of `shape` has the `saved` parameter shapes, or None.
    C is solved from how the parameter shapes grow from C = 1 to C = 2 (linearly: an output layer), then checked."""
    try:
        one, two = _param_shapes(model, 1, shape), _param_shapes(model, 2, shape)
    except Exception:  # noqa: BLE001  (any network, the user's too, may fail on a shape it cannot take)
        return None
    if set(one) != set(saved) or any(len(one[key]) != len(saved[key]) for key in one):
        return None
    guesses = set()
    for key in one:
        for size_1, size_2, size in zip(one[key], two[key], saved[key]):
            if size_1 != size_2:
                step = size_2 - size_1
                if (size - size_1) % step:
                    return None
                guesses.add(1 + (size - size_1) // step)
    for num_classes in sorted(guesses):
        if num_classes >= 2 and _param_shapes(model, num_classes, shape) == saved:
            return num_classes
    return None


def _run_input_shapes(config: ml_collections.ConfigDict, folder: pathlib.Path) -> list[tuple]:
    """The shapes one sample of the run's data may have had (several where only the parameters can tell: the
    channels of data.color="auto"), from the pinned config and at most one file's header; [] when unknown."""
    data = config.data
    if data.name == "folder":
        size = folder_lib.parse_image_size(data.get("image_size")) or _first_image_size(data, folder)
        if size is None:
            return []
        return [(*size, channels) for channels in {"gray": (1,), "rgb": (3,)}.get(data.get("color"), (1, 3))]
    if data.name == "npz" and data.get("path"):
        shape = _npz_sample_shape(pathlib.Path(data.path).expanduser())
        return [] if shape is None else [shape]
    return [KNOWN_INPUT_SHAPES[data.name]] if data.name in KNOWN_INPUT_SHAPES else []


def _first_image_size(data: ml_collections.ConfigDict, folder: pathlib.Path) -> Optional[tuple]:
    """(H, W) of the first image of labels.csv still in data.path, read from its header (the run took one size)."""
    try:
        rows = read_labels(folder)
    except ExportError:
        return None
    root = pathlib.Path(data.path or "").expanduser()
    for row in rows:
        path = root / (row.get("file") or "")
        if row.get("file") and not unsafe_path(row["file"]) and path.is_file():
            try:
                with folder_lib._pillow().open(path) as image:  # the header only: nothing is decoded
                    return image.size[1], image.size[0]
            except Exception:  # noqa: BLE001  (an unreadable file says nothing of the size)
                continue
    return None


def _npz_sample_shape(path: pathlib.Path) -> Optional[tuple]:
    """One sample's shape of `x` in the .npz at `path`, read from the array's header, as the npz loader makes it."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open("x.npy") as handle:
            version = np.lib.format.read_magic(handle)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape = read(handle)[0]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    return (*shape[1:], 1) if len(shape) == 3 else tuple(shape[1:])


def _class_names(folder: pathlib.Path, num_classes: int) -> Optional[tuple]:
    """Names of classes 0..C-1: data.class_names, else labels.csv's (label, class_name) pairs, completed by the
    class folders of data.path; None when the run had no names."""
    config = pinned_config(folder)
    if config.data.get("class_names"):
        names = tuple(name.strip() for name in config.data.class_names.split(","))
        if len(names) == num_classes:
            return names
    try:
        rows = read_labels(folder)
    except ExportError:
        rows = []
    known = {int(row["label"]): row["class_name"] for row in rows if "class_name" in row}
    if set(known) == set(range(num_classes)):
        return tuple(known[label] for label in range(num_classes))
    if config.data.name == "folder":
        try:
            folders = folder_lib.scan(config.data.path, config.data.get("unlabeled_dir") or "").class_folders
        except (ValueError, OSError, TypeError):
            folders = ()
        if len(folders) == num_classes and all(folders[label] == name for label, name in known.items()):
            return tuple(folders)
    if not known:
        return None
    logging.warning("Class(es) %s of the run have no name in %s; their number stands for it.",
                    sorted(set(range(num_classes)) - set(known)), folder / runfolder.LABELS)
    return tuple(known.get(label, str(label)) for label in range(num_classes))


# ------------------------------------------------------------------------------------------ new data
@dataclasses.dataclass(frozen=True)
class NewData:
    """Samples to predict: images [N, ...] float32 (as the run's network takes them), each one's id and file."""

    images: np.ndarray
    ids: tuple  # [N] ids as labels.csv has them: the row of `x` (int), or for a folder each file's path (str)
    files: Optional[tuple]  # [N] paths relative to the folder, POSIX (None: an .npz)
    source: str  # where they came from, in words
    network: Network  # the network, with the input shape these samples have


def read_new_data(path, network: Network, resize: bool = False) -> NewData:
    """A folder of PNG / JPEG images (every one below it, in class folders or not, sorted by path) or an .npz `x`,
    read as the run read its data; refuses samples of another shape than `network` takes, naming one."""
    path = pathlib.Path(path).expanduser()
    if path.is_dir():
        return _read_folder(path, network, resize)
    if path.is_file() and path.suffix.lower() == ".npz":
        return _read_npz(path, network)
    raise ExportError(f"--data={path} is neither a folder of images nor an .npz file; give one of them.")


def _read_folder(path: pathlib.Path, network: Network, resize: bool) -> NewData:
    root = pathlib.Path(os.path.realpath(path))
    skipped: list[str] = []
    files = sorted(folder_lib._walk(root, "", skipped, set()))  # hidden entries skipped, links out of root refused
    if not files:
        raise ExportError(f"--data={path} holds no PNG / JPEG images; give a folder of images (any subfolders) or an "
                          ".npz.")
    shape = network.input_shape
    if shape is not None and len(shape) != 3:
        raise ExportError(f"the network takes samples of shape {shape}, not images; give them as an .npz `x` "
                          f"[N, {', '.join(map(str, shape))}].")
    size = network.image_size or (shape[:2] if resize and shape is not None else None)
    arrays = folder_lib.read_images(root, files, size)  # no cache: nothing is written for a one-off read
    if shape is None:  # the run's sample shape is unknown: these images' size, with channels the parameters take
        height, width = arrays[0].shape[:2]
        fitting = next(((height, width, c) for c in (1, 3) if network.fit((height, width, c)) is not None), None)
        if fitting is None:
            raise ExportError(f"{root / files[0]} is {height}x{width} pixels, which the network does not take (its "
                              "parameters fit other input); resize the images to the run's size.")
        network, shape = network.with_input(fitting), fitting
    for file, pixels in zip(files, arrays):
        if pixels.shape[:2] != shape[:2]:
            (h, w), (height, width) = pixels.shape[:2], shape[:2]
            raise ExportError(f"{root / file} is {h}x{w} pixels but the network takes {height}x{width}x{shape[2]} "
                              f"images; pass --resize to resize every image to {height}x{width} as it is read "
                              f"(bilinear, as --config.data.image_size={height}x{width} does), or resize the files.")
    converted = sum((pixels.ndim == 3) != (shape[2] == 3) for pixels in arrays)
    if converted:
        logging.info("%d of the %d images converted to %s, as the network takes.", converted, len(files),
                     "RGB" if shape[2] == 3 else "gray (luma)")
    images = unit_float(folder_lib.stack(arrays, files, shape[2]), network.pixel_divisor)
    return NewData(images, tuple(files), tuple(files), f"the {len(files)} images in {root}",
                   network)


def _read_npz(path: pathlib.Path, network: Network) -> NewData:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            x = arrays["x"] if "x" in arrays else None
            keys = sorted(arrays.files)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise ExportError(f"{path} cannot be read as .npz ({error}); save it with numpy.savez.") from error
    if x is None:
        raise ExportError(f"{path} holds no array 'x' (it has {keys}); store the samples as x [N, H, W, C], [N, H, W] "
                          "or [N, D].")
    images = npz_lib._npz_images(path, "x", x, network.pixel_divisor)
    shape, wanted = images.shape[1:], network.input_shape
    if len(images) == 0:
        raise ExportError(f"{path}: 'x' holds no samples; give at least one.")
    if wanted is None:
        if network.fit(shape) is None:
            raise ExportError(f"{path}: 'x' holds samples of shape {shape}, which the network does not take (its "
                              "parameters fit other input); give samples of the run's shape.")
        network = network.with_input(shape)
    elif shape != wanted:
        remedy = (f"resize them to {wanted[0]}x{wanted[1]} with {wanted[2]} channel(s) before saving, or give a folder "
                  "of image files with --resize" if len(wanted) == 3 else f"give x [N, {', '.join(map(str, wanted))}]")
        raise ExportError(f"{path}: 'x' holds samples of shape {shape} but the network takes {wanted}; {remedy}.")
    return NewData(images, tuple(range(len(images))), None, f"the {len(images)} samples of {path}",
                   network)


# ------------------------------------------------------------------------------------------ predictions
@dataclasses.dataclass(frozen=True)
class Predictions:
    """Per sample: the MC-mean probabilities [N, C] (eq. 7), the prediction [N] (their argmax), its probability
    [N] and the normalized entropy [N] (eq. 3)."""

    mean_probs: np.ndarray
    prediction: np.ndarray
    probability: np.ndarray
    entropy: np.ndarray
    num_passes: int


def predict(network: Network, images: np.ndarray, num_passes: Optional[int] = None) -> Predictions:
    """`num_passes` (default: the run's T' = config.mc_passes_pool) MC-dropout passes of `network` over images
    [N, ...], in the run's fixed-size chunks."""
    passes = network.num_passes if num_passes is None else int(num_passes)
    if passes < 1:
        raise ExportError(f"--passes={passes}: MC dropout needs at least 1 pass; give --passes=10 or so.")
    stats = algorithm.pool_stats(network.apply_fn, network.params, images, jnp.stack([network.mc_key]), passes,
                                 network.chunk_size, shared=True, seed_axis="map")
    mean_probs, entropy = np.asarray(stats.mean_probs[0]), np.asarray(stats.entropy[0])
    prediction = np.argmax(mean_probs, axis=1)
    probability = np.take_along_axis(mean_probs, prediction[:, None], axis=1)[:, 0]
    return Predictions(mean_probs, prediction, probability, entropy, passes)


def check_csv_out(out, overwrite: bool = False) -> pathlib.Path:
    """The CSV file to write, refused up front when it exists (without `overwrite`) or its folder does not."""
    out = pathlib.Path(out).expanduser()
    if out.is_dir():
        raise ExportError(f"--out={out} is a folder; give the path of the CSV file to write, e.g. "
                          f"{out}/predictions.csv.")
    if os.path.lexists(out) and not overwrite:
        raise ExportError(f"--out={out} exists; choose another file, or pass --overwrite to replace it.")
    if not out.parent.is_dir():
        raise ExportError(f"--out={out}: the folder {out.parent} does not exist; create it first.")
    return out


def write_predictions(out, new_data: NewData, predictions: Predictions) -> None:
    """The predictions CSV (written atomically): id, file (folder data), prediction, class_name (with names),
    probability, entropy."""
    names = new_data.network.class_names
    columns = ["id"] + (["file"] if new_data.files is not None else []) + ["prediction"] + \
        (["class_name"] if names else []) + ["probability", "entropy"]
    table = io.StringIO(newline="")
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(columns)
    for row, sample_id in enumerate(new_data.ids):
        label = int(predictions.prediction[row])
        writer.writerow([sample_id] + ([new_data.files[row]] if new_data.files is not None else []) + [label]
                        + ([names[label]] if names else [])
                        + [f"{predictions.probability[row]:.6f}", f"{predictions.entropy[row]:.6f}"])
    checkpoint.atomic_write_bytes(pathlib.Path(out), table.getvalue().encode())


def prediction_lines(out, new_data: NewData, predictions: Predictions) -> list[str]:
    """What predict says: which network, how many passes, where the CSV went, and the count per class."""
    network = new_data.network
    names = network.class_names or tuple(map(str, range(network.num_classes)))
    counts = np.bincount(predictions.prediction, minlength=network.num_classes)
    return [f"{len(predictions.prediction)} predictions of {new_data.source} by {network.describe()}, "
            f"{predictions.num_passes} MC-dropout passes each, written to {out}.",
            "per class: " + ", ".join(f"{name} {count}" for name, count in zip(names, counts.tolist()))]
