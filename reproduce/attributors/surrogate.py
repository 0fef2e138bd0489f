"""Surrogate-model attributions over super-pixels: ``lime`` and ``kernel_shap``.

Both segment each image with a scikit-image segmenter (:mod:`reproduce.attributors.segmenters`,
cached), draw ``n_samples`` binary coalitions ``z`` over the ``K`` segments, evaluate the model on
the image with the segments of ``z = 0`` replaced by a baseline (``x * keep + b * (1 - keep)``),
fit a weighted linear model ``score ~ w0 + sum_k w_k z_k`` (scikit-learn, on the CPU) and paint each
segment with its coefficient. The two differ only in their sampling, weights and regression, all
as Captum's defaults (a test feeds Captum the same coalitions and gets the same maps):

- **LIME** (Ribeiro et al., 2016; Captum ``Lime``): ``z_k ~ Bernoulli(0.5)``; weight
  ``exp(-d^2 / (2 width^2))`` with ``d`` the cosine distance between the flattened input and the
  perturbed input (in the model's normalised space), ``width = kernel_width``; Lasso with
  ``alpha`` (Captum's ``SkLearnLasso(alpha=0.01)``).
- **KernelSHAP** (Lundberg & Lee, 2017; Captum ``KernelShap``): the first two coalitions are all
  segments and none (weight 1e6, which pins the fit to the end points), then ``k`` segments with
  ``p(k) ~ (K - 1) / (k (K - k))``, ``k = 1..K-1``, chosen as the top ``k`` of a Gaussian draw
  (uniform over subsets of size ``k``), weight 1: sampling by the Shapley kernel, so an ordinary
  least-squares fit (``LinearRegression``) estimates Shapley values.

Draws come from a generator seeded per image by ``(seed, image content)``
(:mod:`reproduce.attributors.content_seed`): a map does not depend on batch-mates. Cost:
``n_samples`` forward passes per image (LATEC uses 10; the defaults here are 100).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.linear_model import Lasso, LinearRegression
from torch import nn

from reproduce.attributors.base import Attributor
from reproduce.attributors.content_seed import image_generators
from reproduce.attributors.registry import register
from reproduce.attributors.segmenters import Segmenter
from reproduce.checks import check_choice, check_int, check_number
from reproduce.errors import InputError
from reproduce.models import fill_tensor
from reproduce.models.masking import FILL_CHOICES

SCORES = ("logit", "softmax")
KERNEL_SHAP_END_WEIGHT = 1e6  # Captum's inf_weight


class SurrogateAttributor(Attributor):
    """Shared machinery of ``lime`` and ``kernel_shap`` (see the module docstring).

    Args:
        n_samples: coalitions per image (= forward passes per image).
        segmenter, segmenter_options: the super-pixels (``slic`` at the package defaults).
        baseline: what removed segments become: ``"mean"`` (0 in normalised space, Captum's default
            baseline), ``"black"``, ``"blur"`` or a number in the normalised space.
        score: the model output explained: the target ``logit`` (Captum on a classifier) or ``softmax``.
        seed: selects the coalitions.
        max_batch: perturbed images per forward pass.
    """

    smoke_options: ClassVar[dict] = {"n_samples": 8, "segmenter": "watershed"}

    def __init__(self, model: nn.Module, n_samples: int = 100, segmenter: str = "slic",
                 segmenter_options: dict[str, Any] | None = None, baseline: str | float = "mean",
                 score: str = "logit", seed: int = 0, max_batch: int = 64, normalize: str | None = None):
        super().__init__(model, normalize=normalize)
        self.n_samples = check_int("n_samples", n_samples, minimum=2, error=InputError)
        self.segmenter = Segmenter(segmenter, segmenter_options)
        if isinstance(baseline, bool) or not (baseline in FILL_CHOICES or isinstance(baseline, (int, float))):
            raise InputError(f"baseline must be one of {list(FILL_CHOICES)} or a number, got {baseline!r}.")
        self.baseline = baseline
        self.score = check_choice("score", score, SCORES, error=InputError)
        self.seed = check_int("seed", seed, minimum=0, error=InputError)
        self.max_batch = check_int("max_batch", max_batch, error=InputError)

    # --- what lime and kernel_shap define ----------------------------------------------------
    def coalitions(self, k: int, g: torch.Generator) -> torch.Tensor:
        """``[n_samples, k]`` binary coalitions (1 = segment kept)."""
        raise NotImplementedError

    def weights(self, x: torch.Tensor, perturbed: torch.Tensor, z: torch.Tensor) -> np.ndarray:
        """Sample weights ``[n]`` for the image ``x`` ``[C, H, W]`` and its perturbations ``[n, C, H, W]``."""
        raise NotImplementedError

    def regressor(self):
        raise NotImplementedError

    # --- the shared pipeline -----------------------------------------------------------------
    def _attribute(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        labels = self.segmenter(x, self.adapter.data_config)
        fill = fill_tensor(self.adapter, x, self.baseline).expand_as(x)
        maps = []
        for i, g in enumerate(image_generators(self.seed, x)):
            k = int(labels[i].max()) + 1
            z = self.coalitions(k, g)
            maps.append(self.explain_image(x[i], fill[i], labels[i], z, int(target[i])))
        return torch.stack(maps)

    def explain_image(self, x: torch.Tensor, fill: torch.Tensor, labels: torch.Tensor, z: torch.Tensor,
                      target: int) -> torch.Tensor:
        """The map ``[H, W]`` of one image from its coalitions ``z`` ``[n, K]`` (the tests feed the
        same coalitions to Captum)."""
        keep = z.to(device=x.device, dtype=x.dtype)[:, labels]  # [n, H, W]
        outputs, weights = [], []
        with torch.no_grad():
            for start in range(0, keep.shape[0], self.max_batch):
                k = keep[start:start + self.max_batch, None]
                perturbed = x * k + fill * (1 - k)
                logits = self.model(perturbed)
                scores = logits.softmax(-1) if self.score == "softmax" else logits
                outputs.append(scores[:, target].double().cpu())
                weights.append(self.weights(x, perturbed, z[start:start + self.max_batch]))
        y = torch.cat(outputs).numpy()
        if not np.isfinite(y).all():
            raise InputError(f"{self.name}: the model returned NaN/Inf scores on perturbed images; check the model.")
        fit = self.regressor().fit(z.double().numpy(), y, sample_weight=np.concatenate(weights))
        coef = torch.as_tensor(np.asarray(fit.coef_, dtype=np.float64).reshape(-1), device=x.device)
        return coef.to(x.dtype)[labels]


@register("lime")
class Lime(SurrogateAttributor):
    """LIME over super-pixels, Captum's defaults (Bernoulli(0.5) coalitions, exponential cosine kernel
    of width ``kernel_width`` in input space, Lasso ``alpha``)."""

    # An untrained model's logits barely move when segments are removed, and Lasso(0.01) then
    # zeroes every coefficient: the smoke runs (random or one-epoch models) use a weaker penalty.
    smoke_options: ClassVar[dict] = {"n_samples": 8, "segmenter": "watershed", "alpha": 1e-3}

    def __init__(self, model: nn.Module, n_samples: int = 100, kernel_width: float = 1.0, alpha: float = 0.01, **options: Any):
        super().__init__(model, n_samples=n_samples, **options)
        self.kernel_width = check_number("kernel_width", kernel_width, positive=True, error=InputError)
        self.alpha = check_number("alpha", alpha, non_negative=True, error=InputError)

    def coalitions(self, k: int, g: torch.Generator) -> torch.Tensor:
        return (torch.rand(self.n_samples, k, generator=g) < 0.5).long()

    def weights(self, x: torch.Tensor, perturbed: torch.Tensor, z: torch.Tensor) -> np.ndarray:
        original = x.flatten().double()
        flat = perturbed.flatten(1).double()
        cosine = (flat @ original) / (flat.norm(dim=1) * original.norm()).clamp_min(1e-8)
        distance = 1 - cosine
        return torch.exp(-(distance**2) / (2 * self.kernel_width**2)).cpu().numpy()

    def regressor(self):
        return Lasso(alpha=self.alpha)


@register("kernel_shap")
class KernelShap(SurrogateAttributor):
    """KernelSHAP over super-pixels as Captum's ``KernelShap`` (Shapley-kernel sampling, OLS fit)."""

    def coalitions(self, k: int, g: torch.Generator) -> torch.Tensor:
        if k < 2:
            raise InputError("kernel_shap needs at least two segments per image; choose a finer segmenter.")
        sizes = torch.arange(k, dtype=torch.float64)
        probs = (k - 1) / (sizes * (k - sizes))
        probs[0] = 0.0
        rows = [torch.ones(k, dtype=torch.long), torch.zeros(k, dtype=torch.long)]
        for _ in range(self.n_samples - 2):
            size = int(torch.multinomial(probs, 1, generator=g))
            values = torch.randn(k, generator=g)
            rows.append((values > torch.kthvalue(values, k - size).values).long())
        return torch.stack(rows[: self.n_samples])

    def weights(self, x: torch.Tensor, perturbed: torch.Tensor, z: torch.Tensor) -> np.ndarray:
        selected = z.sum(1)
        ends = (selected == 0) | (selected == z.shape[1])
        return np.where(ends.numpy(), KERNEL_SHAP_END_WEIGHT, 1.0)

    def regressor(self):
        return LinearRegression()

