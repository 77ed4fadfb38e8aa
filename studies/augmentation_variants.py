"""The augmentation study's variants, prototype warps, runs and README, without flags (studies/augmentation_study.py
runs them): what closes the gap to the paper's "around 85 %" with 50 augmented labels (section 5, "Data
Augmentation")?

Every variant is a supervised fit on 50 balanced labels at paper scale (the 60,000-image pool; for a supervised
row the pool only decides which 50 labels are drawn), evaluated on the 10,000 test images: the preset
`augmented_supervised_50` or `supervised_50` of experiments/configs/mnist.py with a few config fields overridden
(VARIANTS). The seeds of a variant run at once in one Driver (config.num_seeds; lax.map on the CPU, so seed s is
bit for bit `--config.seed=s` alone). Each finished variant is kept in OUTDIR/study.json (overrides, per-seed test
accuracy, mean, sample std, seconds, commit, device, commands) and not run again; README.md is made from
study.json alone.

Prototype variants (`Variant.prototype`) measure augmentations the package could not express when they ran
(shifts: since then `config.train.augment_shift`, measured as `shift_10_package`) or cannot (nearest-neighbour
sampling, 'nearest' fill, a channel shift), as the authors' code did it (mrottmann/DeepBASS, deepbass.py: keras
ImageDataGenerator(rotation_range=10, width_shift_range=0.05, height_shift_range=0.05, channel_shift_range=0.05),
keras 2.0.8: nearest-neighbour sampling (order 0) and fill_mode 'nearest'). Each prototype is registered as a
named warp (`augment.register_warp`, PROTOTYPES) that its variants select with `config.train.augment_warp`, so
their config.json names it; `experiments.main` does not register them, so only this study runs them. They are
not part of the default variants.
"""

from __future__ import annotations

import functools
import json
import pathlib
import time
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.ndimage import map_coordinates

from deepbass_jax import augment, data, driver as driver_lib
from deepbass_jax.workdir import runfolder
from experiments import provenance, reporting
from experiments.configs import mnist

PAPER_ACCURACY = 85.0  # "around 85 %" (section 5, "Data Augmentation"; text, not a table)
CPU_SCALE = {"augmented_supervised_50": (77.56, 1.52, 5), "supervised_50": (72.92, 2.22, 5)}  # results/mnist


class Prototype(NamedTuple):
    """An augmentation beyond deepbass_jax.augment's affine warp (see `prototype_affine`); each is registered as a
    warp of its own (PROTOTYPES: augment.WARPS name -> prototype), which its variants select."""

    shift: float = 0.0  # max translation as a fraction of height / width, U(-s, s) each (keras *_shift_range)
    order: int = 1  # 0: nearest neighbour (keras 2.0.8), 1: bilinear (deepbass_jax.augment)
    fill: str = "constant"  # map_coordinates mode outside the image: "constant" (0) or "nearest" (keras default)
    channel_shift: float = 0.0  # U(-c, c) added to every pixel, clipped to the image's [min, max] (keras)


class Variant(NamedTuple):
    preset: str  # augmented_supervised_50 or supervised_50
    what: str  # the change, in words
    overrides: dict  # config field path -> value, on top of the preset
    seeds: int = 3  # default number of seeds (0 .. seeds-1)

    @property
    def prototype(self) -> Optional[Prototype]:
        """The prototype whose warp the variant selects (config.train.augment_warp); None: the package's own."""
        return PROTOTYPES.get(self.overrides.get(WARP))


AUG, PLAIN = "augmented_supervised_50", "supervised_50"
KERAS = Prototype(shift=0.05, order=0, fill="nearest", channel_shift=0.05)  # the authors' ImageDataGenerator
WARP = "train.augment_warp"  # the config field that names the warp (deepbass_jax.augment.WARPS)
PROTOTYPES = {  # warp name -> the prototype it warps with (registered below, with `prototype_affine`)
    "keras_prototype_authors": KERAS,
    "prototype_shift_5": Prototype(shift=0.05),
    "prototype_shift_10": Prototype(shift=0.1),
    "prototype_nearest": Prototype(order=0),
}
VARIANTS = {
    # 1. The presets as they are.
    "augmented": Variant(AUG, "the preset: rotation < 10 deg, scale <= 5 %, 100 epochs", {}, seeds=5),
    "plain": Variant(PLAIN, "the preset: no augmentation, 100 epochs", {}, seeds=5),
    # 2. The length of the initial fit (epochs over the x20-upsampled labels; 4 steps of 256 per epoch).
    "augmented_300_epochs": Variant(AUG, "300 epochs", {"initial_epochs": 300}),
    "plain_300_epochs": Variant(PLAIN, "300 epochs", {"initial_epochs": 300}),
    "augmented_1000_epochs": Variant(AUG, "1000 epochs", {"initial_epochs": 1000}),
    "plain_1000_epochs": Variant(PLAIN, "1000 epochs", {"initial_epochs": 1000}),
    # 3. How strongly the ground truth is warped, and how many views per epoch (existing config fields).
    "rotate_20": Variant(AUG, "rotation < 20 deg", {"train.augment_degrees": 20.0}),
    "scale_10": Variant(AUG, "scale <= 10 %", {"train.augment_scale": 0.1}),
    "rotate_15_scale_10": Variant(AUG, "rotation < 15 deg, scale <= 10 %",
                                  {"train.augment_degrees": 15.0, "train.augment_scale": 0.1}),
    "rotate_20_scale_15": Variant(AUG, "rotation < 20 deg, scale <= 15 %",
                                  {"train.augment_degrees": 20.0, "train.augment_scale": 0.15}),
    "rotate_25_scale_20": Variant(AUG, "rotation < 25 deg, scale <= 20 %",
                                  {"train.augment_degrees": 25.0, "train.augment_scale": 0.2}),
    "upsample_100": Variant(AUG, "upsample x100 (5x the views and steps per epoch)", {"train.upsample": 100}),
    "upsample_100_20_epochs": Variant(AUG, "upsample x100, 20 epochs (the preset's 400 steps)",
                                      {"train.upsample": 100, "initial_epochs": 20}),
    # 4. Shifts, as the package does them now (train.augment_shift; the preset shift_augmented_supervised_50).
    "shift_10_package": Variant(AUG, "shift <= 10 % (2.8 px) with train.augment_shift: shift_10 in the package "
                                "(preset shift_augmented_supervised_50)", {"train.augment_shift": 0.1}, seeds=5),
    # Prototypes: augmentations the package cannot express (see the module doc); not run by default.
    "keras_authors": Variant(AUG, "prototype: the authors' keras ImageDataGenerator: rotation < 10 deg, shift "
                             "<= 5 % (1.4 px), channel shift 0.05, nearest neighbour, 'nearest' fill, no scaling",
                             {"train.augment_scale": 0.0, WARP: "keras_prototype_authors"}),
    "shift_5": Variant(AUG, "prototype: the preset plus shift <= 5 % (1.4 px), bilinear, zero fill",
                       {WARP: "prototype_shift_5"}),
    "shift_10": Variant(AUG, "prototype: the preset plus shift <= 10 % (2.8 px), bilinear, zero fill",
                        {WARP: "prototype_shift_10"}, seeds=5),
    "shift_10_rotate_15_scale_10": Variant(AUG, "prototype: rotation < 15 deg, scale <= 10 %, shift <= 10 % "
                                           "(2.8 px), bilinear, zero fill",
                                           {"train.augment_degrees": 15.0, "train.augment_scale": 0.1,
                                            WARP: "prototype_shift_10"}),
    "shift_5_300_epochs": Variant(AUG, "prototype: shift_5, 300 epochs",
                                  {"initial_epochs": 300, WARP: "prototype_shift_5"}),
    "nearest": Variant(AUG, "prototype: the preset with nearest-neighbour sampling instead of bilinear",
                       {WARP: "prototype_nearest"}),
    "keras_authors_300_epochs": Variant(AUG, "prototype: keras_authors, 300 epochs",
                                        {"train.augment_scale": 0.0, "initial_epochs": 300,
                                         WARP: "keras_prototype_authors"}),
}
DEFAULT_VARIANTS = [name for name, variant in VARIANTS.items() if variant.prototype is None]


# ------------------------------------------------------------------------------------------------- configs
def variant_config(name: str, seed: int = 0, num_seeds: int = 1, data_dir: Optional[str] = None):
    """The config of variant `name` for seeds seed .. seed + num_seeds - 1 (no labels export)."""
    variant = VARIANTS[name]
    config = mnist.get_config(variant.preset)
    config.update_from_flattened_dict(variant.overrides)
    config.seed, config.num_seeds = seed, num_seeds
    config.labels_export_every = -1  # a results table needs no labels.csv (nor the final pass over the pool)
    config.data.data_dir = data_dir
    return config


def seed_list(name: str, seeds: Optional[list[int]] = None) -> list[int]:
    """The seeds to run: `seeds` (consecutive) or 0 .. Variant.seeds - 1."""
    seeds = sorted(seeds) if seeds else list(range(VARIANTS[name].seeds))
    if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        raise ValueError(f"seeds {seeds} must be consecutive: a variant's seeds run at once (config.num_seeds).")
    return seeds


def main_command(name: str, seeds: list[int], data_dir: Optional[str]) -> Optional[str]:
    """The experiments.main command that runs the same seeds (None for a prototype: the package cannot)."""
    variant = VARIANTS[name]
    if variant.prototype is not None:
        return None
    overrides = {**variant.overrides, "seed": seeds[0], "num_seeds": len(seeds), "labels_export_every": -1}
    if data_dir:
        overrides["data.data_dir"] = data_dir
    return (f"python -m experiments.main --config=experiments/configs/mnist.py:{variant.preset} "
            + " ".join(f"--config.{key}={value}" for key, value in overrides.items())
            + f" --workdir=/tmp/augmentation_{name}")


# ------------------------------------------------------------------------------------------------ prototype
def prototype_affine(images: jax.Array, key: jax.Array, max_degrees: float, max_scale: float,
                     max_shift: float = 0.0, *, prototype: Prototype) -> jax.Array:
    """deepbass_jax.augment.random_affine plus `prototype`'s translation, sampling order, fill and channel shift
    (the prototype's shift, drawn as below: config.train.augment_shift must be 0).

    Per sample: degrees, scale_h, scale_w as augment.random_parameters; a shift (dy, dx) ~ U(-s, s) * (H, W)
    moves the warped image down / right; map_coordinates(order, mode=fill, cval=0); then, with a channel shift
    c, U(-c, c) is added to every pixel and the result clipped to that image's [min, max] (keras 2.0.8
    random_channel_shift).
    """
    if max_shift:
        raise ValueError(f"a prototype brings its own shift; got config.train.augment_shift={max_shift} as well.")
    batch, height, width, _ = images.shape
    parameter_key, shift_key, channel_key = jax.random.split(key, 3)
    degrees, scale_h, scale_w = augment.random_parameters(parameter_key, batch, max_degrees, max_scale)
    shifts = jax.random.uniform(shift_key, (batch, 2), minval=-prototype.shift, maxval=prototype.shift)
    shifts = shifts * jnp.array([height, width], jnp.float32)

    def one(image, angle, sh, sw, shift):
        rows, cols = augment.source_coordinates(height, width, angle, sh, sw, shift[0], shift[1])
        sample = lambda channel: map_coordinates(channel, [rows, cols], order=prototype.order,  # noqa: E731
                                                 mode=prototype.fill, cval=0.0)
        return jax.vmap(sample, in_axes=2, out_axes=2)(image)

    warped = jax.vmap(one)(images, degrees, scale_h, scale_w, shifts)
    if prototype.channel_shift:
        delta = jax.random.uniform(channel_key, (batch, 1, 1, 1), minval=-prototype.channel_shift,
                                   maxval=prototype.channel_shift)
        low = warped.min(axis=(1, 2, 3), keepdims=True)
        high = warped.max(axis=(1, 2, 3), keepdims=True)
        warped = jnp.clip(warped + delta, low, high)
    return warped.astype(images.dtype)


# Each prototype is a named warp (once per process: a name traced into a compiled step keeps its function).
for _name, _prototype in PROTOTYPES.items():
    augment.register_warp(_name, functools.partial(prototype_affine, prototype=_prototype))


# ---------------------------------------------------------------------------------------------------- runs
def run_variant(name: str, seeds: list[int], dataset: data.Dataset, data_dir: Optional[str],
                workroot: pathlib.Path) -> dict:
    """Runs (or resumes) variant `name` for `seeds` at once; returns its study.json entry."""
    variant = VARIANTS[name]
    config = variant_config(name, seeds[0], len(seeds), data_dir)
    workdir = workroot / name / f"seeds_{seeds[0]}_{seeds[-1]}"
    folders = [runfolder.seed_folder(workdir, seed, len(seeds)) for seed in seeds]
    commit = provenance.commit()  # the code that runs, taken before it runs
    started = time.time()
    steps = None
    if not all((folder / runfolder.SUMMARY).exists() for folder in folders):
        driver = driver_lib.Driver(config, workdir, dataset=dataset)
        driver.run()
        steps = np.asarray(driver.states.step).reshape(-1).tolist()
    seconds = time.time() - started
    accuracy = [round(100 * json.loads((folder / runfolder.SUMMARY).read_text())["test_accuracy"], 2)
                for folder in folders]
    mean, std = reporting.mean_std(accuracy)
    return {
        "variant": name,
        "preset": variant.preset,
        "what": variant.what,
        "overrides": variant.overrides,
        "prototype": None if variant.prototype is None else variant.prototype._asdict(),
        "initial_epochs": config.initial_epochs,
        "upsample": config.train.upsample,
        "augment_degrees": config.train.augment_degrees,
        "augment_scale": config.train.augment_scale,
        "augment_warp": config.train.augment_warp,
        "seeds": seeds,
        "test_accuracy": accuracy,
        "mean": round(mean, 2),
        "std": None if std is None else round(std, 2),
        "training_steps": steps,  # per seed (None when the runs had finished before this invocation)
        "seconds": round(seconds, 1),  # all seeds together, this invocation (0 when only read back)
        "commit": commit,
        "device": provenance.device(),
        "command": main_command(name, seeds, data_dir),
        "study_command": f"python -m studies.augmentation_study --variants={name} "
                         f"--seeds={','.join(map(str, seeds))}" + (f" --data_dir={data_dir}" if data_dir else ""),
    }


def load_study(outdir: pathlib.Path) -> dict:
    path = outdir / "study.json"
    return json.loads(path.read_text()) if path.exists() else {"variants": {}, "invocations": []}


def pending(plan: dict[str, list[int]], study: dict) -> list[str]:
    """The variants of `plan` (name -> seeds) that study.json does not hold yet with at least those seeds (the
    study resumes by skipping the others; a variant asked for with other seeds runs again and is replaced)."""
    return [name for name, seeds in plan.items()
            if not set(seeds) <= set(study["variants"].get(name, {}).get("seeds", []))]


# ------------------------------------------------------------------------------------------------- report
def _change(entry: dict) -> str:
    fields = ", ".join(f"`{key}={value}`" for key, value in entry["overrides"].items()) or "-"
    return fields + (" + prototype" if entry["prototype"] else "")


def paired_delta(entry: dict, base: Optional[dict]) -> str:
    """Mean over the seeds both ran of (entry - base) per seed (a seed fixes the 50 labels and the network)."""
    common = [(a, base[s]) for s, a in zip(entry["seeds"], entry["test_accuracy"]) if base and s in base]
    return f"{reporting.mean(a - b for a, b in common):+.2f}" if common else ""


def write_report(outdir: pathlib.Path) -> str:
    """README.md of `outdir` from study.json alone; returns its text."""
    study = load_study(outdir)
    entries = [study["variants"][name] for name in VARIANTS if name in study["variants"]]
    base = {entry["preset"]: dict(zip(entry["seeds"], entry["test_accuracy"])) for entry in entries
            if entry["variant"] in ("augmented", "plain")}
    lines = [
        "# 50 labels with and without ground-truth augmentation: the paper's \"around 85 %\"",
        "",
        "Generated by `studies/augmentation_study.py` from `study.json`; do not edit by hand. A supervised fit "
        "on 50 balanced labels (5 per class) of the full 60,000-image MNIST training set, evaluated on the 10,000 "
        "test images; test accuracy in %, mean (sample std) over the seeds. Each variant is the preset "
        "`augmented_supervised_50` or `supervised_50` of `experiments/configs/mnist.py` with the fields shown "
        "changed (defaults: 100 epochs over the labels upsampled x20, i.e. 4 Adam steps of 256 per epoch; "
        "augmentation: rotation U(-10, 10) deg, height/width scale U(0.95, 1.05), bilinear, zero fill, drawn "
        "anew for every view in every batch). delta: the mean over the same seeds of (variant - preset as it is, "
        "`augmented` or `plain`), seed by seed: a seed fixes the 50 labels, and the labels move the accuracy by "
        "a few points.",
        "",
        "| variant | preset | change | fields | seeds | per seed | mean (std) | delta | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| paper (section 5, text) | augmented | rotation < 10 deg, scaling <= 5 % | - | ? | - | about "
        f"{PAPER_ACCURACY:.0f} | - | - |",
    ]
    for preset, (mean, std, runs) in CPU_SCALE.items():
        lines.append(f"| results/mnist, `cpu_{preset}` | {preset} | 6,000-image pool (other labels drawn) | - | "
                     f"{runs} | - | {reporting.cell(mean, std)} | - | - |")
    for entry in entries:
        delta = "" if entry["variant"] in ("augmented", "plain") else paired_delta(entry, base.get(entry["preset"]))
        per_seed = ", ".join(f"s{s}: {a:.2f}" for s, a in zip(entry["seeds"], entry["test_accuracy"]))
        lines.append(f"| `{entry['variant']}` | {entry['preset']} | {entry['what']} | {_change(entry)} | "
                     f"{len(entry['seeds'])} | {per_seed} | {reporting.cell(entry['mean'], entry['std'])} | "
                     f"{delta} | {entry['seconds']:.0f} |")
    lines += [
        "",
        "Prototype rows (`+ prototype`) ran an augmentation the package could not express when they ran: "
        "`prototype_affine` of `studies/augmentation_variants.py` (adds a translation, nearest-neighbour "
        "sampling, 'nearest' fill and a channel shift as the authors' keras `ImageDataGenerator(rotation_range=10, "
        "width_shift_range=0.05, height_shift_range=0.05, channel_shift_range=0.05)` in mrottmann/DeepBASS "
        "`deepbass.py`) warped their ground truth instead of `deepbass_jax.augment.random_affine`: the study now "
        "registers each prototype as a named warp that the variant's `config.train.augment_warp` selects (the "
        "rows recorded before that ran with the study replacing `random_affine` for their run). No "
        "`experiments.main` command reproduces them. Shifts are now `config.train.augment_shift`: "
        "`shift_10_package` is `shift_10` in the package (other random draws, the same distribution; the preset "
        "`shift_augmented_supervised_50`). `seconds`: wall time of all seeds together on a shared "
        "2-core CPU (other jobs running), so only a rough cost.",
        "",
    ]
    if entries:
        def summary(entry: dict) -> str:
            gap = entry["mean"] - PAPER_ACCURACY
            return (f"`{entry['variant']}`, {reporting.cell(entry['mean'], entry['std'])} over "
                    f"{len(entry['seeds'])} seeds, {abs(gap):.2f} points {'above' if gap >= 0 else 'below'} about "
                    f"{PAPER_ACCURACY:.0f} %")

        closest = min(entries, key=lambda entry: abs(entry["mean"] - PAPER_ACCURACY))
        best = max(entries, key=lambda entry: entry["mean"])
        lines += [f"Closest to the paper: {summary(closest)}. Highest: {summary(best)}.", ""]
    not_run = [name for name in VARIANTS if name not in study["variants"]]
    if not_run:
        lines += ["Defined in `VARIANTS` but not run (yet): "
                  + ", ".join(f"`{name}` ({VARIANTS[name].what})" for name in not_run) + ".", ""]
    lines += [
        "## What the authors' code did",
        "",
        "The paper's text says rotations below 10 degrees and scaling of up to 5 % in height and width. The "
        "authors' published script (mrottmann/DeepBASS, `deepbass.py`, `augment = False` by default, so no "
        "published run used it) builds `ImageDataGenerator(channel_shift_range=0.05, rotation_range=10, "
        "width_shift_range=0.05, height_shift_range=0.05)`: up to 5 % of the height and width is a *shift* "
        "(up to 1.4 pixels), not a scaling (no `zoom_range`), plus a random brightness offset of up to 0.05 "
        "clipped to the image's range. Keras 2.0.8 (their version) resamples with `order=0` (nearest "
        "neighbour) and fills with `fill_mode='nearest'`, and `fit_generator` took "
        "`X_sample.shape[0] // batch_size` = 3 steps per epoch (100 epochs: 300 steps; this package: 4 per "
        "epoch). `keras_authors` is that generator.",
        "",
        "## Commands",
        "",
        "```bash",
    ]
    for entry in entries:
        lines.append(entry["command"] or f"# {entry['variant']}: prototype, only through the study")
    lines += ["# the study itself (resumable: variants already in study.json are skipped)"]
    lines += [reporting.runnable(entry["study_command"]) for entry in entries]
    lines += [f"python -m studies.augmentation_study --report_only --outdir={reporting.shown(outdir)}", "```", "",
              reporting.machines(entries) if entries else "No variant has run yet."]
    return reporting.write_report(outdir, lines)

