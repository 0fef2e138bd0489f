"""Per-image metric states: what bootstrap intervals over images are computed from.

:class:`PerImageTracking` is a mixin of :class:`~reproduce.metrics.base.AttributionMetric`. A metric
keeps, beside chosen sum states, every image's own contribution to them (``cat``-reduced states, so
DDP gathers them), and the scalars ``compute()`` reports for any subset of the images (a bootstrap
resample) are ``statistic(sums over its rows)``: exactly what ``compute()`` would report on that
subset (:mod:`reproduce.runtime.intervals`).

Converting a metric:

1. ``self._track_per_image(*names)`` in ``__init__`` after the ``_add_sum`` calls of every state a
   scalar of ``_compute`` reads;
2. one ``self._accumulate_rows({name: rows [B, *shape]}, batch.indices)`` per batch for them;
3. optionally ``_compute_batch`` (the statistic of ``[R, ...]`` sums at once; the bootstrap calls
   it with 2000 resamples, so it matters for the time a table takes to assemble).

A scalar that is not a function of per-image sums (e.g. ReCo, whose thresholds are quantiles of
the pooled distances) is named in ``no_interval`` with the reason: :meth:`statistic` leaves it out
and the table keeps the plain rule for its column. State sizes are documented per metric: rows are
a few numbers per image, never per-pixel data.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from reproduce.errors import ConfigError, InputError, ReproduceError


class PerImageTracking:
    """Per-image rows of sum states and the statistic evaluated on sums of them (see the module docstring)."""

    no_interval: dict[str, str] = {}  # scalar -> why it has no per-image decomposition

    def _track_per_image(self, *names: str) -> None:
        """Keep each image's contribution to the sum states ``names`` (added with ``_add_sum``)
        beside the sums, in ``cat``-reduced states (DDP-correct). Call once in ``__init__``; then feed
        every batch through :meth:`_accumulate_rows` instead of ``_accumulate`` for these states."""
        for name in names:
            if self._reductions.get(name) is None or name in self._per_image_names:
                raise ConfigError(f"{type(self).__name__}: {name!r} is not a sum state, or is tracked twice.")
            self.add_state(f"per_image_{name}", default=[], dist_reduce_fx="cat")
            self._per_image_names.append(name)
        if "per_image_indices" not in self._reductions:
            self.add_state("per_image_indices", default=[], dist_reduce_fx="cat")

    def _accumulate_rows(self, rows: dict[str, torch.Tensor], indices: torch.Tensor) -> None:
        """Add per-image contributions ``rows[name]`` ``[B, *state shape]`` of the images with dataset
        indices ``indices`` ``[B]``: their sum to each sum state, the rows to its per-image state.
        Every tracked state gets its rows in the same call, so rows and indices stay aligned."""
        if set(rows) != set(self._per_image_names):
            raise InputError(f"{self.name}: rows must be given for exactly the tracked states {self._per_image_names}, got {sorted(rows)}.")
        b = int(indices.numel())
        for name, value in rows.items():
            state = getattr(self, name)
            value = value.detach().to(device=state.device, dtype=state.dtype)
            if tuple(value.shape) != (b, *state.shape):
                raise InputError(f"{self.name}: rows of {name!r} must be [B, *{tuple(state.shape)}] with B = {b}, got {tuple(value.shape)}.")
            self._accumulate(name, value.sum(0))
            getattr(self, f"per_image_{name}").append(value)
        self.per_image_indices.append(indices.detach().to(device=getattr(self, self._per_image_names[0]).device).long().reshape(-1))

    def per_image_states(self) -> dict[str, Any]:
        """``{"indices": [N], "states": {name: [N, *shape]}}`` of every image seen (every process
        under DDP: collective, call it on every rank), ordered by dataset index; ``{}`` when this
        metric keeps no per-image states. Summing any subset of rows and passing the sums to
        :meth:`statistic` gives what ``compute()`` reports on that subset."""
        if not self._per_image_names:
            return {}
        for name in ["indices", *self._per_image_names]:  # an empty rank must still take part in the gather
            listed, state = getattr(self, f"per_image_{name}"), getattr(self, self._per_image_names[0] if name == "indices" else name)
            if isinstance(listed, list) and not listed:
                shape = (0,) if name == "indices" else (0, *state.shape)
                listed.append(torch.zeros(shape, dtype=torch.long if name == "indices" else state.dtype, device=state.device))
        with self.sync_context():
            indices = _cat(self.per_image_indices)
            states = {name: _cat(getattr(self, f"per_image_{name}")) for name in self._per_image_names}
        order = torch.argsort(indices)
        indices = indices[order]
        repeated = indices[1:][indices[1:] == indices[:-1]]
        if repeated.numel():
            raise InputError(f"{self.name}: dataset indices {repeated.unique().tolist()[:10]} were evaluated more than once; "
                             "per-image states need each image once (check the sampler for padding duplicates).")
        return {"indices": indices, "states": {name: rows[order] for name, rows in states.items()}}

    def per_image_record(self, options: dict[str, Any]) -> dict[str, Any] | None:
        """The ``result.json`` entry of the per-image states (``per_image[<label>]``, see
        :mod:`reproduce.runtime.intervals`): JSON lists plus the constructor ``options`` that rebuild
        the statistic (and ``no_interval``, the scalars it cannot give, with the reason); None when
        this metric keeps none. Collective under DDP, as :meth:`per_image_states`."""
        states = self.per_image_states()
        if not states:
            return None
        record = {"indices": states["indices"].tolist(), "states": {k: v.tolist() for k, v in states["states"].items()},
                  "options": dict(options), "statistic": "metric"}
        if self.no_interval:
            record["no_interval"] = dict(self.no_interval)
        return record

    def statistic(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        """The scalars ``compute()`` reports (but those in ``no_interval``), evaluated on given sums
        of the per-image states (e.g. over a bootstrap resample of the images) instead of the
        accumulated ones; nothing is changed."""
        if set(sums) != set(self._per_image_names):
            raise InputError(f"{self.name}: statistic() needs sums of exactly {self._per_image_names}, got {sorted(sums)}.")
        saved = {name: getattr(self, name) for name in self._per_image_names}
        try:
            for name, value in sums.items():
                setattr(self, name, torch.as_tensor(value, dtype=saved[name].dtype, device=saved[name].device).reshape(saved[name].shape))
            out = self._compute()
        finally:
            for name, value in saved.items():
                setattr(self, name, value)
        return {key: float(value) for key, value in out.items() if value.dim() == 0 and key not in self.no_interval}

    def statistic_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """:meth:`statistic` of a batch of sums (each ``[R, *state shape]``, e.g. R bootstrap resamples)
        -> ``{scalar: [R]}`` float64, NaN where the metric is undefined on a set. One by one unless the
        metric vectorises it in :meth:`_compute_batch`."""
        batched = self._compute_batch({name: value.double() for name, value in sums.items()})
        if batched is not None:
            return {key: value.double() for key, value in batched.items() if key not in self.no_interval}
        found: list[dict[str, float]] = []
        for r in range(next(iter(sums.values())).shape[0]):
            try:
                found.append(self.statistic({name: value[r] for name, value in sums.items()}))
            except ReproduceError:
                found.append({})  # undefined on this set of images
        keys = sorted({key for value in found for key in value})
        return {key: torch.tensor([value.get(key, math.nan) for value in found], dtype=torch.float64) for key in keys}

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """Optional vectorised statistic: ``{scalar: [R]}`` from sums with a leading batch dim ``R``
        (the scalar keys of ``_compute``; NaN where undefined), or None to evaluate one by one."""
        return None

    @classmethod
    def for_statistic(cls, options: dict[str, Any], config: dict[str, Any]):
        """An instance that evaluates :meth:`statistic` from stored per-image states, without models:
        built from the constructor ``options`` the cell used (as in the table spec: ``name`` and
        ``scorer`` are ignored; models and ``"@reference"`` names become a placeholder that cannot be
        called). A metric whose constructor derives a knob from its model overrides this and pins
        that knob from the recorded ``config`` (e.g. a patch grid read from the ViT's token grid)."""
        knobs = {key: placeholder(value) for key, value in options.items() if key not in ("name", "scorer")}
        return cls(StatisticOnlyModel() if cls.needs_model else None, **knobs)


def placeholder(value: Any) -> Any:
    """``value`` with every model, or ``"@reference"`` name, replaced by a :class:`StatisticOnlyModel`."""
    if isinstance(value, nn.Module) or (isinstance(value, str) and value.startswith("@")):
        return StatisticOnlyModel()
    if isinstance(value, (list, tuple)):
        return [placeholder(v) for v in value]
    return value


def _cat(rows: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    return rows if isinstance(rows, torch.Tensor) else torch.cat(rows, dim=0)


class StatisticOnlyModel(nn.Module):
    """Stands in for a metric's model(s) when the metric only re-evaluates stored per-image states."""

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise InputError("This metric instance only recomputes statistics from stored per-image states; it has no model.")
