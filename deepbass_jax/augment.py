"""Ground-truth data augmentation (section 5, "Data Augmentation"): slight random rotations and scalings, and
optionally translations (the paper names none; the authors' code shifted by up to 5 %, see
results/mnist/augmentation).

Shapes: `images` are [B, H, W, C] float32; per-sample parameters are [B]. An affine warp maps the output
pixel (row r, column c) back to the input point it samples, about the image centre ((H-1)/2, (W-1)/2):
the input is first scaled by (scale_h, scale_w) along (height, width), then rotated by `degrees`, positive
counter-clockwise as displayed (row 0 at the top), so 90 degrees at scale 1 is `np.rot90(image)` of a
square image, then moved down by shift_rows and right by shift_cols pixels. Bilinear interpolation; points
outside the input read 0 (constant fill).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates


def source_coordinates(height: int, width: int, degrees: jax.Array, scale_h: jax.Array, scale_w: jax.Array,
                       shift_rows: jax.Array = 0.0, shift_cols: jax.Array = 0.0):
    """Input (rows, cols), each [H, W] float32, that the output pixels of one warp sample (scalar parameters)."""
    center_row, center_col = (height - 1) / 2, (width - 1) / 2
    rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32),
                              indexing="ij")
    x, y = cols - center_col, center_row - rows  # y points up, so positive angles turn counter-clockwise
    angle = jnp.deg2rad(degrees)
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    source_x = (cos * x + sin * y) / scale_w  # the inverse map: rotate back by -angle, then unscale
    source_y = (-sin * x + cos * y) / scale_h
    return center_row - source_y - shift_rows, center_col + source_x - shift_cols


def transform(images: jax.Array, degrees: jax.Array, scale_h: jax.Array, scale_w: jax.Array,
              shift_rows: Optional[jax.Array] = None, shift_cols: Optional[jax.Array] = None) -> jax.Array:
    """Warps images [B, H, W, C] by per-sample degrees, scale_h, scale_w and (optional) shift_rows, shift_cols
    (pixels) [B] -> [B, H, W, C] (see module doc).

    `map_coordinates(order=1, mode="constant")` vmapped over samples and channels: on CPU it was faster than a
    hand-written 4-corner gather and equal to it bitwise.
    """
    batch, height, width, _ = images.shape
    no_shift = jnp.zeros((batch,), jnp.float32)
    shift_rows = no_shift if shift_rows is None else shift_rows
    shift_cols = no_shift if shift_cols is None else shift_cols

    def one(image, angle, sh, sw, dr, dc):  # [H, W, C]
        rows, cols = source_coordinates(height, width, angle, sh, sw, dr, dc)
        sample = lambda channel: map_coordinates(channel, [rows, cols], order=1, mode="constant")  # noqa: E731
        return jax.vmap(sample, in_axes=2, out_axes=2)(image)

    return jax.vmap(one)(images, degrees, scale_h, scale_w, shift_rows, shift_cols).astype(images.dtype)


def random_parameters(key: jax.Array, batch: int, max_degrees: float, max_scale: float):
    """Per-sample (degrees, scale_h, scale_w), each [B]: U(-max_degrees, max_degrees), U(1 - s, 1 + s) twice."""
    angle_key, height_key, width_key = jax.random.split(key, 3)
    degrees = jax.random.uniform(angle_key, (batch,), minval=-max_degrees, maxval=max_degrees)
    scale_h = jax.random.uniform(height_key, (batch,), minval=1.0 - max_scale, maxval=1.0 + max_scale)
    scale_w = jax.random.uniform(width_key, (batch,), minval=1.0 - max_scale, maxval=1.0 + max_scale)
    return degrees, scale_h, scale_w


def random_shifts(key: jax.Array, batch: int, height: int, width: int, max_shift: float):
    """Per-sample (shift_rows, shift_cols) in pixels, each [B]: U(-max_shift, max_shift) times height / width (a
    fraction of the image, as keras' height/width_shift_range). Drawn from fold_in(key, SHIFT_STREAM), so turning
    shifts on leaves the rotations and scalings of `random_parameters(key)` as they were."""
    row_key, col_key = jax.random.split(jax.random.fold_in(key, SHIFT_STREAM))
    shift_rows = jax.random.uniform(row_key, (batch,), minval=-max_shift, maxval=max_shift) * height
    shift_cols = jax.random.uniform(col_key, (batch,), minval=-max_shift, maxval=max_shift) * width
    return shift_rows, shift_cols


SHIFT_STREAM = 3  # fold_in constant of the shifts' key


def warps(max_degrees: float, max_scale: float, max_shift: float = 0.0) -> bool:
    """Whether these maxima change an image at all (any of them above 0)."""
    return max_degrees != 0 or max_scale != 0 or max_shift != 0


def _check(images, max_degrees: float, max_scale: float, max_shift: float) -> None:
    if images.ndim != 4:
        raise ValueError(f"augmentation warps images [B, H, W, C]; got an array of shape {images.shape}.")
    if not (0 <= max_degrees < 180 and 0 <= max_scale < 1 and 0 <= max_shift < 0.5):
        raise ValueError(f"max_degrees={max_degrees} must lie in [0, 180), max_scale={max_scale} in [0, 1) and "
                         f"max_shift={max_shift} in [0, 0.5).")


def random_affine(images: jax.Array, key: jax.Array, max_degrees: float, max_scale: float,
                  max_shift: float = 0.0) -> jax.Array:
    """Each sample of images [B, H, W, C] rotated, scaled and (max_shift > 0) shifted by its own random parameters
    (`random_parameters`, `random_shifts`).

    max_degrees, max_scale and max_shift are static Python floats; all 0 returns `images` itself, untouched.
    """
    if not warps(max_degrees, max_scale, max_shift):
        return images
    _check(images, max_degrees, max_scale, max_shift)
    batch, height, width, _ = images.shape
    shifts = random_shifts(key, batch, height, width, max_shift) if max_shift else (None, None)
    return transform(images, *random_parameters(key, batch, max_degrees, max_scale), *shifts)


# Warp name (config.train.augment_warp) -> function with random_affine's signature. A study or a user adds one with
# `register_warp`; a name, once traced into a compiled step, must keep its function for the process's life.
WARPS = {"affine": random_affine}


def register_warp(name: str, warp) -> None:
    """Makes `warp(images [B, H, W, C], key, max_degrees, max_scale, max_shift) -> [B, H, W, C]` available as
    config.train.augment_warp = `name`."""
    if name in WARPS and WARPS[name] is not warp:
        raise ValueError(f"augmentation warp {name!r} is registered already; choose another name.")
    WARPS[name] = warp


def random_affine_where(images: jax.Array, mask: jax.Array, key: jax.Array, max_degrees: float,
                        max_scale: float, max_shift: float = 0.0, warp: str = "affine") -> jax.Array:
    """WARPS[warp] (`random_affine` by default) on the rows of images [B, H, W, C] where mask [B] bool is True;
    other rows bitwise as given.

    Row i's parameters do not depend on the mask (every row draws its own), only whether they are applied.
    """
    if not warps(max_degrees, max_scale, max_shift):
        return images
    warped = WARPS[warp](images, key, max_degrees, max_scale, max_shift)
    return jnp.where(mask.reshape(-1, *([1] * (images.ndim - 1))), warped, images)


# --------------------------------------------------------------- the strong view (consistency, beyond the paper)
class StrongView(NamedTuple):
    """config.train.strong_*: maxima of the strong view's affine warp, and cutout's square side (a fraction of the
    image side). Hashable: a static argument of the compiled training step."""

    degrees: float
    scale: float
    shift: float
    cutout: float


def strong_view(train_config) -> Optional[StrongView]:
    """The strong view of config.train, or None where config.train.strong_augment is off."""
    if not train_config.strong_augment:
        return None
    return StrongView(float(train_config.strong_degrees), float(train_config.strong_scale),
                      float(train_config.strong_shift), float(train_config.strong_cutout))


# Views a training batch row can take (`two_views`): as given, the ground truth's augmentation, the strong view.
PLAIN, WEAK, STRONG = 0, 1, 2
STRONG_STREAM = 5  # fold_in constant of the strong view's key
CUTOUT_STREAM = 7  # fold_in constant of cutout's key, beside the strong warp's


def cutout(images: jax.Array, key: jax.Array, size: float) -> jax.Array:
    """Cutout (DeVries and Taylor 2017): each sample of images [B, H, W, C] with one square of side size * H zeroed,
    its centre uniform over the image (the square may reach past the border, so less is cut there)."""
    batch, height, width, _ = images.shape
    row_key, col_key = jax.random.split(key)
    center_rows = jax.random.uniform(row_key, (batch, 1, 1), maxval=height)
    center_cols = jax.random.uniform(col_key, (batch, 1, 1), maxval=width)
    half_rows, half_cols = size * height / 2, size * width / 2
    rows = jnp.arange(height, dtype=jnp.float32)[None, :, None] + 0.5
    cols = jnp.arange(width, dtype=jnp.float32)[None, None, :] + 0.5
    inside = (jnp.abs(rows - center_rows) < half_rows) & (jnp.abs(cols - center_cols) < half_cols)  # [B, H, W]
    return jnp.where(inside[..., None], jnp.zeros_like(images), images)


def two_views(images: jax.Array, views: jax.Array, key: jax.Array, max_degrees: float, max_scale: float,
              max_shift: float, strong: StrongView) -> jax.Array:
    """images [B, H, W, C] by views [B] int: PLAIN rows as given (bitwise), WEAK rows warped as `random_affine`
    warps them (the ground truth's maxima and parameters), STRONG rows by the strong view's larger affine warp
    and then cutout (keys from fold_in(key, STRONG_STREAM)). One warp for the whole batch: each row takes its view's
    parameters, so the strong view costs one interpolation, not two."""
    _check(images, max(max_degrees, strong.degrees), max(max_scale, strong.scale), max(max_shift, strong.shift))
    batch, height, width, _ = images.shape
    strong_key = jax.random.fold_in(key, STRONG_STREAM)
    weak_parameters = (*random_parameters(key, batch, max_degrees, max_scale),
                       *random_shifts(key, batch, height, width, max_shift))
    strong_parameters = (*random_parameters(strong_key, batch, strong.degrees, strong.scale),
                         *random_shifts(strong_key, batch, height, width, strong.shift))
    is_strong = views == STRONG
    parameters = [jnp.where(is_strong, s, w) for s, w in zip(strong_parameters, weak_parameters)]
    warped = transform(images, *parameters)
    if strong.cutout > 0:
        cut = cutout(warped, jax.random.fold_in(strong_key, CUTOUT_STREAM), strong.cutout)
        warped = jnp.where(is_strong[:, None, None, None], cut, warped)
    return jnp.where((views == PLAIN)[:, None, None, None], images, warped)
