"""95 % bootstrap confidence intervals over images (and seeds) for table cells and comparisons.

A cell's ``result.json`` may carry per-image states next to its aggregates (see
:meth:`reproduce.metrics.base.AttributionMetric.per_image_states`)::

    "per_image": {
      "<metric label>": {
        "indices": [12, 15, ...],                 # dataset indices, ascending, each once
        "states": {"<sum state>": [[...], ...]},  # one row per index: [N, *state shape]
        "options": {"name": "pxap", ...},         # the metric's constructor options (as in the spec)
        "statistic": "metric"                     # rebuild the metric and evaluate its statistic
      },
      "accuracy": {"indices": [...], "states": {"accuracy": [100.0, 0.0, ...], "count": [1.0, ...]},
                   "statistic": "mean"}            # sum(state) / sum(count) per state
    }

``"states"`` may instead be the name of an ``.npz`` file beside ``result.json`` holding arrays
``<label>/indices`` and ``<label>/<state>`` (compact for large test sets; what an evaluation writes:
``per_image.npz``, with its ``"sha256"`` in each entry, so a file from another run is refused). An
entry's ``"no_interval"`` names the metric's scalars that are no function of per-image sums (with the
reason): their columns get no interval. With
``"statistic": "metric"`` the statistic of any set of images is
``metric_class(result["metrics"][label]["metric"]).for_statistic(options, config).statistic(sums)``
(``statistic_batch`` for many sets at once)
on the sums of its rows: the exact reported number (pooled PxAP, ratios and accuracies included),
no model needed. Keys: ``<label>/<scalar>`` (a ``"mean"`` state named like its label is the bare key,
e.g. ``accuracy``).

Intervals use ``scipy.stats.bootstrap`` with **BCa** (bias-corrected and accelerated): table
statistics include pooled ratios (PxAP, MeGe) and bounded rates near 0 or 100 % whose bootstrap
distributions are skewed, where BCa is second-order accurate and the percentile interval is not; where
BCa is undefined (a degenerate distribution, e.g. every image scores 100 %) the percentile interval of
the same resamples is reported and named. ``n_resamples`` = :data:`N_RESAMPLES`, seeded with
:data:`RANDOM_STATE`, so two runs give identical intervals, and two calls with the same numbers of
images and seeds draw the same resamples.

Several seeds: a **crossed** bootstrap. Images and seeds are resampled independently (two samples,
``paired=False``); the statistic is the mean, over the resampled seeds, of each seed's statistic at
the resampled images (the same images for every seed). The interval so covers the variation over
test images and over training seeds. With one seed it covers images only.

Paired comparisons (row A against row B, or against a constant) evaluate both rows on the same
resampled images and seeds; rows are paired on the dataset indices they share (the note says so, and
how many, when a row evaluated more). Fewer than :data:`MIN_IMAGES` images give no interval.
Each resample's statistic is computed once per cell (memoised), vectorised where the metric allows
(:meth:`~reproduce.metrics.base.AttributionMetric.statistic_batch`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from reproduce.errors import DataError

CONFIDENCE = 0.95
N_RESAMPLES = 2000
RANDOM_STATE = 0
MIN_IMAGES = 10
BATCH = 250  # resamples per vectorised statistic call: bounds the [batch, N] weight matrices
EFFECTS = ("difference", "relative")


@dataclass(frozen=True)
class Interval:
    """A statistic with its 95 % interval (``low``/``high`` are None when there is none: ``note`` says why)."""

    estimate: float | None
    low: float | None = None
    high: float | None = None
    n_images: int = 0
    n_seeds: int = 0
    method: str = ""
    note: str = ""

    @property
    def defined(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def half_width(self) -> float | None:
        return None if not self.defined else (self.high - self.low) / 2

    def scaled(self, factor: float) -> "Interval":
        """In other units (a table column's ``scale``)."""
        def s(v):
            return None if v is None else v * factor
        low, high = s(self.low), s(self.high)
        if factor < 0 and self.defined:
            low, high = high, low
        return replace(self, estimate=s(self.estimate), low=low, high=high)

    def as_dict(self) -> dict[str, Any]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "n_images": self.n_images,
                "n_seeds": self.n_seeds, "method": self.method, "note": self.note}


class PerImageStates:
    """One metric's per-image states of one cell, and its statistic on weighted sets of images."""

    def __init__(self, label: str, indices: np.ndarray, states: dict[str, np.ndarray],
                 evaluate: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], prefix: str,
                 no_interval: dict[str, str] | None = None):
        self.label, self.indices, self.states, self.evaluate, self.prefix = label, indices, states, evaluate, prefix
        self.no_interval = dict(no_interval or {})  # scalars the states cannot give, and why
        # Every scalar of each weighted set evaluated so far: the same resamples recur (the cell's own
        # interval, each of its columns, every paired comparison on the same images and seeds).
        self._memo: dict[bytes, dict[str, np.ndarray]] = {}
        self._probe = np.random.default_rng(12345).random(indices.size)  # fingerprints weight matrices
        for name, rows in states.items():
            if rows.shape[0] != indices.shape[0]:
                raise DataError(f"per_image[{label!r}]: state {name!r} has {rows.shape[0]} rows for {indices.shape[0]} indices.")
        if indices.size and np.any(np.diff(indices) <= 0):
            raise DataError(f"per_image[{label!r}]: indices must be ascending and unique (each image once).")

    @classmethod
    def from_result(cls, result: dict[str, Any], label: str, cell_dir: str | None = None) -> "PerImageStates | None":
        """The states of ``label`` in a cell's result, or None when the cell stored none."""
        entry = (result.get("per_image") or {}).get(label)
        if entry is None:
            return None
        indices, states = _read_rows(entry, label, cell_dir)
        kind = entry.get("statistic", "metric")
        if kind == "mean":
            return cls(label, indices, states, _mean_statistic, prefix="" if set(states) == {label, "count"} else f"{label}/")
        if kind != "metric":
            raise DataError(f"per_image[{label!r}]: unknown statistic {kind!r}; use 'metric' or 'mean'.")
        from reproduce.metrics import metric_class

        config = (result.get("metrics") or {}).get(label) or {}
        options = entry.get("options") or {}
        name = config.get("metric") or options.get("name") or label
        metric = metric_class(name).for_statistic(options, config)

        def evaluate(sums: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            import torch

            out = metric.statistic_batch({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sums.items()})
            return {k: v.numpy() for k, v in out.items()}

        return cls(label, indices, states, evaluate, prefix=f"{label}/", no_interval=entry.get("no_interval"))

    def key(self, scalar: str) -> str:
        return f"{self.prefix}{scalar}"

    def restrict(self, indices: np.ndarray) -> "PerImageStates":
        """The rows of the given dataset indices (a subset of this cell's)."""
        if np.array_equal(indices, self.indices):
            return self
        rows = np.searchsorted(self.indices, indices)
        return PerImageStates(self.label, self.indices[rows], {k: v[rows] for k, v in self.states.items()},
                              self.evaluate, self.prefix, self.no_interval)

    def values(self, draws: "Draws", key: str) -> np.ndarray:
        """The statistic ``key`` on each resampled set of images -> ``[R]``; NaN where the metric is
        undefined on a set."""
        scalar = key[len(self.prefix):]
        every = self._every_scalar(draws)
        if not every:  # undefined on every set
            return np.full(draws.count, np.nan)
        if scalar not in every:
            raise DataError(f"per_image[{self.label!r}] has no scalar {scalar!r}; it gives {sorted(every)}.")
        return every[scalar]

    def _every_scalar(self, draws: "Draws") -> dict[str, np.ndarray]:
        # A random projection identifies each multiset of images (two different ones collide with
        # probability 0), so a resample drawn again by another bootstrap is not evaluated twice.
        digest = self._probe[draws.samples].sum(1).tobytes() + bytes(str(draws.samples.shape), "ascii")
        if digest in self._memo:
            return self._memo[digest]
        weights = draws.weights
        sums = {name: (weights @ rows.reshape(rows.shape[0], -1)).reshape(weights.shape[0], *rows.shape[1:])
                for name, rows in self.states.items()}
        every = {k: np.asarray(v, dtype=np.float64) for k, v in self.evaluate(sums).items()}
        self._memo[digest] = every
        return every

    def estimate(self, key: str) -> float:
        return float(self.values(Draws.everything(self.indices.size), key)[0])


def _mean_statistic(sums: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``sum(state) / sum(count)`` per resample (rows of scalar states: ``[R]``)."""
    count = sums["count"].reshape(sums["count"].shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        return {name: np.where(count > 0, value.reshape(count.shape[0]) / count, np.nan)
                for name, value in sums.items() if name != "count"}


def _read_rows(entry: dict[str, Any], label: str, cell_dir: str | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    states = entry.get("states")
    if isinstance(states, str):
        path = states if os.path.isabs(states) or cell_dir is None else os.path.join(cell_dir, states)
        _check_digest(path, entry.get("sha256"), label)
        try:
            with np.load(path) as npz:
                indices = npz[f"{label}/indices"]
                prefix = f"{label}/"
                rows = {k[len(prefix):]: npz[k] for k in npz.files if k.startswith(prefix) and k != f"{label}/indices"}
        except (OSError, KeyError) as err:
            raise DataError(f"per_image[{label!r}] refers to {path!r}, which cannot be read ({err}); re-run the cell.") from err
    elif isinstance(states, dict) and states:
        indices = np.asarray(entry.get("indices"), dtype=np.int64)
        rows = {name: np.asarray(values, dtype=np.float64) for name, values in states.items()}
    else:
        raise DataError(f"per_image[{label!r}] has no states; expected {{state: rows}} or an .npz file name.")
    return np.asarray(indices, dtype=np.int64).reshape(-1), {k: np.asarray(v, dtype=np.float64) for k, v in rows.items()}


def _check_digest(path: str, expected: str | None, label: str) -> None:
    """A cell records the sha256 of the ``.npz`` it wrote: a file from another run of the cell (e.g.
    one killed after writing its states but before its ``result.json``) is refused, never mixed in."""
    if expected is None or not os.path.exists(path):
        return
    with open(path, "rb") as f:
        found = hashlib.sha256(f.read()).hexdigest()
    if found != expected:
        raise DataError(f"per_image[{label!r}]: {path!r} is not the file this result wrote (sha256 {found[:12]}, "
                        f"expected {expected[:12]}); re-run the cell (recompute=<its key>).")


# --- the bootstrap -----------------------------------------------------------------------------------
class Draws:
    """A batch of ``R`` resamples of ``size`` items: index samples ``[R, m]`` (``m = size``, or
    ``size - 1`` in the jackknife) and, when needed, the counts of each item ``[R, size]``."""

    def __init__(self, samples: np.ndarray, size: int):
        self.samples = np.asarray(samples, dtype=np.int64).reshape(-1, np.shape(samples)[-1])
        self.size, self.count = size, self.samples.shape[0]

    @classmethod
    def everything(cls, size: int) -> "Draws":
        return cls(np.arange(size)[None], size)

    @functools.cached_property
    def weights(self) -> np.ndarray:
        flat = (self.samples + self.size * np.arange(self.count)[:, None]).reshape(-1)
        return np.bincount(flat, minlength=self.count * self.size).reshape(self.count, self.size).astype(np.float64)


def bootstrap(statistic: Callable[[Draws, np.ndarray], np.ndarray], n_images: int, n_seeds: int) -> tuple[float, float, str, str]:
    """``(low, high, method, note)`` of ``statistic(images: Draws, seed weights [R, S]) -> [R]`` under
    the crossed bootstrap of images and seeds (see the module docstring)."""
    data = (np.arange(n_images),) if n_seeds == 1 else (np.arange(n_images), np.arange(n_seeds))

    def vectorised(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        images = np.asarray(samples[0])
        shape = images.shape[:-1]
        draws = Draws(images, n_images)
        c = np.ones((draws.count, 1)) if n_seeds == 1 else Draws(samples[1], n_seeds).weights
        return statistic(draws, c).reshape(shape)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on degenerate (BCa-undefined) distributions; handled below
        from scipy.stats import bootstrap as scipy_bootstrap

        res = scipy_bootstrap(data, vectorised, vectorized=True, paired=False, n_resamples=N_RESAMPLES, batch=BATCH,
                              confidence_level=CONFIDENCE, method="BCa", random_state=np.random.default_rng(RANDOM_STATE))
    dist = np.asarray(res.bootstrap_distribution)
    undefined = int(np.isnan(dist).sum())
    if undefined:
        return None, None, "", f"the statistic is undefined on {undefined} of {dist.size} resamples: no interval"
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    method = f"BCa bootstrap, {N_RESAMPLES} resamples"
    if not (np.isfinite(low) and np.isfinite(high)):
        tail = (1 - CONFIDENCE) / 2 * 100
        low, high = (float(v) for v in np.percentile(dist, [tail, 100 - tail]))
        method = f"percentile bootstrap, {N_RESAMPLES} resamples (BCa undefined: degenerate distribution)"
    return low, high, method, ""


def _seed_mean(per_seed: Sequence[PerImageStates], key: str, w: Draws, c: np.ndarray) -> np.ndarray:
    values = np.stack([states.values(w, key) for states in per_seed], axis=1)  # [B, S]
    return (values * c).sum(1) / c.sum(1)


def _common(rows: Sequence[Sequence[PerImageStates]]) -> tuple[np.ndarray, list[list[PerImageStates]]]:
    common = rows[0][0].indices
    for states in (s for row in rows for s in row):
        common = np.intersect1d(common, states.indices)
    return common, [[s.restrict(common) for s in row] for row in rows]


def cell_interval(per_seed: Sequence[PerImageStates], key: str) -> Interval:
    """The 95 % interval of one cell's statistic ``key`` (one :class:`PerImageStates` per seed)."""
    common, (aligned,) = _common([per_seed])
    n, s = int(common.size), len(aligned)
    estimate = float(np.mean([states.estimate(key) for states in aligned])) if n else None
    note = "" if all(st.indices.size == n for st in per_seed) else f"on the {n} images every seed evaluated"
    if n < MIN_IMAGES:
        return Interval(estimate, n_images=n, n_seeds=s, note=f"fewer than {MIN_IMAGES} images (n = {n}): no interval")
    low, high, method, why = bootstrap(lambda w, c: _seed_mean(aligned, key, w, c), n, s)
    return Interval(estimate, low, high, n, s, method, "; ".join(x for x in (note, why) if x))


def paired_interval(a: Sequence[PerImageStates], b: Sequence[PerImageStates] | None, key_a: str,
                    key_b: str | None = None, *, constant: float | None = None, factor: float = 1.0,
                    effect: str = "difference") -> Interval:
    """The effect of A against ``factor`` x B (same images, same seeds) or against ``constant``:
    ``A - factor*B`` (``difference``) or ``A / (factor*B) - 1`` in % (``relative``)."""
    if effect not in EFFECTS:
        raise ValueError(f"effect must be one of {EFFECTS}, got {effect!r}.")
    if (b is None) == (constant is None):
        raise ValueError("Compare against exactly one of a row (b) or a constant.")
    if b is not None and len(a) != len(b):
        return Interval(None, note=f"the rows have different seeds ({len(a)} vs {len(b)}): no paired comparison")
    common, aligned = _common([a] if b is None else [a, b])
    n, s = int(common.size), len(a)
    largest = max(st.indices.size for row in ([a] if b is None else [a, b]) for st in row)
    note = "" if n == largest else f"paired on the {n} images both rows evaluated"

    def effect_of(w: Draws, c: np.ndarray) -> np.ndarray:
        va = _seed_mean(aligned[0], key_a, w, c)
        vb = np.full_like(va, constant) if b is None else factor * _seed_mean(aligned[1], key_b or key_a, w, c)
        if effect == "difference":
            return va - vb
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(vb != 0, (va / vb - 1) * 100, np.nan)

    if n == 0:
        return Interval(None, n_images=0, n_seeds=s, note="the rows share no image: no paired comparison")
    estimate = float(effect_of(Draws.everything(n), np.ones((1, s)))[0])
    estimate = None if not np.isfinite(estimate) else estimate
    if n < MIN_IMAGES:
        return Interval(estimate, n_images=n, n_seeds=s, note=f"fewer than {MIN_IMAGES} paired images (n = {n}): no interval")
    low, high, method, why = bootstrap(effect_of, n, s)
    return Interval(estimate, low, high, n, s, method, "; ".join(x for x in (note, why) if x))


def row_states(results_by_seed: Sequence[dict[str, Any] | None], key: str,
               cell_dirs: Sequence[str | None] | None = None,
               cache: dict[tuple[int, str], PerImageStates | None] | None = None) -> tuple[list[PerImageStates] | None, str]:
    """Per-seed states holding ``key`` for one table row, or ``(None, why not)``. ``cache`` (keyed by
    the result's id and the label) shares the loaded states, and so their evaluations, between columns."""
    label = key.split("/", 1)[0]
    if not results_by_seed or any(r is None for r in results_by_seed):
        return None, "not run"
    cache = {} if cache is None else cache
    states = []
    for i, result in enumerate(results_by_seed):
        if (id(result), label) not in cache:
            cache[(id(result), label)] = PerImageStates.from_result(result, label, (cell_dirs or [None] * len(results_by_seed))[i])
        found = cache[(id(result), label)]
        if found is None:
            return None, f"no per-image states for {label!r} in the cell (it predates them or the metric keeps none)"
        scalar = key[len(found.prefix):]
        if scalar in found.no_interval:
            return None, f"{key}: {found.no_interval[scalar]}, so it has no interval"
        states.append(found)
    return states, ""
