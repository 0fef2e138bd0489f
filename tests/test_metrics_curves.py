"""Perturbation curves: ranking, insertion/deletion, patch curves (MoXI), accuracy at budget,
average highest confidence; golden values on toy models and agreement with Quantus."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import reproduce.metrics as M
from reproduce.errors import ConfigError, InputError
from reproduce.metrics import AttributionBatch


class RegionModel(nn.Module):
    """Logit 0 = mean over a fixed region of the channel-mean image + bias; logit 1 = 0."""

    def __init__(self, size: int = 16, bias: float = 0.0):
        super().__init__()
        region = torch.zeros(size, size)
        region[4:8, 4:8] = 1
        self.register_buffer("region", region)
        self.bias = bias

    def forward(self, x):
        s = (x.mean(1) * self.region).sum((1, 2)) / self.region.sum() + self.bias
        return torch.stack([s, torch.zeros_like(s)], 1)


class MeanModel(nn.Module):
    """Logit 0 = mean of all pixels: linear in the number of pixels inserted (image of ones)."""

    def forward(self, x):
        s = x.mean((1, 2, 3))
        return torch.stack([s, -s], 1)


class TinyCNN(nn.Module):
    """A small deterministic convnet carrying an ImageNet-style data config (for the fills)."""

    def __init__(self, classes: int = 4, size: int = 16):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))
        for p in self.net.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.5
        self.pretrained_cfg = {"input_size": (3, size, size), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}

    def forward(self, x):
        return self.net(x)


def _batch(model_size=16, b=2, maps=None, images=None, labels=None):
    images = torch.full((b, 3, model_size, model_size), 2.0) if images is None else images
    maps = torch.rand(b, model_size, model_size, generator=torch.Generator().manual_seed(1)) if maps is None else maps
    zeros = torch.zeros(b, dtype=torch.long) if labels is None else labels
    return AttributionBatch(images=images, labels=zeros, targets=zeros, maps=maps, indices=torch.arange(100, 100 + b))


# --- machinery -------------------------------------------------------------------------------------
def test_rank_descending_breaks_ties_in_raster_order():
    values = torch.tensor([[0.5, 0.9, 0.5, 0.1, 0.9]])
    assert M.rank_descending(values).tolist() == [[2, 0, 3, 4, 1]]


def test_fraction_counts_are_exact_floor_and_include_both_ends():
    counts = M.fraction_counts(50176, 100)
    assert counts[0] == 0 and counts[-1] == 50176 and len(counts) == 101
    assert torch.equal(counts, torch.tensor([t * 50176 // 100 for t in range(101)]))
    # Xplique's int-cast linspace gives the same counts at these sizes.
    assert counts.tolist() == np.linspace(0, 50176, 101, dtype=np.int32).tolist()


def test_linear_curve_has_auc_one_half():
    assert M.trapezoid_auc(torch.linspace(0, 1, 11)).item() == pytest.approx(0.5)
    assert M.trapezoid_auc(torch.linspace(1, 0, 101)).item() == pytest.approx(0.5)


def test_insertion_of_a_mean_model_is_linear_with_auc_one_half():
    model = MeanModel()
    images = torch.ones(1, 3, 10, 10)  # 100 pixels, 10 steps of 10 pixels: score = fraction shown
    x, scores = M.insertion_deletion_curve(model, images, torch.rand(1, 10, 10), torch.zeros(1, dtype=torch.long),
                                           mode="insertion", steps=10, score="logit")
    assert torch.allclose(scores[0], torch.linspace(0, 1, 11), atol=1e-6)
    assert torch.allclose(x, torch.linspace(0, 1, 11, dtype=torch.float64))
    assert M.trapezoid_auc(scores).item() == pytest.approx(0.5)


@pytest.mark.parametrize("baseline", ["mean", "black", "blur", 0.25])
def test_curve_endpoints_are_the_clean_image_and_the_baseline(baseline):
    cnn, images = TinyCNN(), torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    maps = torch.rand(3, 16, 16)
    t = torch.tensor([0, 1, 2])
    _, ins = M.insertion_deletion_curve(cnn, images, maps, t, mode="insertion", steps=4, baseline=baseline, score="logit")
    _, dele = M.insertion_deletion_curve(cnn, images, maps, t, mode="deletion", steps=4, baseline=baseline, score="logit")
    with torch.no_grad():
        clean = cnn(images).gather(1, t[:, None]).squeeze(1)
    assert torch.allclose(ins[:, -1], clean, atol=1e-4) and torch.allclose(dele[:, 0], clean, atol=1e-4)
    assert torch.allclose(ins[:, 0], dele[:, -1], atol=1e-4)  # both are the all-baseline image


def test_perfect_ranking_beats_random_ranking_on_the_region_model():
    model = RegionModel()
    perfect = model.region.expand(2, 16, 16) + 1e-3 * torch.rand(2, 16, 16)
    batch_p, batch_r = _batch(maps=perfect), _batch()
    ins_p, ins_r = M.create_metric("insertion", model, steps=16), M.create_metric("insertion", model, steps=16)
    del_p, del_r = M.create_metric("deletion", model, steps=16), M.create_metric("deletion", model, steps=16)
    for metric, batch in ((ins_p, batch_p), (ins_r, batch_r), (del_p, batch_p), (del_r, batch_r)):
        metric.update(batch)
    assert ins_p.compute()["auc"] > ins_r.compute()["auc"] + 0.1
    assert del_p.compute()["auc"] < del_r.compute()["auc"] - 0.1
    # The region (16 of 256 pixels) is fully shown after the first of 16 steps.
    assert ins_p.compute()["curve"][1] == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item(), abs=1e-6)


def test_insertion_matches_a_per_step_loop():
    cnn, images = TinyCNN(), torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    maps = torch.rand(3, 16, 16)
    t = torch.tensor([3, 1, 0])
    _, ours = M.insertion_deletion_curve(cnn, images, maps, t, mode="insertion", steps=7, max_batch=4)
    order = torch.argsort(maps.reshape(3, -1), dim=1, descending=True, stable=True)
    for s, n in enumerate(M.fraction_counts(16 * 16, 7).tolist()):
        keep = torch.zeros(3, 16 * 16)
        keep.scatter_(1, order[:, :n], 1.0)
        with torch.no_grad():
            probs = torch.softmax(cnn(images * keep.view(3, 1, 16, 16)), -1)
        assert torch.allclose(ours[:, s], probs.gather(1, t[:, None]).squeeze(1), atol=1e-5)


def test_deletion_agrees_with_quantus_pixel_flipping():
    quantus = pytest.importorskip("quantus")
    cnn = TinyCNN().eval()
    g = torch.Generator().manual_seed(0)
    x, a, y = torch.randn(2, 3, 12, 12, generator=g), torch.rand(2, 12, 12, generator=g), torch.tensor([0, 2])
    steps = 12  # Quantus needs H*W divisible by its step in channel-features (3 * 12 pixels here)
    _, ours = M.insertion_deletion_curve(cnn, x, a, y, mode="deletion", steps=steps)
    metric = quantus.PixelFlipping(features_in_step=3 * 12 * 12 // steps, perturb_baseline=0.0, disable_warnings=True,
                                   display_progressbar=False)
    theirs = np.array(metric(model=cnn, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a[:, None].numpy(),
                             channel_first=True, softmax=True, device="cpu"))
    # Quantus' curve starts after the first step; ours also evaluates the clean image.
    assert np.abs(theirs - ours[:, 1:].numpy()).max() < 1e-5


def test_steps_must_be_positive():
    with pytest.raises(ConfigError, match="steps"):
        M.create_metric("insertion", RegionModel(), steps=0)
    with pytest.raises(ConfigError, match="steps"):
        M.insertion_deletion_curve(RegionModel(), torch.ones(1, 3, 16, 16), torch.rand(1, 16, 16),
                                   torch.zeros(1, dtype=torch.long), mode="deletion", steps=-1)


def test_nan_model_outputs_name_the_sample():
    class NaNModel(RegionModel):
        def forward(self, x):
            out = super().forward(x)
            return torch.where(x[:, :1, 0, 0] > 5, torch.full_like(out, float("nan")), out)

    images = torch.full((3, 3, 16, 16), 2.0)
    images[1] = 9.0
    batch = AttributionBatch(images=images, labels=torch.zeros(3, dtype=torch.long), targets=torch.zeros(3, dtype=torch.long),
                             maps=torch.rand(3, 16, 16), indices=torch.tensor([40, 41, 42]))
    metric = M.create_metric("deletion", NaNModel(), steps=2)
    with pytest.raises(InputError, match=r"\[41\]"):
        metric.update(batch)


# --- patch curves (MoXI) -----------------------------------------------------------------------
def _painted(order: torch.Tensor, grid: int, size: int) -> torch.Tensor:
    """MoXI's heatmap: value (count - rank) on each ordered patch, upsampled to pixels."""
    n = order.numel()
    values = torch.zeros(grid * grid)
    values[order] = torch.arange(n, 0, -1, dtype=torch.float32)
    return values.view(1, 1, grid, grid).repeat_interleave(size // grid, 2).repeat_interleave(size // grid, 3)[0, 0]


def test_painted_map_reproduces_its_patch_order():
    order = torch.randperm(64, generator=torch.Generator().manual_seed(3))
    maps = _painted(order, 8, 64)[None]
    ranks = M.rank_descending(M.perturbation_curves.patch_scores(maps, (8, 8)))
    assert torch.equal(torch.argsort(ranks[0]), order)


def test_token_patch_curve_matches_forward_tokens(vit, images):
    from reproduce.models import ModelAdapter

    images = images[:2]
    order = torch.randperm(64, generator=torch.Generator().manual_seed(4))
    maps = _painted(order, 8, 64)[None].expand(2, -1, -1)
    with torch.no_grad():
        labels = vit(images).argmax(-1)
    counts, acc = M.patch_curve(vit, images, maps, labels, mode="insertion", counts=[0, 5, 64], score="accuracy")
    _, probs = M.patch_curve(vit, images, maps, labels, mode="deletion", counts=[0, 5], score="softmax")
    adapter = ModelAdapter(vit)
    with torch.no_grad():
        for s, k in enumerate([0, 5]):
            shown = order[:k].sort().values.expand(2, -1)
            assert torch.equal(acc[:, s], (adapter.forward_tokens(images, shown).argmax(-1) == labels).float())
            kept = order[k:].sort().values.expand(2, -1)
            p = torch.softmax(adapter.forward_tokens(images, kept), -1).gather(1, labels[:, None]).squeeze(1)
            assert torch.allclose(probs[:, s], p, atol=1e-5)
    assert torch.equal(acc[:, -1], torch.ones(2))  # every token shown = the stock forward, which is correct


def test_patch_curve_metric_has_k_zero_and_full_points():
    cnn, images = TinyCNN(), torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        labels = cnn(images).argmax(-1)
    batch = AttributionBatch(images=images, labels=labels, targets=labels, maps=torch.rand(2, 16, 16))
    metric = M.create_metric("patch_deletion", cnn, grid=4)
    metric.update(batch)
    out = metric.compute()
    assert out["curve"].shape == (17,) and out["curve_x"][0] == 0 and out["curve_x"][-1] == 1
    assert out["curve"][0] == 1  # k = 0 hides nothing: the images are classified as labelled
    assert metric.directions == {"auc": "lower"}


def test_patch_metrics_default_to_token_removal_on_the_vit_grid(vit):
    config = M.create_metric("patch_insertion", vit).config()
    assert config["removal"] == "token" and config["grid"] == [8, 8] and config["fill"] is None
    with pytest.raises(ConfigError, match="token grid"):
        M.create_metric("patch_insertion", vit, grid=4, removal="token")


def test_patch_curves_need_a_grid_for_cnns():
    cnn = TinyCNN()
    with pytest.raises(ConfigError, match="grid"):
        M.create_metric("patch_insertion", cnn)
    with pytest.raises(InputError, match="Vision Transformer"):
        M.create_metric("patch_insertion", cnn, grid=8, removal="token")
    metric = M.create_metric("patch_insertion", cnn, grid=8, score="softmax")
    assert metric.config()["removal"] == "fill" and metric.config()["grid"] == [8, 8]


def test_accuracy_at_budget_reads_the_curve_at_rounded_budgets():
    cnn, images = TinyCNN(), torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        labels = cnn(images).argmax(-1)
    batch = AttributionBatch(images=images, labels=labels, targets=labels, maps=torch.rand(3, 16, 16))
    curve = M.create_metric("patch_insertion", cnn, grid=8)
    budget = M.create_metric("accuracy_at_budget", cnn, grid=8, mode="insertion", budgets=(0.04, 0.25, 1.0))
    curve.update(batch)
    budget.update(batch)
    full, at = curve.compute()["curve"], budget.compute()
    assert budget.config()["patches"] == [3, 16, 64]  # 4 % of 64 = 2.56 -> 3 (half up)
    for key, k in (("accuracy_shown_4", 3), ("accuracy_shown_25", 16), ("accuracy_shown_100", 64)):
        assert at[key] == full[k]
    assert budget.directions == {"accuracy_shown_4": "higher", "accuracy_shown_25": "higher", "accuracy_shown_100": "higher"}
    assert M.patch_curves.budget_counts((0.04, 0.10), 196) == [8, 20]  # MoXI's 4 % and 10 % of 196


# --- average highest confidence (SMDL) ---------------------------------------------------------
def test_search_source_takes_the_max_over_steps_within_each_area_budget():
    area = torch.tensor([[0.1, 0.3, 0.6, 1.0], [0.2, 0.5, 0.7, 0.9]])
    score = torch.tensor([[0.2, 0.5, 0.4, 0.9], [0.6, 0.1, 0.8, 0.3]])
    batch = _batch()
    batch.extra.update(step_area=area, step_score=score)
    metric = M.create_metric("average_highest_confidence", RegionModel(), source="search")
    metric.update(batch)
    out = metric.compute()
    assert out["area_25"].item() == pytest.approx((0.2 + 0.6) / 2)
    assert out["area_50"].item() == pytest.approx((0.5 + 0.6) / 2)
    assert out["area_75"].item() == pytest.approx((0.5 + 0.8) / 2)
    assert out["area_100"].item() == pytest.approx((0.9 + 0.8) / 2)
    assert out["area_100_std"].item() == pytest.approx(0.05)
    assert "step_25" not in out and metric.requires == ("extra:step_area", "extra:step_score")
    # The population std is no mean of per-image values, but a function of the per-image sums of the
    # values and their squares: one image alone has std 0, both give the pooled 0.05 again.
    rows = metric.per_image_states()["states"]
    assert sorted(rows) == ["count", "value_sq_sum", "value_sum"]  # no curve for the search source
    first = {k: v[0] for k, v in rows.items()}
    alone = metric.statistic(first)
    assert alone["area_100"] == pytest.approx(0.9) and alone["area_100_std"] == pytest.approx(0.0, abs=1e-12)
    both = metric.statistic_batch({k: torch.stack([v[0], v.sum(0)]) for k, v in rows.items()})
    assert both["area_100_std"].tolist() == pytest.approx([0.0, 0.05], abs=1e-6)  # float32 scores
    assert both["area_50"].tolist() == pytest.approx([0.5, 0.55])


def test_search_source_rejects_a_budget_below_the_first_step():
    batch = _batch()
    batch.extra.update(step_area=torch.tensor([[0.3, 1.0], [0.1, 1.0]]), step_score=torch.rand(2, 2))
    metric = M.create_metric("average_highest_confidence", RegionModel(), source="search", budgets=(0.25,))
    with pytest.raises(InputError, match=r"\[100\]"):
        metric.update(batch)
    with pytest.raises(InputError, match="step_area"):
        M.create_metric("average_highest_confidence", RegionModel(), source="search").update(_batch())


def test_map_source_step_and_area_rules():
    model = RegionModel()
    batch = _batch(maps=model.region.expand(2, 16, 16) + 1e-3 * torch.rand(2, 16, 16))
    metric = M.create_metric("average_highest_confidence", model, steps=8)
    metric.update(batch)
    out = metric.compute()
    for p in ("25", "50", "75", "100"):
        assert out[f"step_{p}"] == out[f"area_{p}"]  # p * steps is an integer: the rules pick the same steps
    _, scores = M.insertion_steps(model, batch.images, batch.maps, batch.labels, steps=8)
    assert scores.shape == (2, 8) and torch.allclose(out["curve"].float(), scores.mean(0).float())
    assert out["step_25"].item() == pytest.approx(scores[:, :2].max(1).values.mean().item())
    assert out["step_25"].item() == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())  # region shown first


def test_map_source_fills_with_black_in_the_normalised_space():
    model = RegionModel()
    model.pretrained_cfg = {"input_size": (3, 16, 16), "mean": (0.5,) * 3, "std": (0.5,) * 3}  # black -> -1
    outside_first = 1 - model.region.expand(2, 16, 16) + 1e-3 * torch.rand(2, 16, 16)
    _, scores = M.insertion_steps(model, torch.full((2, 3, 16, 16), 2.0), outside_first, torch.zeros(2, dtype=torch.long),
                                  steps=8)
    # The first step reveals 32 pixels outside the region, which stays black (-1): logit -1.
    assert torch.allclose(scores[:, 0], torch.sigmoid(torch.tensor(-1.0)).expand(2), atol=1e-6)
