"""The benchmark's accounting: ideal seconds per pass, token-length limits, medians with their IQR."""

from __future__ import annotations

import pytest
import torch

from reproduce.bench._report import now, set_clock
from reproduce.bench.attributors import median_iqr
from reproduce.bench.efficiency import Limits, ideal_seconds
from reproduce.models import ModelAdapter, create_model, record_backward


def _limits(model, forward: float, gradient: float, tokens: dict[int, float] | None = None, embed: float = 0.0) -> Limits:
    limits = Limits.__new__(Limits)  # the measured numbers set by hand
    limits.model, limits.adapter, limits.scale = model, ModelAdapter(model), 1.0
    limits.forward, limits.gradient, limits.tokens, limits.embed = forward, gradient, tokens or {}, embed
    return limits


def test_cnn_passes_cost_forwards_at_the_forward_limit_and_gradient_passes_at_the_gradient_limit():
    model = create_model("resnet10t_os16", num_classes=2).eval()
    limits = _limits(model, forward=1.0, gradient=3.0)
    x = torch.randn(4, 3, 32, 32)
    with ideal_seconds(limits) as ideal:
        with torch.no_grad():
            model(x)
        xg = x[:2].clone().requires_grad_(True)
        torch.autograd.grad(model(xg)[:, 0].sum(), xg)
        record_backward(model, 2)
        model.forward_head(model.forward_features(x[:1]))  # bypasses model.forward: not counted
    # 6 forward rows of which 2 had a backward: 4 x 1.0 + 2 x 3.0
    assert ideal["seconds"] == pytest.approx(10.0)


def test_vit_passes_are_costed_by_sequence_length():
    model = create_model("vit_micro_p8", num_classes=2, img_size=32).eval()  # 16 patch tokens + CLS
    limits = _limits(model, forward=1.0, gradient=5.0, tokens={2: 0.1, 9: 0.8, 17: 1.6}, embed=0.25)
    assert limits.token_row(5) == pytest.approx(0.1 + (5 - 2) / 7 * 0.7)
    adapter = ModelAdapter(model)
    with ideal_seconds(limits) as ideal, torch.no_grad():
        # 3 images embedded once, 2 subsets of 8 tokens (+ CLS) each
        adapter.forward_kept_tokens(adapter.embed_tokens(torch.randn(3, 3, 32, 32)), torch.arange(8).expand(3, 2, 8))
        model(torch.randn(1, 3, 32, 32))  # the full length, 17 tokens: a plain forward, embedding included
    assert ideal["seconds"] == pytest.approx(3 * 0.25 + 6 * 0.8 + 1.0)


def test_median_iqr_and_the_cpu_clock():
    assert median_iqr([1.0, 2.0, 3.0, 4.0, 100.0]) == (3.0, pytest.approx(52.0 - 1.5))  # exclusive quartiles
    assert median_iqr([2.0]) == (2.0, 0.0)
    set_clock("cpu")
    try:
        start = now()
        sum(i * i for i in range(20000))
        assert now() > start
    finally:
        set_clock("wall")
