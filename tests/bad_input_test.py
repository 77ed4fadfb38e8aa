"""Bad input fails early with a message naming the field or file, what is wrong and what to do; NaN/Inf stops a
run loudly without saving the failed iteration.

`CASES` is the single source of README's table "Bad input and what you see": each case's message column is the
real message with "…" where paths, digests or long lists vary, and the tests check every part of it in order.
`test_readme_table_matches_the_cases` fails until README.md holds exactly that table; print it with

    python -m tests.bad_input_test
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import gzip
import pathlib
import re
import sys
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from deepbass_jax import algorithm, config as config_lib, data, driver as driver_lib, metrics as metrics_lib, oracle
from deepbass_jax.workdir import checkpoint, guard, runfolder
from experiments import main as main_module
from experiments.configs import mnist as mnist_configs
from tests.helpers import toy_config

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Bad input and what you see"
RUN_FILES = (runfolder.CONFIG, runfolder.CHECKPOINT, runfolder.METRICS, runfolder.ORACLE_LOG, runfolder.SUMMARY,
             guard.LOCK)


# ------------------------------------------------------------------------------------------- the cases
@dataclasses.dataclass(frozen=True)
class Case:
    """One row of README's table and how to provoke it."""

    bad_input: str  # column 1: what is wrong
    example: str  # column 2 (markdown): how a user gets there
    error: type  # the exception raised (printed as "FATAL Flags parsing error: ..." for command-line cases)
    message: str  # column 3: the message; "…" stands for parts that vary (paths, digests, long lists)
    stage: str  # "flags": command line; "config": before data loading; "data": while loading, before any
    #             other work; "setup": after loading, before the initial fit; "oracle": FileOracle answers
    provoke: Callable  # (Env) -> None, raises the error

    @property
    def id(self) -> str:
        return re.sub(r"[^a-z0-9]+", "_", self.bad_input.lower().replace("'", " prime")).strip("_")

    def row(self) -> str:
        """The row as the command line shows it: `FATAL Flags parsing error: ...` for a command-line mistake,
        `error: ...` (python -m experiments.main) for the others, and the exception's class after it."""
        shown = "FATAL Flags parsing error" if self.stage == "flags" else "error"
        return f"| {self.bad_input} | {self.example} | `{shown}: {self.message}` ({self.error.__name__}) |"


@dataclasses.dataclass
class Env:
    """What a case needs: a scratch folder, the workdir a run would use, and the MNIST reference files."""

    tmp_path: pathlib.Path
    request: pytest.FixtureRequest

    @property
    def workdir(self) -> pathlib.Path:
        return self.tmp_path / "run"

    @property
    def mnist_dir(self) -> pathlib.Path:
        return self.request.getfixturevalue("mnist_dir")


# The toy runs here are shorter than toy_config's (20 initial epochs, 4 iterations, 12 labels, T = 10) and keep
# the preset's figures; overrides as toy_config takes them ("model.dropout_rate": value, ...).
short_toy_config = functools.partial(toy_config, initial_epochs=20, iterations=4, budget=12, mc_passes_labeled=10,
                                     figures=True)


def _run(config):
    return lambda env: driver_lib.Driver(config, env.workdir)


def _flags(*argv):
    """Parses a command line as experiments.main does, with a config flag of its own."""

    def provoke(env):
        flag_values = flags.FlagValues()
        config_flags.DEFINE_config_file("config", None, "Experiment config file.", flag_values=flag_values)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sys, "argv", ["main", *argv])  # ml_collections looks for --config.FIELD in sys.argv
            main_module.parse_flags(sys.argv, flag_values)

    return provoke


def _python_typo(env):
    config = short_toy_config()
    config.model.dropout = 0.5  # a ConfigDict from a config file accepts new fields; validate() does not
    driver_lib.Driver(config, env.workdir)


def _npz(env, **arrays):
    path = env.tmp_path / "bad.npz"
    np.savez(path, **arrays)
    driver_lib.Driver(short_toy_config(**{"data.name": "npz", "data.path": str(path), "budget": 12}), env.workdir)


def _folder(env, layout):
    """A folder of PNGs: layout maps a relative path to an image's (height, width)."""
    from PIL import Image as image  # Pillow is in the test extra
    root = env.tmp_path / "photos"
    for name, shape in layout.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        image.fromarray(np.zeros(shape, np.uint8)).save(root / name)
    config = short_toy_config(**{"data.name": "folder", "data.path": str(root), "oracle": "file",
                                 "data.cache_dir": str(env.tmp_path / "cache"), "model.architecture": "mlp"})
    driver_lib.Driver(config, env.workdir)


HERE = "tests.custom_network_test"


def _rare_class(env):
    labels = np.array([0] * 25 + [1] * 5)
    path = env.tmp_path / "rare.npz"
    np.savez(path, x=np.random.default_rng(0).normal(size=(30, 2)).astype(np.float32), y=labels)
    config = short_toy_config(**{"data.name": "npz", "data.path": str(path), "initial_per_class": 6})
    driver_lib.Driver(config, env.workdir)


def _small_images(env, preset="smoke", side=3):
    """A preset of experiments/configs/mnist.py on 300 images side x side of a user's .npz."""
    path = env.tmp_path / "small.npz"
    np.savez(path, x=np.zeros((300, side, side), np.uint8), y=np.arange(300) % 10)
    config = mnist_configs.get_config(preset)
    config.data.name, config.data.path, config.test_size = "npz", str(path), 0
    if preset == "smoke":
        config.pool_size = 0
    driver_lib.Driver(config, env.workdir)


def _mnist_config(data_dir):
    config = mnist_configs.get_config("smoke")
    config.data.source, config.data.data_dir = "dir", str(data_dir)
    return config


def _mnist_dir(env, edit):
    """Runs the mnist config on a copy of the reference files (links) after `edit(folder)`."""
    folder = env.tmp_path / "mnist"
    folder.mkdir()
    for stem in data.IDX_FILES:
        (folder / f"{stem}.gz").symlink_to(env.mnist_dir / f"{stem}.gz")
    edit(folder)
    driver_lib.Driver(_mnist_config(folder), env.workdir)


def _replace(stem, payload_of):
    """An edit for `_mnist_dir`: the raw file `stem` becomes payload_of(original decompressed bytes)."""

    def edit(folder):
        original = gzip.decompress((folder / f"{stem}.gz").read_bytes())
        (folder / f"{stem}.gz").unlink()
        (folder / stem).write_bytes(payload_of(original))

    return lambda env: _mnist_dir(env, edit)


def _flip_a_label(raw: bytes) -> bytes:
    payload = bytearray(raw)
    payload[100] = (payload[100] + 1) % 10  # still a valid label: only the checksum can tell
    return bytes(payload)


def _answers(*bad_rows, header=("id", "image", "label")):
    """A FileOracle round asking ids 7 and 2, answered with a valid row for 7 and then `bad_rows`."""

    def provoke(env):
        env.kept = {7: 3} if "label" in header else {}  # the answers the oracle must keep
        file_oracle = oracle.FileOracle(env.tmp_path / "oracle", num_classes=10)
        images = np.zeros((2, 28, 28, 1), np.float32)
        with pytest.raises(oracle.LabelsPending):
            file_oracle.label(np.array([7, 2]), images)
        with open(env.tmp_path / "oracle" / "round_0000" / "answers.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows([[7, "7.png", 3], *bad_rows])
        env.oracle = file_oracle
        file_oracle.label(np.array([7, 2]), images)

    return provoke


_FIELD_LIST = "; the fields of config are …, mc_passes_labeled, mc_passes_pool, mode, model, …"
_SET = "set --config.{} to such a value."
_POOL = "or use a larger pool (config.pool_size, 0 = all)."
_IDX_REMEDY = "delete it and run again to download it afresh, or point --config.data.data_dir at the original files."

CASES = [
    Case("Unknown preset", "`--config=experiments/configs/yinyang.py:nosuch`", ValueError,
         "--config=experiments/configs/yinyang.py:nosuch: unknown yinyang preset 'nosuch'; choose one of "
         "active_semi_supervised, initial, semi_supervised, active, supervised_80, supervised_1000 "
         "(e.g. --config=experiments/configs/yinyang.py:active_semi_supervised).",
         "flags", _flags("--config=experiments/configs/yinyang.py:nosuch")),
    Case("Unknown config field (command line)", "`--config.nosuch=1`", ValueError,
         "--config.nosuch: unknown config field 'nosuch'" + _FIELD_LIST,
         "flags", _flags("--config=experiments/configs/yinyang.py", "--config.nosuch=1")),
    Case("Misspelt config field (command line)", "`--config.model.dropout_rat=0.5`", ValueError,
         "--config.model.dropout_rat: unknown config field 'dropout_rat' (Did you mean \"dropout_rate\" instead "
         "of \"dropout_rat\"?); the fields of config.model are architecture, dropout_masks, dropout_rate, "
         "kernels, kwargs, negative_slope.",
         "flags", _flags("--config=experiments/configs/yinyang.py", "--config.model.dropout_rat=0.5")),
    Case("Unknown config field (Python)", "`config.model.dropout = 0.5` in Python", config_lib.ConfigError,
         "config.model.dropout: unknown config field 'dropout' (a typo?); the fields of config.model are "
         "architecture, dropout_masks, dropout_rate, kernels, kwargs, negative_slope.",
         "config", _python_typo),
    Case("T < 1", "`--config.mc_passes_labeled=0`", config_lib.ConfigError,
         "config.mc_passes_labeled=0 is invalid (T, the MC-dropout passes on the ground truth for theta (eq. 8)): "
         "it must be at least 1; " + _SET.format("mc_passes_labeled"),
         "config", _run(short_toy_config(mc_passes_labeled=0))),
    Case("T' < 1", "`--config.mc_passes_pool=0`", config_lib.ConfigError,
         "config.mc_passes_pool=0 is invalid (T', the MC-dropout passes on the pool): it must be at least 1; "
         + _SET.format("mc_passes_pool"),
         "config", _run(short_toy_config(mc_passes_pool=0))),
    Case("Dropout rate outside (0, 1)", "`--config.model.dropout_rate=1.0`", config_lib.ConfigError,
         "config.model.dropout_rate=1.0 is invalid (the dropout rate of training and of MC dropout): it must be "
         "strictly between 0 and 1; " + _SET.format("model.dropout_rate"),
         "config", _run(short_toy_config(**{"model.dropout_rate": 1.0}))),
    Case("theta outside [0, 1]", "`--config.theta=1.5`", config_lib.ConfigError,
         "config.theta=1.5 is invalid (the pseudo-label entropy threshold; -1 computes it by eq. 8): it must be "
         "-1 (computed) or a fixed threshold in [0, 1]; " + _SET.format("theta"),
         "config", _run(short_toy_config(theta=1.5))),
    Case("Augmentation rotation outside [0, 180)", "`--config.train.augment_degrees=180`", config_lib.ConfigError,
         "config.train.augment_degrees=180.0 is invalid (the maximum rotation of ground-truth augmentation in "
         "degrees; 0 is off): it must be in [0, 180) (the paper: below 10); " + _SET.format("train.augment_degrees"),
         "config", _run(short_toy_config(**{"train.augment_degrees": 180.0}))),
    Case("Augmentation scaling outside [0, 1)", "`--config.train.augment_scale=-0.1`", config_lib.ConfigError,
         "config.train.augment_scale=-0.1 is invalid (the maximum relative height/width scaling of ground-truth "
         "augmentation; 0 is off): it must be in [0, 1) (the paper: 0.05); " + _SET.format("train.augment_scale"),
         "config", _run(short_toy_config(**{"train.augment_scale": -0.1}))),
    Case("Training steps per call of 0 or less", "`--config.train.steps_per_call=0`", config_lib.ConfigError,
         "config.train.steps_per_call=0 is invalid (training steps sent to the device as one program): it must be "
         "at least 1; " + _SET.format("train.steps_per_call"),
         "config", _run(short_toy_config(**{"train.steps_per_call": 0}))),
    Case("Budget of 0 or less", "`--config.budget=0`", config_lib.ConfigError,
         "config.budget=0 is invalid (total ground-truth labels, initial ones included): it must be at least 1; "
         + _SET.format("budget"),
         "config", _run(short_toy_config(budget=0))),
    Case("k (acquire_every) of 0 or less", "`--config.acquire_every=0`", config_lib.ConfigError,
         "config.acquire_every=0 is invalid (k: acquire every k-th iteration): it must be at least 1; "
         + _SET.format("acquire_every"),
         "config", _run(short_toy_config(acquire_every=0))),
    Case("n (acquire_count) of 0 or less", "`--config.acquire_count=-2`", config_lib.ConfigError,
         "config.acquire_count=-2 is invalid (n: labels bought per acquisition): it must be at least 1; "
         + _SET.format("acquire_count"),
         "config", _run(short_toy_config(acquire_count=-2))),
    Case("Unknown acquisition policy", "`--config.policy=most_confused`", config_lib.ConfigError,
         "config.policy='most_confused' is invalid: it must be one of ['above_average', …] or your score as "
         "'package.module:function'; "
         + _SET.format("policy"),
         "config", _run(short_toy_config(policy="most_confused"))),
    Case("Your network cannot be imported", "`--config.model.architecture=my_nets:Wide`", ValueError,
         "model.architecture='my_nets:Wide': cannot import 'my_nets' (No module named 'my_nets'); check the module "
         "path and that its package is importable (on PYTHONPATH or installed).",
         "config", _run(short_toy_config(**{"model.architecture": "my_nets:Wide"}))),
    Case("Your network's fields not a JSON object", "`--config.model.kwargs='{width: 32}'`", ValueError,
         "model.kwargs='{width: 32}' is not JSON (…); give an object such as '{\"features\": 32}'.",
         "config", _run(short_toy_config(**{"model.kwargs": "{width: 32}"}))),
    Case("Your network without dropout", f"`--config.model.architecture={HERE}:NoDropoutNet`", ValueError,
         f"model.architecture='{HERE}:NoDropoutNet' has no dropout: two MC-dropout passes gave the same outputs; "
         "add layers.HashDropout (or nn.Dropout) layers that are on when deterministic=False.",
         "setup", _run(short_toy_config(**{"model.architecture": f"{HERE}:NoDropoutNet"}))),
    Case("Your network's logits of another shape", f"`--config.model.architecture={HERE}:WrongOutputNet`",
         ValueError, f"model.architecture='{HERE}:WrongOutputNet' gives outputs of shape (3,) per batch of 2, but the "
         "data have 2 classes: it must return logits [N, num_classes] (the runner passes num_classes).",
         "setup", _run(short_toy_config(**{"model.architecture": f"{HERE}:WrongOutputNet"}))),
    Case("Your score cannot be imported", "`--config.policy=my_scores:spread`", ValueError,
         "policy='my_scores:spread': cannot import 'my_scores' (No module named 'my_scores'); check the module path "
         "and that its package is importable (on PYTHONPATH or installed).",
         "config", _run(short_toy_config(policy="my_scores:spread"))),
    Case("Your score of another shape", "`--config.policy=tests.custom_score_test:wrong_shape`", ValueError,
         "policy='tests.custom_score_test:wrong_shape' maps probs [T', B, C] = (10, 3, 2) to shape (3, 2); it must "
         "give one score per sample, [B] = (3,).",
         "setup", _run(short_toy_config(policy="tests.custom_score_test:wrong_shape"))),
    Case("Test fraction outside [0, 1)", "`--config.data.test_fraction=1.5`", config_lib.ConfigError,
         "config.data.test_fraction=1.5 is invalid: it must be in [0, 1): the fraction of the labeled samples held "
         "out as the test set (0: none); " + _SET.format("data.test_fraction"),
         "config", _run(short_toy_config(**{"data.test_fraction": 1.5}))),
    Case("Unknown augmentation warp", "`--config.train.augment_warp=keras`", config_lib.ConfigError,
         "config.train.augment_warp='keras' is invalid: it must be one of […'affine'…] (augment.register_warp adds "
         "one); " + _SET.format("train.augment_warp"),
         "config", _run(short_toy_config(**{"train.augment_warp": "keras"}))),
    Case("A folder without classes", "`--config.data.name=folder` on images without class folders or names",
         data.DataError, "…/photos: no class folders …--config.data.class_names…",
         "data", lambda env: _folder(env, {"a.png": (8, 8), "b.png": (8, 8)})),
    Case("A folder of images of different sizes", "8x8 and 6x10 PNGs, no `--config.data.image_size`",
         data.DataError, "…one.png is 8x8 but …two.png is 6x10 (HxW); resize them all with "
         "--config.data.image_size=8x8…",
         "data", lambda env: _folder(env, {"a/one.png": (8, 8), "b/two.png": (6, 10)})),
    Case(".npz label below -1", "`y = [0, 1, -2]`", data.DataError,
         "…/bad.npz: 'y' holds -2; labels are 0..C-1, or -1 for a sample nobody labeled yet.",
         "data", lambda env: _npz(env, x=np.zeros((3, 2)), y=np.array([0, 1, -2]))),
    Case("More initial labels than the pool holds", "`--config.initial_per_class=25` with a 40-sample pool",
         config_lib.ConfigError,
         "config.initial_per_class=25 asks for 50 initial labels (2 classes), more than the pool of 40 samples "
         "holds; lower config.initial_per_class to at most 20, " + _POOL,
         "setup", _run(short_toy_config(**{"data.num_per_class": 20, "initial_per_class": 25}))),
    Case("More initial labels than a class has", "`--config.initial_per_class=6`; class 1 has 5 samples",
         data.DataError,
         "class 1 has only 5 samples, fewer than the 6 initial labels asked per class; lower "
         "config.initial_per_class to at most 5 (class 1 is the rarest), " + _POOL,
         "setup", _rare_class),
    Case("Budget larger than the pool", "`--config.budget=5000` with a 200-sample pool", config_lib.ConfigError,
         "config.budget=5000 exceeds the pool of 200 samples: the oracle cannot label more than the pool holds; "
         "lower config.budget to at most 200, " + _POOL,
         "setup", _run(short_toy_config(budget=5000))),
    Case("Augmentation of data that are not images", "`--config.train.augment_degrees=10` on the yin-yang toy",
         config_lib.ConfigError,
         "config.train.augment_degrees=10.0 / augment_scale=0.0 / augment_shift=0.0 warp images [N, H, W, C], but "
         "'yinyang' has samples of shape (2,); set them to 0.",
         "setup", _run(short_toy_config(**{"train.augment_degrees": 10.0}))),
    Case("Consistency on data that are not images", "`--config.train.strong_augment=True` on the yin-yang toy",
         config_lib.ConfigError,
         "config.train.strong_augment warps images [N, H, W, C], but 'yinyang' has samples of shape (2,); set "
         "--config.train.strong_augment=False.",
         "setup", _run(short_toy_config(**{"train.strong_augment": True}))),
    Case("Pseudo-label confidence outside [0, 1)", "`--config.pseudo_confidence=1`", config_lib.ConfigError,
         "config.pseudo_confidence=1.0 is invalid: it must be 0 (off) or a probability in (0, 1), e.g. 0.95; "
         + _SET.format("pseudo_confidence"),
         "config", _run(short_toy_config(pseudo_confidence=1.0))),
    Case("Data directory does not exist", "`--config.data.data_dir=nowhere`", data.DataError,
         "…/nowhere: data directory does not exist; check --config.data.data_dir.",
         "data", lambda env: driver_lib.Driver(_mnist_config(env.tmp_path / "nowhere"), env.workdir)),
    Case("Data directory lacks files", "`train-images-idx3-ubyte.gz` missing", data.DataError,
         "…/mnist: missing train-images-idx3-ubyte.gz (or train-images-idx3-ubyte); put the four IDX files of "
         "mnist in this directory, gzipped or not, or leave data_dir unset to download them.",
         "data", lambda env: _mnist_dir(env, lambda folder: (folder / "train-images-idx3-ubyte.gz").unlink())),
    Case("Truncated data file", "`train-images-idx3-ubyte` cut to 1,016 bytes", data.DataError,
         "…/train-images-idx3-ubyte: truncated: dimensions (60000, 28, 28) need 47040000 bytes of data, found 1000; "
         + _IDX_REMEDY,
         "data", _replace("train-images-idx3-ubyte", lambda raw: raw[:1016])),
    Case("Not an IDX file (wrong magic)", "a zip file saved as `train-images-idx3-ubyte`", data.DataError,
         "…/train-images-idx3-ubyte: not an IDX file of unsigned bytes (magic 504b0304, expected 00000801 for "
         "labels or 00000803 for images); " + _IDX_REMEDY,
         "data", _replace("train-images-idx3-ubyte", lambda raw: b"PK\x03\x04" + raw[4:])),
    Case("Checksum mismatch", "one label changed in `train-labels-idx1-ubyte`", data.DataError,
         "…/train-labels-idx1-ubyte: checksum mismatch (SHA-256 of the content is …, expected 65a50cbb…): the "
         "file is corrupted or not the original; " + _IDX_REMEDY,
         "data", _replace("train-labels-idx1-ubyte", _flip_a_label)),
    Case(".npz images of a wrong shape", "`x` of shape (5,)", data.DataError,
         "…/bad.npz: 'x' has shape (5,); expected [N, H, W, C], [N, H, W] or [N, D].",
         "data", lambda env: _npz(env, x=np.zeros(5), y=np.array([0]))),
    Case(".npz labels not one per image", "`x` of shape (4, 2), `y` of shape (3,)", data.DataError,
         "…/bad.npz: 4 train images but labels of shape (3,); give exactly one label per image.",
         "data", lambda env: _npz(env, x=np.zeros((4, 2)), y=np.array([0, 1, 1]))),
    Case(".npz with NaN pixels", "`x[1, 0] = nan`", data.DataError,
         "…/bad.npz: train images contain NaN or Inf values (1 of 4 samples); replace or drop those samples first.",
         "data", lambda env: _npz(env, x=np.array([[0, 0], [np.nan, 0], [1, 1], [1, 0]]), y=np.array([0, 1, 1, 0]))),
    Case(".npz labels outside [0, C)", "`y = [0, 1, 3]`, `num_classes=3`", data.DataError,
         "…/bad.npz: train labels must lie in [0, 3), found 0..3; number the classes 0, 1, ..., 2.",
         "data", lambda env: _npz(env, x=np.zeros((3, 2)), y=np.array([0, 1, 3]), num_classes=3)),
    Case(".npz labels numbered from 1", "`y = [1, 2, 3, 1]`", data.DataError,
         "…/bad.npz: labels run 1..3 but class(es) [0] never occur; labels must be 0..C-1 with C classes: store "
         "y - 1 (and y_test - 1) to number them 0..2.",
         "data", lambda env: _npz(env, x=np.zeros((4, 2)), y=np.array([1, 2, 3, 1]))),
    Case("Images smaller than the CNN takes", "3x3 images in an .npz, the MNIST CNN", ValueError,
         "the CNN of section 5 pools twice by 2x2 and needs images of at least 4x4 pixels, but the samples are 3x3; "
         "upscale them, or use --config.model.architecture=mlp.",
         "setup", _small_images),
    Case("A cpu_ preset on a small .npz", "`mnist.py:cpu_supervised_100` on 300 images", ValueError,
         "config.val_size=0 + config.pool_size=6000 exceed the 300 training samples of 'npz'; set "
         "--config.pool_size=0 to use them all.",
         "setup", lambda env: _small_images(env, "cpu_supervised_100", side=8)),
    Case("Answer for an id not asked", "`answers.csv` row `5,5.png,1`", oracle.OracleError,
         "…/answers.csv has invalid answers (valid rows kept: 1):…row 3: id 5 was not asked in this round…"
         "Correct these rows and run the same command again.",
         "oracle", _answers([5, "5.png", 1])),
    Case("Answer label out of range", "`answers.csv` row `2,2.png,10`", oracle.OracleError,
         "…/answers.csv has invalid answers (valid rows kept: 1):…row 3: label '10' of id 2 is not a class: give a "
         "number in [0, 10)…"
         "Correct these rows and run the same command again.",
         "oracle", _answers([2, "2.png", 10])),
    Case("Duplicate answer", "`answers.csv` rows `7,7.png,3` and `7,7.png,4`", oracle.OracleError,
         "…/answers.csv has invalid answers (valid rows kept: 1):…row 3: id 7 is answered twice…"
         "Correct these rows and run the same command again.",
         "oracle", _answers([7, "7.png", 4])),
    Case("Malformed answer row (not a number)", "`answers.csv` row `2,2.png,seven`", oracle.OracleError,
         "…/answers.csv has invalid answers (valid rows kept: 1):…row 3: label 'seven' of id 2 is not a class…"
         "Correct these rows and run the same command again.",
         "oracle", _answers([2, "2.png", "seven"])),
    Case("Malformed answer row (no label)", "`answers.csv` row `2,2.png`", oracle.OracleError,
         "…/answers.csv has invalid answers (valid rows kept: 1):…row 3: id 2 has no label…"
         "Correct these rows and run the same command again.",
         "oracle", _answers([2, "2.png"])),
    Case("Malformed answer row (too many fields)", "`answers.csv` row `2,2.png,1,5`", oracle.OracleError,
         "…/answers.csv has invalid answers (valid rows kept: 1):…row 3: 4 fields where the header has 3 "
         "(a comma too many?)…Correct these rows and run the same command again.",
         "oracle", _answers([2, "2.png", 1, 5])),
    Case("Answer file without a label column", "`answers.csv` header `id,image,class`", oracle.OracleError,
         "…/answers.csv: the header row lacks the column(s) ['label'] (found ['id', 'image', 'class']); start from "
         "…/queries.csv, which has the header row, and fill in 'label'.",
         "oracle", _answers([2, "2.png", 1], header=("id", "image", "class"))),
]


def markdown_table() -> str:
    """README's table: one row per case."""
    lines = ["| Bad input | Example | What you see |", "|---|---|---|"]
    return "\n".join(lines + [case.row() for case in CASES])


def _contains_in_order(message: str, expected: str) -> bool:
    """Whether the parts of `expected` between "…" occur in `message` in that order."""
    position = 0
    for part in expected.split("…"):
        found = message.find(part, position)
        if found < 0:
            return False
        position = found + len(part)
    return True


# ------------------------------------------------------------------------------------------- the tests
@pytest.fixture
def spies(monkeypatch):
    """Counts calls of the data loader and of the training epoch (the initial fit's, the first piece of work of a
    run)."""
    calls = {"data.load": 0, "algorithm.train_epoch": 0}

    def spy(name, function):
        def counted(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return counted

    monkeypatch.setattr(data, "load", spy("data.load", data.load))
    monkeypatch.setattr(algorithm, "train_epoch", spy("algorithm.train_epoch", algorithm.train_epoch))
    return calls


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_input_fails_early_with_a_clear_message(case, tmp_path, request, spies):
    env = Env(tmp_path, request)
    with pytest.raises(case.error) as raised:
        case.provoke(env)
    message = str(raised.value)
    assert _contains_in_order(message, case.message), f"\n{message}\ndoes not read\n{case.message}"
    if case.stage in ("flags", "config"):  # refused before the data is even loaded
        assert spies["data.load"] == 0 and not env.workdir.exists()
    if case.stage in ("data", "setup"):
        assert spies["data.load"] == 1
    assert spies["algorithm.train_epoch"] == 0
    for name in RUN_FILES:  # no config.json, no lock: a rerun with the corrected config may use the same workdir
        assert not (env.workdir / name).exists(), name
    if case.stage == "oracle":  # the valid row was kept: only the missing answers are needed now
        rows = [[i, f"{i}.png", label] for i, label in ((7, 3), (2, 6)) if i not in env.kept]
        with open(tmp_path / "oracle" / "round_0000" / "answers.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([["id", "image", "label"], *rows])
        np.testing.assert_array_equal(env.oracle.label(np.array([7, 2]), np.zeros((2, 28, 28, 1))), [3, 6])


def test_a_refused_config_does_not_pin_the_workdir(tmp_path):
    """After a config is refused, the corrected one runs in the same workdir (config.json was not written)."""
    with pytest.raises(config_lib.ConfigError):
        driver_lib.Driver(short_toy_config(budget=5000), tmp_path)
    assert not (tmp_path / runfolder.CONFIG).exists()
    driver_lib.Driver(short_toy_config(), tmp_path)  # not refused as "a different config"
    assert (tmp_path / runfolder.CONFIG).exists()


def _readme_table_rows() -> list[str]:
    if not README.exists():
        pytest.fail(f"{README} is missing")
    lines = README.read_text().splitlines()
    if SECTION not in lines:
        pytest.fail(f"README.md has no section '{SECTION}'; paste the table `python -m tests.bad_input_test` prints.")
    section = lines[lines.index(SECTION) + 1:]
    end = next((i for i, line in enumerate(section) if line.startswith("#")), len(section))
    return [line.strip() for line in section[:end] if line.strip().startswith("|")]


def test_readme_table_matches_the_cases():
    """Every README row has a case here and every case a row, word for word, in the same order."""
    expected = markdown_table().splitlines()
    rows = _readme_table_rows()
    missing = [row for row in expected if row not in rows]
    extra = [row for row in rows if row not in expected]
    assert not missing and not extra and rows == expected, (
        "README's table and tests/bad_input_test.py's CASES differ.\nRows without a case:\n  " + "\n  ".join(extra)
        + "\nCases without a row:\n  " + "\n  ".join(missing) + f"\nThe table should read:\n{markdown_table()}"
    )


def test_cases_are_distinct_and_markdown_safe():
    assert len({case.id for case in CASES}) == len(CASES)
    for case in CASES:
        assert "|" not in case.bad_input + case.example + case.message, case.id
        assert "`" not in case.message and case.example.count("`") % 2 == 0, case.id


# ---------------------------------------------------------------------------------------------- NaN / Inf
def _nan_tree(tree):
    return jax.tree_util.tree_map(lambda leaf: jnp.full_like(leaf, jnp.nan), tree)


def _in_iteration(monkeypatch, iteration, before=None):
    """Tracks the iteration the driver runs (current[0]); calls before(driver) when `iteration` starts."""
    current = [0]
    original = driver_lib.Driver.iterate

    def tracked(self):
        current[0] = self.iteration + 1
        if current[0] == iteration and before is not None:
            before(self)
        return original(self)

    monkeypatch.setattr(driver_lib.Driver, "iterate", tracked)
    return current


def _poison_params(monkeypatch):
    def before(driver):
        driver.states = driver.states.replace(params=_nan_tree(driver.states.params))

    _in_iteration(monkeypatch, 3, before)


def _poison_pool_stats(monkeypatch):
    current = _in_iteration(monkeypatch, 3)
    original = algorithm.pool_stats

    def pool_stats(*args, **kwargs):
        stats = original(*args, **kwargs)
        if current[0] == 3:
            stats = stats._replace(mean_probs=np.full_like(stats.mean_probs, np.nan))
        return stats

    monkeypatch.setattr(algorithm, "pool_stats", pool_stats)


def _poison_loss(raises):
    def poison(monkeypatch):
        current = _in_iteration(monkeypatch, 3)
        original = algorithm.train_epoch

        def train_epoch(*args, **kwargs):
            states, metrics = original(*args, **kwargs)
            if current[0] == 3:
                if raises:  # what train_epoch itself does on a NaN loss
                    raise FloatingPointError("training loss became nan.")
                metrics = [m._replace(loss=float("nan")) for m in metrics]
            return states, metrics

        monkeypatch.setattr(algorithm, "train_epoch", train_epoch)

    return poison


def _poison_test_images(monkeypatch):
    def before(driver):
        driver.seeds[0].dataset.test_images[5] = np.inf  # the arrays of a frozen Dataset are still writable
        driver.held_out = metrics_lib.HeldOut([s.dataset for s in driver.seeds],  # the device copy made anew
                                              [s.val_indices for s in driver.seeds])  # from the poisoned test set

    _in_iteration(monkeypatch, 3, before)


@pytest.mark.parametrize(
    "poison, problem",
    [
        (_poison_params, "iteration 3: NaN or Inf in the pool's MC-dropout mean probabilities."),
        (_poison_pool_stats, "iteration 3: NaN or Inf in the pool's MC-dropout mean probabilities."),
        (_poison_loss(raises=True), "iteration 3: training loss became nan. "),
        (_poison_loss(raises=False), "iteration 3: NaN or Inf in the training loss."),
        (_poison_test_images, "iteration 3: NaN or Inf in the test predictions (1 of 200 samples)."),
    ],
    ids=["params", "pool_stats", "loss_raised", "loss_returned", "test_predictions"],
)
def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, poison, problem):
    config = short_toy_config(iterations=4)
    poison(monkeypatch)
    with pytest.raises(FloatingPointError) as raised:
        driver_lib.run(config, tmp_path)
    message = str(raised.value)
    assert message.startswith(problem), message
    assert (f"the last good checkpoint {tmp_path / runfolder.CHECKPOINT} (after iteration 2) is intact and "
            f"{runfolder.METRICS} has no line for iteration 3") in message
    assert "lower config.train.learning_rate" in message
    saved = checkpoint.load(tmp_path / runfolder.CHECKPOINT)
    assert int(saved["iteration"]) == 2
    assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(saved["train_state"]["params"]))
    assert [m["iteration"] for m in checkpoint.read_jsonl(tmp_path / runfolder.METRICS)] == [0, 1, 2]
    assert not (tmp_path / runfolder.SUMMARY).exists()


def test_run_resumes_from_the_intact_checkpoint_after_a_nan(tmp_path, monkeypatch):
    config = short_toy_config(iterations=4)
    with monkeypatch.context() as patch:
        _poison_pool_stats(patch)
        with pytest.raises(FloatingPointError):
            driver_lib.run(config, tmp_path)
    summary = driver_lib.run(config, tmp_path)  # the cause is gone: iterations 3 and 4 run from checkpoint 2
    assert summary["iterations"] == 4
    assert [m["iteration"] for m in checkpoint.read_jsonl(tmp_path / runfolder.METRICS)] == [0, 1, 2, 3, 4]


def test_nan_in_the_initial_fit_says_so_and_saves_nothing(tmp_path, monkeypatch):
    original, calls = algorithm.train_epoch, []

    def train_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise FloatingPointError("training loss became inf.")
        return original(*args, **kwargs)

    monkeypatch.setattr(algorithm, "train_epoch", train_epoch)
    with pytest.raises(FloatingPointError) as raised:
        driver_lib.run(short_toy_config(), tmp_path)
    message = str(raised.value)
    assert message.startswith("the initial fit: training loss became inf. The run stopped; no checkpoint "
                              "was written yet"), message
    assert not (tmp_path / runfolder.CHECKPOINT).exists() and not (tmp_path / runfolder.METRICS).exists()


def test_fixed_theta_is_used_instead_of_eq_8(tmp_path):
    config = short_toy_config(theta=0.25, mode="step_wise", iterations=2)
    driver_lib.run(config, tmp_path)
    metrics = checkpoint.read_jsonl(tmp_path / runfolder.METRICS)
    assert [m["theta"] for m in metrics[1:]] == [0.25, 0.25]


if __name__ == "__main__":  # python -m tests.bad_input_test: the README table
    print(markdown_table())
