"""Drawing primitives of the synthetic benchmark: shapes, colour patterns and textured backgrounds.

Every primitive is vectorised over a batch of images and uses only elementwise arithmetic and
comparisons (no anti-aliasing, no trigonometry at pixel level, no BLAS), so a pixel is either
inside an object or not and the same parameters give the same bytes on every machine.

Conventions: geometry is given in pixels; an object with centre ``(cx, cy)`` and radius ``r`` lies
inside the square ``[cx - r, cx + r] x [cy - r, cy + r]``; pixel ``(y, x)`` is tested at its centre
``(x + 0.5, y + 0.5)``. Colours are uint8 RGB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Backgrounds live in this channel range and every object colour has a channel outside it, so an
# object pixel always differs from the background under it: the pixels an object changes are
# exactly its mask.
BACKGROUND_RANGE = (72, 184)


def _disk(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 1.0


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 0.8


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Apex up at v = -0.95, base at v = 0.8 with half-width 1.
    return (v <= 0.8) & (np.abs(u) * 1.75 <= v + 0.95)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    arm = 0.34
    return ((au <= arm) & (av <= 0.95)) | ((av <= arm) & (au <= 0.95))


# Outer vertices of a pentagram pointing up, unit radius.
_STAR_VERTICES = [(np.sin(2 * np.pi * k / 5), -np.cos(2 * np.pi * k / 5)) for k in range(5)]
_STAR_CHORD = float(np.cos(2 * np.pi / 5))  # distance from the centre to each pentagram line


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # The filled pentagram is the set of points beyond at most one of its five lines: beyond one
    # line is a tip, beyond two is outside the star.
    beyond = np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=np.uint8)
    for vx, vy in _STAR_VERTICES:
        beyond += (u * np.float32(vx) + v * np.float32(vy)) > _STAR_CHORD
    return beyond <= 1


def _ring(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    d = u * u + v * v
    return (d <= 1.0) & (d >= 0.55 * 0.55)


def _diamond(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.abs(u) + np.abs(v) <= 1.0


def _crescent(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u * u + v * v <= 1.0) & ((u - 0.5) ** 2 + v * v > 0.72 * 0.72)


SHAPES = {
    "disk": _disk,
    "square": _square,
    "triangle": _triangle,
    "cross": _cross,
    "star": _star,
    "ring": _ring,
    "diamond": _diamond,
    "crescent": _crescent,
}
SHAPE_NAMES = list(SHAPES)


def _texture_bit(texture: str, dx: np.ndarray, dy: np.ndarray, half: int) -> np.ndarray:
    """Which pixels take the secondary colour; ``dx, dy`` are integer offsets from the object's
    centre (so the texture moves with the object) and ``half`` the half-period in pixels."""
    if texture == "solid":
        return np.zeros(dx.shape, dtype=bool)
    if texture == "hstripes":
        return (dy // half) % 2 == 1
    if texture == "vstripes":
        return (dx // half) % 2 == 1
    if texture == "dstripes":
        return ((dx + dy) // half) % 2 == 1
    if texture == "checker":
        return ((dx // half) + (dy // half)) % 2 == 1
    if texture == "dots":
        return ((dx % (3 * half)) < half) & ((dy % (3 * half)) < half)
    raise KeyError(texture)


@dataclass(frozen=True)
class Pattern:
    """A colour/texture pattern: ``primary`` everywhere except where the texture puts ``secondary``."""

    name: str
    primary: tuple[int, int, int]
    secondary: tuple[int, int, int]
    texture: str


# Class patterns: class c wears PATTERNS[c].
PATTERNS = [
    Pattern("red", (225, 25, 25), (225, 25, 25), "solid"),
    Pattern("blue_striped", (30, 60, 235), (245, 245, 245), "hstripes"),
    Pattern("green_checkered", (20, 200, 40), (10, 10, 10), "checker"),
    Pattern("yellow_dotted", (245, 225, 20), (20, 20, 20), "dots"),
    Pattern("magenta_diagonal", (230, 30, 230), (250, 250, 250), "dstripes"),
    Pattern("cyan_vstriped", (20, 225, 235), (15, 15, 90), "vstripes"),
    Pattern("orange", (250, 140, 0), (250, 140, 0), "solid"),
    Pattern("black_white_checkered", (15, 15, 15), (245, 245, 245), "checker"),
]
# Patterns only distractors wear. They reuse the class textures with colours of their own, so
# neither a texture nor a shape alone marks the evidence; the class pattern does.
DISTRACTOR_PATTERNS = [
    Pattern("white", (245, 245, 245), (245, 245, 245), "solid"),
    Pattern("brown", (145, 70, 20), (145, 70, 20), "solid"),
    Pattern("pink_vstriped", (250, 165, 200), (20, 20, 20), "vstripes"),
    Pattern("dark_grey_dotted", (60, 60, 60), (245, 245, 245), "dots"),
]
# Pattern indices used by the drawing functions: class patterns first, then distractor patterns.
ALL_PATTERNS = PATTERNS + DISTRACTOR_PATTERNS
PATTERN_NAMES = [p.name for p in ALL_PATTERNS]
_PRIMARY = np.array([p.primary for p in ALL_PATTERNS], dtype=np.uint8)
_SECONDARY = np.array([p.secondary for p in ALL_PATTERNS], dtype=np.uint8)


def texture_half_period(image_size: int) -> int:
    """Half-period of stripes/checks in pixels: 2 px at 64x64, scaled with the image."""
    return max(1, round(2 * image_size / 64))


def shape_masks(
    shape: np.ndarray, cx: np.ndarray, cy: np.ndarray, r: np.ndarray, size: int
) -> np.ndarray:
    """Bool ``[n, size, size]``: pixels of object ``i`` (shape index ``shape[i]``, centre and radius
    in pixels)."""
    n = len(shape)
    out = np.zeros((n, size, size), dtype=bool)
    centres = np.arange(size, dtype=np.float32) + np.float32(0.5)
    for s in np.unique(shape):
        idx = np.flatnonzero(shape == s)
        inv = (1.0 / r[idx]).astype(np.float32)[:, None, None]
        u = (centres[None, None, :] - cx[idx].astype(np.float32)[:, None, None]) * inv
        v = (centres[None, :, None] - cy[idx].astype(np.float32)[:, None, None]) * inv
        out[idx] = SHAPES[SHAPE_NAMES[s]](u, v)
    return out


def pattern_images(
    pattern: np.ndarray, cx: np.ndarray, cy: np.ndarray, size: int
) -> np.ndarray:
    """Uint8 ``[n, 3, size, size]``: pattern ``pattern[i]`` anchored at the object's centre."""
    n = len(pattern)
    half = texture_half_period(size)
    grid = np.arange(size, dtype=np.int64)
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    for p in np.unique(pattern):
        idx = np.flatnonzero(pattern == p)
        dx = grid[None, None, :] - np.floor(cx[idx]).astype(np.int64)[:, None, None]
        dy = grid[None, :, None] - np.floor(cy[idx]).astype(np.int64)[:, None, None]
        bit = _texture_bit(ALL_PATTERNS[p].texture, dx, dy, half)
        colour = (_SECONDARY[p][None, :, None, None], _PRIMARY[p][None, :, None, None])
        out[idx] = np.where(bit[:, None], *colour)
    return out


def _bilinear_axis(grid_nodes: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Left node and weight of the right node for each pixel centre along one axis."""
    t = (np.arange(size, dtype=np.float64) + 0.5) / size * (grid_nodes - 1)
    i0 = np.minimum(np.floor(t).astype(np.int64), grid_nodes - 2)
    return i0, (t - i0).astype(np.float32)


def upsample_bilinear(grid: np.ndarray, size: int) -> np.ndarray:
    """``[n, c, g, g]`` node values -> ``[n, c, size, size]`` by separable bilinear interpolation
    (elementwise, so bit-reproducible)."""
    i0, w = _bilinear_axis(grid.shape[-1], size)
    rows = grid[..., i0] * (1 - w) + grid[..., i0 + 1] * w  # [n, c, g, size]
    out = np.empty((*grid.shape[:2], size, size), dtype=rows.dtype)
    # Pixel rows between the same two nodes are contiguous: blend slices instead of gathering.
    for node in np.unique(i0):
        ys = np.flatnonzero(i0 == node)
        wy, band = w[ys, None], out[..., ys[0]:ys[-1] + 1, :]
        np.multiply(rows[..., node, None, :], 1 - wy, out=band)
        band += rows[..., node + 1, None, :] * wy
    return out


def textured_background(coarse: np.ndarray, fine: np.ndarray, size: int) -> np.ndarray:
    """Uint8 ``[n, 3, size, size]`` low-frequency colour noise plus a finer grain, in
    :data:`BACKGROUND_RANGE`."""
    value = upsample_bilinear(coarse, size)
    value += upsample_bilinear(fine, size)
    lo, hi = BACKGROUND_RANGE
    return np.clip(np.rint(value, out=value), lo, hi, out=value).astype(np.uint8)


# Background families of the shortcut variant: a tint per family (the centre of its low-frequency
# colour noise). Family c is the family correlated with class c. Tints differ by >= 50 levels in some
# channel and stay inside BACKGROUND_RANGE with their noise, so object colours still leave it.
FAMILY_TINTS = np.array([
    (152, 104, 104),  # warm red
    (104, 152, 104),  # green
    (104, 104, 152),  # blue
    (152, 152, 100),  # yellow
    (152, 100, 152),  # purple
    (100, 152, 152),  # teal
    (160, 126, 92),   # brown
    (128, 128, 128),  # grey
], dtype=np.float32)
FAMILY_AMPLITUDE = 20.0  # half-range of a family's coarse noise around its tint
# The background of the only_fg variant (ImageNet-9 uses black; a mid grey keeps object colours
# outside the background range, so masks stay exact).
NEUTRAL_GREY = 128
