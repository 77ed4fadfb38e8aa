"""The yin-yang toy of section 4 (eqs. 10-12): two interlocked half-moons, red (class 0) and blue (class 1).

`yinyang` draws a pool and a test sample; `from_config` is the loader of `data.name="yinyang"` in `load(config)`.
"""

from __future__ import annotations

from typing import Optional

import ml_collections
import numpy as np

from deepbass_jax.data.dataset import DataError, Dataset


YINYANG_ANGLES = ("pi", "radians")  # units of eq. 10's angle; see _yinyang_sample
YINYANG_CONSTANTS = {  # name -> (centre x, centre y, std of phi) of eqs. 10-12; see _yinyang_sample
    "paper": (1 / 3, 1 / 10, 1 / 3),
    "authors": (0.33, 0.1, 0.33),
}


def _yinyang_sample(rng: np.random.Generator, num_per_class: int, angle: str = "pi",
                    constants: str = "paper") -> tuple[np.ndarray, np.ndarray]:
    """Eqs. 10-12 -> points [2 * num_per_class, 2] float32, labels [2 * num_per_class] int32 (red 0, blue 1).

    r ~ N(1, (1/4)^2); red = (a, -b) + r (cos phi, sin phi), blue = (-a, b) + r (cos phi, -sin phi) with
    (a, b) = (1/3, 1/10) ("paper", eqs. 11-12) or (0.33, 0.1) ("authors": the constants of the authors'
    helpers.generate2Dcase, which also takes 0.33 for the 1/3 of phi's std).
    angle "pi": phi = pi * N(1/2, (1/3)^2), the angle in units of pi as in the authors' code (two interlocked
    half-moons, Figs. 1-2); "radians": phi ~ N(1/2, (1/3)^2) in radians, eq. 10 read literally (two short arcs
    around 29 degrees: nearly separable blobs, unlike the figures).
    """
    if angle not in YINYANG_ANGLES:
        raise DataError(f"yinyang angle={angle!r} is unknown; choose one of {YINYANG_ANGLES}.")
    if constants not in YINYANG_CONSTANTS:
        raise DataError(f"yinyang constants={constants!r} are unknown; choose one of {sorted(YINYANG_CONSTANTS)}.")
    a, b, angle_std = YINYANG_CONSTANTS[constants]
    unit = np.pi if angle == "pi" else 1.0
    points = []
    for centre, sign in (((a, -b), 1.0), ((-a, b), -1.0)):
        radius = rng.normal(1.0, 1 / 4, num_per_class)
        phi = unit * rng.normal(1 / 2, angle_std, num_per_class)
        points.append(np.stack([centre[0] + radius * np.cos(phi), centre[1] + sign * radius * np.sin(phi)], 1))
    labels = np.repeat(np.arange(2, dtype=np.int32), num_per_class)
    return np.concatenate(points).astype(np.float32), labels


def yinyang(num_per_class: int = 500, seed: int = 0, *, test_per_class: Optional[int] = None, angle: str = "pi",
            constants: str = "paper") -> Dataset:
    """The yin-yang toy of section 4: red (class 0) and blue (class 1), `num_per_class` each, pool [2n, 2].

    The test sample has `test_per_class` points per class (None: `num_per_class`, as the authors' code), drawn
    independently: pool and test use the two streams that numpy's SeedSequence(seed).spawn(2) gives to
    default_rng. `angle` and `constants`: see `_yinyang_sample` (the defaults are the paper's eqs. 10-12 with
    the angle in units of pi).
    """
    pool_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    test_per_class = num_per_class if test_per_class is None else test_per_class
    return Dataset("yinyang", *_yinyang_sample(pool_rng, num_per_class, angle, constants),
                   *_yinyang_sample(test_rng, test_per_class, angle, constants), 2,
                   test_source="drawn independently of the pool (eqs. 10-12)")


def from_config(config: ml_collections.ConfigDict) -> Dataset:
    """data.name="yinyang": data.num_per_class points per class, drawn with data.seed."""
    return yinyang(config.num_per_class, config.seed)
