"""Sorts a folder run's images into class folders by its labels.csv: the only module with these flags.

  python -m experiments.export_labels --workdir=/tmp/run --out=/tmp/sorted
  python -m experiments.export_labels --workdir=/tmp/run --out=/tmp/sure --sources=given,oracle --mode=link

Every image of the run's folder (data.path) goes to OUT/CLASS/ under its own name (subfolders flattened; a name
taken already in its class folder becomes the file's path with '__' for '/'), by its label in labels.csv (its class
name, else its number), for the rows whose source is in --sources. --mode=copy copies, link makes hard links (no
extra space; the same file as the original, so editing one edits both), symlink makes links to the originals.
OUT/export.csv lists where each image came from. Nothing is written outside OUT, and nothing at all when a check
fails: each refusal is one line. Helpers: deepbass_jax/export.py.
"""

import sys

from absl import app, flags

from deepbass_jax import export


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    values = flags.FLAGS
    try:
        summary = export.export_images(values.workdir, values.out, values.sources, values.mode, values.overwrite,
                                       values.seed_index, values.data_path)
    except (ValueError, OSError) as error:
        sys.exit(f"error: {error}")
    print("\n".join(summary.lines()))


if __name__ == "__main__":
    # Defined here, not on import: experiments.main defines its own --workdir, and tests may import both modules.
    flags.DEFINE_string("workdir", None, "The run's directory (--workdir of experiments.main).")
    flags.DEFINE_string("out", None, "The folder to fill with OUT/CLASS/image files: new or empty (see --overwrite), "
                        "outside the run's images.")
    flags.DEFINE_list("sources", list(export.SOURCES), "Export the rows of labels.csv with these sources: "
                      + ",".join(export.SOURCES) + ".")
    flags.DEFINE_enum("mode", "copy", export.MODES, "copy the images, hard-link them (link) or symlink them.")
    flags.DEFINE_bool("overwrite", False, "Replace an earlier export in --out (only the files its export.csv lists).")
    flags.DEFINE_integer("seed_index", 0, "A run of several seeds: which one's labels (0: config.seed).")
    flags.DEFINE_string("data_path", None, "The run's images, if they moved since the run (default: its data.path).")
    flags.mark_flags_as_required(["workdir", "out"])
    app.run(main)
