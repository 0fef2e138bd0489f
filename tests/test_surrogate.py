"""LIME and KernelSHAP over super-pixels: equal to Captum's Lime / KernelShap when Captum is fed the
same coalitions, exact Shapley values on an additive model, and the sampling distributions."""

from __future__ import annotations

import pytest
import torch
from captum.attr import KernelShap as CaptumKernelShap
from captum.attr import Lime as CaptumLime
from torch import nn

from reproduce.attributors import create
from reproduce.attributors.content_seed import image_generators
from reproduce.errors import ConfigError, InputError


def _feed(rows: torch.Tensor):
    """A Captum perturb_func (generator function) that yields our coalitions in order."""
    def perturb(_original, **_kwargs):
        for row in rows:
            yield row[None].long()
    return perturb


def _captum_map(captum_cls, model, x, target, labels, z, **captum_kwargs):
    explainer = captum_cls(model, **captum_kwargs) if captum_cls is CaptumLime else captum_cls(model)
    if captum_cls is CaptumKernelShap:
        explainer.perturb_func = _feed(z)
    return explainer.attribute(x, target=target, baselines=0.0, feature_mask=labels[None, None],
                               n_samples=z.shape[0], perturbations_per_eval=z.shape[0])[0, 0]


@pytest.mark.parametrize("name", ["lime", "kernel_shap"])
def test_equal_to_captum_on_the_same_coalitions(name, cnn, images):
    """Measured max relative difference: 1.1e-7 (LIME, Lasso) and 6.8e-7 (KernelSHAP). With fewer
    coalitions than segments the least-squares fit is underdetermined and Captum's float32 and our
    float64 minimum-norm solutions drift apart, so the test uses 60 coalitions for about 16 segments."""
    from captum.attr._core.lime import get_exp_kernel_similarity_function
    from captum._utils.models.linear_model import SkLearnLasso

    ours = create(name, cnn, n_samples=60, segmenter="watershed", segmenter_options={"markers": 16}, **({"alpha": 1e-4} if name == "lime" else {}))
    x = images[:1]
    labels = ours.segmenter(x, ours.adapter.data_config)[0]
    z = ours.coalitions(int(labels.max()) + 1, image_generators(ours.seed, x)[0])
    with torch.no_grad():
        mine = ours.explain_image(x[0], torch.zeros_like(x[0]), labels, z, 2)
    extra = {}
    if name == "lime":
        extra = {"interpretable_model": SkLearnLasso(alpha=1e-4),
                 "similarity_func": get_exp_kernel_similarity_function("cosine", 1.0), "perturb_func": _feed(z)}
    ref = _captum_map(CaptumLime if name == "lime" else CaptumKernelShap, cnn, x, 2, labels, z, **extra)
    scale = ref.abs().max().item()
    assert scale > 0
    diff = (mine - ref).abs().max().item() / scale
    print(f"{name}: max relative difference to Captum {diff:.2e}")
    assert diff < 1e-4
    assert torch.equal(ours.attribute(x, 2), mine[None])  # the pipeline draws exactly these coalitions


class Additive(nn.Module):
    """f(x)_c = sum_pixels v_c * x (class c weights every pixel by v_c): additive over segments."""

    def __init__(self):
        super().__init__()
        self.v = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))

    def forward(self, x):
        return x.sum((1, 2, 3))[:, None] * self.v


def test_kernel_shap_recovers_exact_shapley_values_of_an_additive_model():
    """With baseline 0, the Shapley value of a segment of an additive model is its own contribution."""
    model = Additive().eval()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) + 0.5
    shap = create("kernel_shap", model, n_samples=60, segmenter="slic", baseline=0.0)
    maps = shap.attribute(x, 1)
    labels = shap.segmenter(x, shap.adapter.data_config)[0]
    expected = torch.zeros(int(labels.max()) + 1).index_add_(0, labels.flatten(), x[0].sum(0).flatten()) * -2.0
    torch.testing.assert_close(maps[0], expected[labels], rtol=1e-4, atol=1e-3)


def test_coalition_sampling_distributions(cnn):
    lime = create("lime", cnn, n_samples=4000)
    z = lime.coalitions(10, torch.Generator().manual_seed(0)).double()
    assert z.mean().item() == pytest.approx(0.5, abs=0.01)
    shap = create("kernel_shap", cnn, n_samples=6000)
    z = shap.coalitions(6, torch.Generator().manual_seed(0))
    assert z[0].sum() == 6 and z[1].sum() == 0
    sizes = torch.bincount(z[2:].sum(1), minlength=7).double() / (z.shape[0] - 2)
    k = torch.arange(1, 6, dtype=torch.float64)
    p = 5 / (k * (6 - k))
    torch.testing.assert_close(sizes[1:6], p / p.sum(), atol=0.02, rtol=0)  # p(k) ~ (K-1)/(k(K-k))


def test_surrogates_reject_bad_options(cnn):
    with pytest.raises(InputError, match="n_samples must be an integer >= 2"):
        create("lime", cnn, n_samples=1)
    with pytest.raises(InputError, match="baseline must be one of"):
        create("kernel_shap", cnn, baseline="grey")
    with pytest.raises(ConfigError, match="Unknown segmenter"):
        create("lime", cnn, segmenter="voronoi")
