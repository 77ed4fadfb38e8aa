"""Labels new images with a run's network: the only module with these flags.

  python -m experiments.predict --workdir=/tmp/run --data=new_photos/ --out=predictions.csv
  python -m experiments.predict --workdir=/tmp/run --data=new.npz --out=predictions.csv --passes=30

--data is a folder of PNG / JPEG images (every one below it, in class folders or not), read as the run read its
folder (its data.image_size, channels and pixel divisor), or an .npz with `x`. Each row of --out: id (the row of
`x`, or a folder's file path, as labels.csv has ids), file (a folder's), prediction (the class number), class_name (when
the run has names), probability (the MC-dropout mean probability of the prediction over --passes passes, default
the run's config.mc_passes_pool) and entropy (normalized, in [0, 1]). The network is seed --seed_index's from the
run's newest checkpoint: an unfinished run's is used too, and the output says after which iteration. Images of
another size than the network's are refused, naming one (--resize resizes them). Helpers: deepbass_jax/export.py.
"""

import sys

from absl import app, flags

from deepbass_jax import export


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    values = flags.FLAGS
    try:
        out = export.check_csv_out(values.out, values.overwrite)
        network = export.load_network(values.workdir, values.seed_index)
        new_data = export.read_new_data(values.data, network, values.resize)
        predictions = export.predict(new_data.network, new_data.images, values.passes)
        export.write_predictions(out, new_data, predictions)
    except (ValueError, OSError) as error:
        sys.exit(f"error: {error}")
    print("\n".join(export.prediction_lines(out, new_data, predictions)))


if __name__ == "__main__":
    # Defined here, not on import: experiments.main defines its own --workdir, and tests may import both modules.
    flags.DEFINE_string("workdir", None, "The run's directory (--workdir of experiments.main).")
    flags.DEFINE_string("data", None, "A folder of PNG / JPEG images (any subfolders) or an .npz file with x.")
    flags.DEFINE_string("out", None, "The CSV file to write (its folder must exist).")
    flags.DEFINE_integer("seed_index", 0, "A run of several seeds: which one's network (0: config.seed).")
    flags.DEFINE_integer("passes", None, "T', the MC-dropout passes per image (default: the run's mc_passes_pool).")
    flags.DEFINE_bool("resize", False, "Resize images of another size to the network's (bilinear), as they are read.")
    flags.DEFINE_bool("overwrite", False, "Replace --out if it exists.")
    flags.mark_flags_as_required(["workdir", "data", "out"])
    app.run(main)
