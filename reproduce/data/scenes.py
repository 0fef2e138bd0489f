"""Every random choice of a split of the synthetic benchmark: its :class:`~reproduce.data.scene_render.Layout`
(labels, objects on the object axis, background noise and family) and the background pairing of the
mixed ImageNet-9 variants. What a layout holds and how it is painted: :mod:`reproduce.data.scene_render`.

Geometry is drawn in units of the image side, so a scene is the same layout at 64x64 and 224x224.
Generation is deterministic from ``(seed, split)``: each split and each kind of random draw has its
own stream, and each stream draws one row of uniforms per image in a single call, so image ``i``
depends only on ``(seed, split, i)`` and the first ``n`` images of a split do not depend on its size.
"""

from __future__ import annotations

import numpy as np

from reproduce.data.scene_knobs import Difficulty
from reproduce.data.scene_render import (
    KIND_DISTRACTOR,
    KIND_EVIDENCE,
    Layout,
    Objects,
    concat,
)
from reproduce.data.shapes import (
    DISTRACTOR_PATTERNS,
    FAMILY_AMPLITUDE,
    FAMILY_TINTS,
    PATTERNS,
)

SPLITS = ("train", "val", "test")
VARIANTS = ("single", "two_part")

# Geometry in pixels of a 64x64 image (scaled with the image): a single object is 14-28 px across,
# each of the two parts 12-20 px, distractors 10-20 px (all at evidence scale 1); boxes of different
# objects stay GAP apart, except the occluder's, which overlaps the evidence on purpose.
OBJECT_RADIUS = (7.0, 14.0)
PART_RADIUS = (6.0, 10.0)
DISTRACTOR_RADIUS = (5.0, 10.0)
GAP = 2.0
# Placement is rejection sampling over this many candidates per object, first valid one wins.
CANDIDATES = 48

(_STREAM_LABELS, _STREAM_EVIDENCE, _STREAM_DISTRACTORS, _STREAM_BACKGROUND, _STREAM_SCALE, _STREAM_CONTRAST,
 _STREAM_OCCLUDER, _STREAM_LABEL_NOISE, _STREAM_FAMILY, _STREAM_PAIRING, _STREAM_CONFUSERS) = range(11)
_COARSE_NODES, _FINE_NODES = 5, 13
_COARSE_RANGE, _FINE_RANGE = (80.0, 176.0), (-14.0, 14.0)


def stream(seed: int, split: str, which: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), which]))


def _apart(cx1, cy1, r1, cx2, cy2, r2) -> np.ndarray:
    """Whether two objects' boxes are at least GAP apart (all in units of the image side)."""
    gap = r1 + r2 + GAP / 64.0
    return (np.abs(cx1 - cx2) >= gap) | (np.abs(cy1 - cy2) >= gap)


def _place(u: np.ndarray, bounds: tuple[float, float], scale: np.ndarray | float = 1.0):
    """Centre and radius from uniforms ``u[..., 0:3]``; the centre keeps the object inside the image."""
    r = (bounds[0] + u[..., 0] * (bounds[1] - bounds[0])) * scale / 64.0
    return r + u[..., 1] * (1 - 2 * r), r + u[..., 2] * (1 - 2 * r), r


def _apart_from(objects: Objects, cx: np.ndarray, cy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Which candidates ``[N, C]`` keep their boxes GAP away from every drawn object of ``objects``."""
    ok = np.ones(cx.shape, dtype=bool)
    for s in range(objects.slots):
        col = (slice(None), s, None)
        ok &= _apart(cx, cy, r, objects.cx[col], objects.cy[col], objects.r[col]) | ~objects.drawn[col]
    return ok


def _first_true(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the first True along the last axis, and whether there is one."""
    return valid.argmax(-1), valid.any(-1)


def distractor_pool(num_classes: int) -> list[tuple[int, int]]:
    """(shape, pattern) designs a distractor may take: any class shape with a distractor-only
    pattern (indices into ``ALL_PATTERNS``)."""
    first = len(PATTERNS)
    return [(s, first + p) for s in range(num_classes) for p in range(len(DISTRACTOR_PATTERNS))]


def _draw_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    # Balanced in blocks of K: every K consecutive images hold each class once.
    keys = rng.random((-(-n // k), k))
    return np.argsort(keys, axis=1).reshape(-1)[:n].astype(np.int64)


def _noisy(rng: np.random.Generator, labels: np.ndarray, k: int, rate: float) -> np.ndarray:
    """Labels with a fraction ``rate`` replaced by another class drawn uniformly."""
    u = rng.random((len(labels), 2))
    other = (labels + 1 + np.minimum((u[:, 1] * (k - 1)).astype(np.int64), k - 2)) % k
    return np.where(u[:, 0] < rate, other, labels)


def _draw_evidence(rng: np.random.Generator, labels: np.ndarray, variant: str, k: int, scale: np.ndarray) -> Objects:
    n = len(labels)
    if variant == "single":
        cx, cy, r = _place(rng.random((n, 1, 3)), OBJECT_RADIUS, scale[:, None])
        design = labels[:, None]
    else:
        # Both parts jointly from candidate pairs; the first pair whose boxes are apart wins.
        cx, cy, r = _place(rng.random((n, CANDIDATES, 2, 3)), PART_RADIUS, scale[:, None, None])
        a, b = (..., 0), (..., 1)
        first, found = _first_true(_apart(cx[a], cy[a], r[a], cx[b], cy[b], r[b]))
        rows = np.arange(n)
        cx, cy, r = cx[rows, first], cy[rows, first], r[rows, first]
        # Opposite corners are always apart (scale <= 1.5): the fallback when no candidate pair is
        # (63% of random pairs are apart at scale 1, so it never happened in 10^5 images).
        cx[~found] = np.stack([r[~found, 0], 1 - r[~found, 1]], axis=1)
        cy[~found] = cx[~found]
        design = np.stack([labels, (labels + 1) % k], axis=1)
    return Objects(design, design.copy(), cx, cy, r, np.ones(design.shape, dtype=bool), np.ones(design.shape))


def _pool_designs(u: np.ndarray, k: int) -> np.ndarray:
    pool = np.array(distractor_pool(k), dtype=np.int64)
    return pool[np.minimum((u * len(pool)).astype(np.int64), len(pool) - 1)]


def _draw_occluders(rng: np.random.Generator, evidence: Objects, knobs: Difficulty, k: int) -> Objects:
    """One optional distractor per image entering the box of one evidence part from one side by a
    fraction in ``(0, occlusion]`` of its width; the first side (in a random order) where it fits the
    image, away from the other part, wins; without one the slot stays empty."""
    n, parts = evidence.shape.shape
    u = rng.random((n, 10))
    part = np.minimum((u[:, 1] * parts).astype(np.int64), parts - 1)
    rows = np.arange(n)
    ex, ey, er = evidence.cx[rows, part], evidence.cy[rows, part], evidence.r[rows, part]
    depth = knobs.occlusion * (1 - u[:, 2]) * 2 * er  # how far the occluder reaches into the box
    lo, hi = DISTRACTOR_RADIUS
    ro = (lo + u[:, 3] * (hi - lo)) / 64.0
    across = (2 * u[:, 4] - 1) * 0.5 * er
    sides = [(ex - er + depth - ro, ey + across), (ex + er - depth + ro, ey + across),
             (ex + across, ey - er + depth - ro), (ex + across, ey + er - depth + ro)]
    cand_x, cand_y = np.stack([s[0] for s in sides], 1), np.stack([s[1] for s in sides], 1)
    order = np.argsort(u[:, 5:9], axis=1)
    cand_x, cand_y = np.take_along_axis(cand_x, order, 1), np.take_along_axis(cand_y, order, 1)
    radius = np.broadcast_to(ro[:, None], cand_x.shape)
    fits = (cand_x >= radius) & (cand_x <= 1 - radius) & (cand_y >= radius) & (cand_y <= 1 - radius)
    if parts == 2:
        other = 1 - part
        fits &= _apart(cand_x, cand_y, radius, evidence.cx[rows, other, None], evidence.cy[rows, other, None],
                       evidence.r[rows, other, None])
    first, found = _first_true(fits)
    design = _pool_designs(u[:, 9:10], k)
    out = Objects.empty(n, 1)
    out.shape, out.pattern = design[..., 0], design[..., 1]
    out.cx[:, 0], out.cy[:, 0], out.r[:, 0] = cand_x[rows, first], cand_y[rows, first], ro
    out.drawn[:, 0] = found & (u[:, 0] < knobs.occlusion_rate)
    return out


def _confusers(rng: np.random.Generator, designs: np.ndarray, rate: float, k: int) -> np.ndarray:
    """Designs ``[N, slots, 2]`` where a fraction ``rate`` of the slots wears a class pattern on the
    shape of ANOTHER class (a *confuser*: the class colours alone no longer find the evidence, only
    the shape-and-pattern pair does; still no class design, so still no label information)."""
    u = rng.random((*designs.shape[:2], 3))
    shape = np.minimum((u[..., 1] * k).astype(np.int64), k - 1)
    pattern = (shape + 1 + np.minimum((u[..., 2] * (k - 1)).astype(np.int64), k - 2)) % k
    out = designs.copy()
    swap = u[..., 0] < rate
    out[swap, 0], out[swap, 1] = shape[swap], pattern[swap]
    return out


def _draw_distractors(rng: np.random.Generator, taken: Objects, knobs: Difficulty, k: int,
                      confusers: np.random.Generator | None = None) -> Objects:
    n = len(taken.shape)
    lo, hi = knobs.distractors
    u = rng.random((n, 1 + hi + hi * CANDIDATES * 3))
    count = lo + np.minimum((u[:, 0] * (hi - lo + 1)).astype(np.int64), hi - lo)
    design = _pool_designs(u[:, 1:1 + hi], k)
    if confusers is not None:
        design = _confusers(confusers, design, knobs.confusers, k)
    cand_cx, cand_cy, cand_r = _place(u[:, 1 + hi:].reshape(n, hi, CANDIDATES, 3), DISTRACTOR_RADIUS)
    placed = Objects.empty(n, hi)
    placed.shape, placed.pattern = design[..., 0], design[..., 1]
    rows = np.arange(n)
    for s in range(hi):
        cand = cand_cx[:, s], cand_cy[:, s], cand_r[:, s]
        first, found = _first_true(_apart_from(taken, *cand) & _apart_from(placed, *cand))
        placed.cx[:, s], placed.cy[:, s], placed.r[:, s] = (a[rows, first] for a in cand)
        # A slot with no free spot among the candidates stays empty: 1 in ~1900 slots with one
        # object and 1-3 distractors; the knobs' tests count it for the presets.
        placed.drawn[:, s] = found & (s < count)
    return placed


def _draw_background(rng: np.random.Generator, family: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Noise nodes: without a family (-1) each coarse node is uniform in the muted colour range; with
    one, within FAMILY_AMPLITUDE of the family's tint (same uniforms either way)."""
    n = len(family)
    g1, g2 = 3 * _COARSE_NODES**2, 3 * _FINE_NODES**2
    u = rng.random((n, g1 + g2))
    (c_lo, c_hi), (f_lo, f_hi) = _COARSE_RANGE, _FINE_RANGE
    coarse = (c_lo + u[:, :g1] * (c_hi - c_lo)).astype(np.float32).reshape(n, 3, -1)
    has = family >= 0
    if has.any():
        tint = FAMILY_TINTS[family[has]][:, :, None]
        coarse[has] = tint + (2 * u[has, :g1].reshape(-1, 3, _COARSE_NODES**2) - 1) * FAMILY_AMPLITUDE
    fine = (f_lo + u[:, g1:] * (f_hi - f_lo)).astype(np.float32)
    return coarse.reshape(n, 3, _COARSE_NODES, -1), fine.reshape(n, 3, _FINE_NODES, -1)


def draw_family(seed: int, split: str, labels: np.ndarray, k: int, rho: float | None) -> np.ndarray:
    """Background family per image: the class's own with probability ``rho``, else uniform over the
    ``k`` families (so it matches the class with probability rho + (1 - rho) / k); -1 without families."""
    if rho is None:
        return np.full(len(labels), -1, dtype=np.int64)
    u = stream(seed, split, _STREAM_FAMILY).random((len(labels), 2))
    other = np.minimum((u[:, 1] * k).astype(np.int64), k - 1)
    return np.where(u[:, 0] < rho, labels, other)


def draw_layout(seed: int, split: str, variant: str, num_classes: int, n: int,
                knobs: Difficulty | None = None, rho: float | None = None) -> Layout:
    """Draw every random choice of a split (see the module docstring for the streams)."""
    knobs = knobs or Difficulty()
    k = num_classes
    clean = _draw_labels(stream(seed, split, _STREAM_LABELS), n, k)
    labels = clean
    if split == "train" and knobs.label_noise > 0:
        labels = _noisy(stream(seed, split, _STREAM_LABEL_NOISE), clean, k, knobs.label_noise)
    lo, hi = knobs.evidence_scale
    scale = lo + stream(seed, split, _STREAM_SCALE).random(n) * (hi - lo) if hi > lo else np.full(n, lo)
    evidence = _draw_evidence(stream(seed, split, _STREAM_EVIDENCE), clean, variant, k, scale)
    groups = [evidence]
    if knobs.occludes:
        groups.append(_draw_occluders(stream(seed, split, _STREAM_OCCLUDER), evidence, knobs, k))
    confusers = stream(seed, split, _STREAM_CONFUSERS) if knobs.confusers > 0 else None
    distractors = _draw_distractors(stream(seed, split, _STREAM_DISTRACTORS), concat(groups), knobs, k, confusers)
    objects = concat([distractors, *groups])
    lo, hi = knobs.contrast
    if hi < 1.0 or lo < 1.0:
        objects.opacity = lo + stream(seed, split, _STREAM_CONTRAST).random(objects.drawn.shape) * (hi - lo)
    kinds = np.array([KIND_DISTRACTOR] * distractors.slots + [KIND_EVIDENCE] * evidence.slots
                     + [KIND_DISTRACTOR] * (len(groups) - 1), dtype=np.int64)
    family = draw_family(seed, split, clean, k, rho)
    coarse, fine = _draw_background(stream(seed, split, _STREAM_BACKGROUND), family)
    return Layout(labels, clean, objects, kinds, coarse, fine, family)


def pairing(seed: int, split: str, labels: np.ndarray, how: str) -> np.ndarray:
    """Index of the image whose background image ``i`` shows: ``next`` = i + 1, ``rand`` = another
    image drawn uniformly, ``same`` = another image of the same class drawn uniformly (itself when
    it is its class's only image)."""
    n = len(labels)
    if how == "next":
        return (np.arange(n) + 1) % n
    u = stream(seed, split, _STREAM_PAIRING).random(n)
    if how == "rand":
        return (np.arange(n) + 1 + np.minimum((u * (n - 1)).astype(np.int64), max(n - 2, 0))) % n
    out = np.arange(n)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            continue
        pick = np.minimum((u[members] * (len(members) - 1)).astype(np.int64), len(members) - 2)
        out[members] = members[(np.searchsorted(members, members) + 1 + pick) % len(members)]
    return out


