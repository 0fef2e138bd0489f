"""Max-sensitivity (Yeh et al., NeurIPS 2019), as Captum's ``sensitivity_max`` computes it.

For each image, ``samples`` perturbations ``d`` are drawn uniformly in the L-inf ball of radius
``radius`` (in the model's normalised input space, like Captum's default perturbation), the
attributor is re-run on ``x + d`` for the same class, and the score is

    max_d ||phi(x + d) - phi(x)|| / ||phi(x)||     (Frobenius norms; ||phi(x)|| = 0 counts as 1)

with ``phi(x)`` the batch's maps (Captum re-explains ``x``; for a deterministic attributor that is
the same map). Noise is drawn per sample from ``(seed, dataset index)``. Lower is better.
"""

from __future__ import annotations

import torch

from reproduce.errors import ConfigError
from reproduce.metrics.base import EXPLAIN, AttributionBatch, AttributionMetric, Explain
from reproduce.metrics.registry import register_metric
from reproduce.metrics.sample_rng import uniform


def sensitivity_noise(images: torch.Tensor, indices: torch.Tensor, *, samples: int, radius: float, seed: int) -> torch.Tensor:
    """Uniform noise in ``[-radius, radius]`` of shape ``[B, samples, C, H, W]``, per sample."""
    u = uniform(indices, seed, (samples, *images.shape[1:]), images.device, dtype=images.dtype)
    return (2 * u - 1) * radius


def max_sensitivity(explain: Explain, images: torch.Tensor, targets: torch.Tensor, maps: torch.Tensor,
                    noise: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """``[B]`` max over the noise draws of the relative change of the map (see module docstring).

    ``noise`` is ``[B, n, C, H, W]``; the perturbed copies are explained ``chunk`` draws at a time
    (all at once by default).
    """
    b, n = noise.shape[:2]
    chunk = chunk or n
    ref = maps.reshape(b, -1).double()
    ref_norm = ref.norm(dim=1)
    ref_norm = torch.where(ref_norm == 0, torch.ones_like(ref_norm), ref_norm)
    worst = torch.full((b,), -float("inf"), dtype=torch.float64, device=images.device)
    for start in range(0, n, chunk):
        d = noise[:, start:start + chunk]
        m = d.shape[1]
        perturbed = (images[:, None] + d).flatten(0, 1)
        with torch.enable_grad():
            out = explain(perturbed, targets.repeat_interleave(m))
        diff = out.detach().reshape(b, m, -1).double() - ref[:, None]
        worst = torch.maximum(worst, (diff.norm(dim=2) / ref_norm[:, None]).amax(1))
    return worst


@register_metric("max_sensitivity")
class MaxSensitivity(AttributionMetric):
    """Mean over images of the max relative map change under small input noise (lower is better)."""

    requires = (EXPLAIN,)
    directions = {"max_sensitivity": "lower"}

    def __init__(self, model=None, *, radius: float = 0.02, samples: int = 10, seed: int = 0, chunk: int | None = None):
        super().__init__(model)
        if not float(radius) > 0:
            raise ConfigError(f"radius must be > 0 (Captum's default 0.02), got {radius!r}.")
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ConfigError(f"samples must be a positive integer (Captum's default 10), got {samples!r}.")
        if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
            raise ConfigError(f"chunk must be a positive integer or None, got {chunk!r}.")
        self.radius, self.samples, self.seed, self.chunk = float(radius), samples, int(seed), chunk
        self._record(radius=self.radius, samples=samples, seed=self.seed, norm="fro", space="normalised input",
                     noise="uniform in the L-inf ball")
        self._add_sum("value_sum")
        self._add_sum("count")
        self._track_per_image("value_sum", "count")

    def _update(self, batch: AttributionBatch, explain: Explain | None = None) -> None:
        noise = sensitivity_noise(batch.images, batch.indices, samples=self.samples, radius=self.radius, seed=self.seed)

        def checked(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            rows = torch.arange(batch.size, device=images.device).repeat_interleave(images.shape[0] // batch.size)
            return self._explain(explain, images, targets, batch, rows=rows)

        values = max_sensitivity(checked, batch.images, batch.targets, batch.maps, noise, self.chunk)
        self._accumulate_rows({"value_sum": values, "count": torch.ones(batch.size, dtype=torch.float64)}, batch.indices)

    def _compute(self) -> dict[str, torch.Tensor]:
        return {"max_sensitivity": self.value_sum / self._require_samples(self.count)}

    def _compute_batch(self, sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"max_sensitivity": sums["value_sum"] / sums["count"]}
