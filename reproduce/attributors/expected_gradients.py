"""Expected Gradients (Erion et al., 2021), the method LATEC (NeurIPS'24) ranks first.

``EG_i(x) = E_{b ~ D, a ~ U(0, 1), e ~ N(0, s^2)} [ (x~ - b)_i * d f(b + a (x~ - b)) / d x_i ]`` with
``x~ = x + e``: the expectation over baselines ``b`` drawn from the data is estimated with
``n_samples`` draws per image. This is Captum's ``GradientShap`` (a noise tunnel over
``InputBaselineXGradient``), which LATEC calls with ``n_samples=40, stdevs=1e-3`` and the current
batch as the baseline distribution; a test feeds Captum's draws to :meth:`ExpectedGradients.
from_draws` and gets Captum's maps.

Baselines (``baselines=``):

- a **reference set** (default): ``{dataset, split, count, seed, options}`` read once through
  :func:`reproduce.data.create_dataset` (``count`` images of a seeded permutation of the split,
  normalised with the model's data config, at the inputs' size when the dataset takes
  ``image_size``). The default is 16 of the first 64 training images of the embedded benchmark;
- a tensor ``[R, C, H, W]`` in the model's normalised space (``[C, H, W]`` = one baseline);
- ``"batch"``: LATEC's setting, the current batch itself. An image's map then depends on its
  batch-mates by definition, so this variant is **not batch-invariant** (``batch_invariant`` is
  False on such an instance) and results depend on the batch size and order.

Draws (which baseline, the interpolation point, the noise) come from a generator seeded per image
by ``(seed, image content)`` (:mod:`reproduce.attributors.content_seed`), so with a fixed reference
set a map does not depend on batch-mates. Cost: ``n_samples`` forward and backward passes per image.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from reproduce.attributors.content_seed import image_generators
from reproduce.attributors.gradient import GradientAttributor
from reproduce.attributors.registry import register
from reproduce.checks import check_int, check_number
from reproduce.data import create_dataset
from reproduce.data.registry import DATASETS, has_splits
from reproduce.errors import InputError

DEFAULT_REFERENCE = {"dataset": "synthetic", "split": "train", "count": 16, "seed": 0, "options": {"sizes": {"train": 64}}}
REFERENCE_KEYS = ("dataset", "split", "count", "seed", "options")
_REFERENCE_CACHE: dict[tuple, torch.Tensor] = {}


def reference_images(spec: dict[str, Any], data_config, height: int, width: int) -> torch.Tensor:
    """``count`` images ``[R, C, H, W]`` (normalised) of a seeded permutation of a dataset split."""
    name = spec["dataset"]
    options = dict(spec.get("options") or {})
    if has_splits(name):
        options.setdefault("split", spec.get("split", "train"))
    if "image_size" in DATASETS.options(name) and height == width:
        options.setdefault("image_size", height)
    key = (repr(sorted(spec.items())), repr(sorted(options.items())), data_config)
    if key not in _REFERENCE_CACHE:
        dataset = create_dataset(name, normalize=data_config, **options)
        count = min(int(spec.get("count", 16)), len(dataset))
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(int(spec.get("seed", 0))))
        _REFERENCE_CACHE[key] = torch.stack([dataset[int(i)]["image"] for i in order[:count]]).float()
    images = _REFERENCE_CACHE[key]
    if tuple(images.shape[-2:]) != (height, width):
        raise InputError(
            f"The reference set {name!r} has {tuple(images.shape[-2:])} images but the inputs are "
            f"{height}x{width}; set baselines.options.image_size or pass a baseline tensor of the inputs' size."
        )
    return images


@register("expected_gradients")
class ExpectedGradients(GradientAttributor):
    """Expected Gradients / GradientShap with baselines from the data (see the module docstring).

    Args:
        baselines: a reference-set spec (dict), a tensor of baselines, or ``"batch"``.
        n_samples: draws per image (LATEC: 40); each is one forward and one backward pass.
        stdevs: standard deviation of the Gaussian noise added to the input (LATEC: 1e-3), in the
            model's normalised space, as Captum's ``stdevs``.
        seed: selects the draws (see the module docstring).
        internal_batch_size: at most this many draws (all images together) per pass.
        abs, channel_reduction, normalize: see the gradient family (signed, summed over channels).
    """

    smoke_options: ClassVar[dict] = {"n_samples": 4}

    def __init__(
        self,
        model: nn.Module,
        baselines: dict[str, Any] | str | torch.Tensor | None = None,
        n_samples: int = 40,
        stdevs: float = 1e-3,
        seed: int = 0,
        internal_batch_size: int = 64,
        abs: bool = False,
        channel_reduction: str = "sum",
        normalize: str | None = None,
    ):
        super().__init__(model, abs=abs, channel_reduction=channel_reduction, normalize=normalize)
        self.n_samples = check_int("n_samples", n_samples, error=InputError)
        self.stdevs = check_number("stdevs", stdevs, non_negative=True, error=InputError)
        self.seed = check_int("seed", seed, minimum=0, error=InputError)
        self.internal_batch_size = check_int("internal_batch_size", internal_batch_size, error=InputError)
        self.baselines = self._check_baselines(DEFAULT_REFERENCE if baselines is None else baselines)
        self.batch_invariant = not (isinstance(self.baselines, str) and self.baselines == "batch")

    def _check_baselines(self, baselines: Any) -> Any:
        channels = self.adapter.data_config.input_size[0]
        if isinstance(baselines, str):
            if baselines != "batch":
                raise InputError(f"baselines must be 'batch', a reference-set dict or a tensor, got {baselines!r}.")
            return baselines
        if isinstance(baselines, torch.Tensor):
            b = baselines.unsqueeze(0) if baselines.dim() == 3 else baselines
            if b.dim() != 4 or b.shape[0] == 0 or b.shape[1] != channels or not b.is_floating_point():
                raise InputError(
                    f"baselines must be a float tensor [R, {channels}, H, W] (or [{channels}, H, W]) in the model's "
                    f"normalised space, got {tuple(baselines.shape)} ({baselines.dtype})."
                )
            if not torch.isfinite(b).all():
                raise InputError("baselines contain NaN or Inf.")
            return b.detach()
        if isinstance(baselines, dict):
            unknown = sorted(set(baselines) - set(REFERENCE_KEYS))
            if unknown or "dataset" not in baselines:
                raise InputError(
                    f"A reference-set baselines spec needs 'dataset' and takes {list(REFERENCE_KEYS)}, got "
                    f"{sorted(baselines)}; e.g. {DEFAULT_REFERENCE}."
                )
            check_int("baselines.count", baselines.get("count", 16), error=InputError)
            check_int("baselines.seed", baselines.get("seed", 0), minimum=0, error=InputError)
            return dict(baselines)
        raise InputError(f"baselines must be 'batch', a reference-set dict or a tensor, got {type(baselines).__name__}.")

    def baseline_set(self, x: torch.Tensor) -> torch.Tensor:
        """The baselines ``[R, C, H, W]`` the draws pick from, on ``x``'s device."""
        if isinstance(self.baselines, str):
            return x.detach()
        if isinstance(self.baselines, torch.Tensor):
            base = self.baselines
            if tuple(base.shape[-2:]) != tuple(x.shape[-2:]):
                raise InputError(
                    f"baselines are {tuple(base.shape[-2:])} but the inputs are {tuple(x.shape[-2:])}: pass "
                    "baselines of the inputs' size."
                )
        else:
            base = reference_images(self.baselines, self.adapter.data_config, *x.shape[-2:])
        return base.to(device=x.device, dtype=x.dtype)

    def draws(self, x: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per image: baseline indices ``[B, n]``, interpolation points ``[B, n]``, noise ``[B, n, C, H, W]``."""
        index, alpha, noise = [], [], []
        for g in image_generators(self.seed, x):
            index.append(torch.randint(count, (self.n_samples,), generator=g))
            alpha.append(torch.rand(self.n_samples, generator=g, dtype=torch.float64))
            noise.append(torch.randn((self.n_samples, *x.shape[1:]), generator=g, dtype=torch.float64))
        move = {"device": x.device}
        return (torch.stack(index).to(**move), torch.stack(alpha).to(**move, dtype=x.dtype),
                torch.stack(noise).to(**move, dtype=x.dtype) * self.stdevs)

    def signed(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        base = self.baseline_set(x)
        index, alpha, noise = self.draws(x, base.shape[0])
        return self.from_draws(x, target, base[index], x[:, None] + noise, alpha)

    def from_draws(self, x: torch.Tensor, target: torch.Tensor, baselines: torch.Tensor,
                   noisy: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """``mean_j (noisy_j - b_j) * grad f(b_j + alpha_j (noisy_j - b_j))`` ``[B, C, H, W]`` for
        given draws: baselines and noisy inputs ``[B, n, C, H, W]``, points ``alpha`` ``[B, n]``."""
        b, n = alpha.shape
        diff = (noisy - baselines).reshape(b * n, *x.shape[1:])
        start_points = baselines.reshape(b * n, *x.shape[1:])
        a = alpha.reshape(b * n, 1, 1, 1)
        rows = torch.arange(b, device=x.device).repeat_interleave(n)
        total = torch.zeros_like(x)
        for start in range(0, b * n, self.internal_batch_size):
            r = slice(start, min(start + self.internal_batch_size, b * n))
            grad = self.gradient(start_points[r] + a[r] * diff[r], target[rows[r]])
            total.index_add_(0, rows[r], diff[r] * grad)
        return total / n
