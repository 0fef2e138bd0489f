"""SMDL: each score term against hand-computed values, the division, pass counts, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from reproduce.attributors import Attributor, create
from reproduce.models.evidential import evidential_uncertainty
from reproduce.attributors.smdl import FALLBACK
from reproduce.attributors.smdl_division import cell_index, prior_division
from reproduce.attributors.smdl_scores import class_scores, effectiveness_scores, embedding_distances, smdl_forward_passes
from reproduce.errors import ConfigError, InputError
from reproduce.models import ModelAdapter, count_passes, create_model

# --- pure score functions -----------------------------------------------------------------------


def test_effectiveness_closed_form_on_three_orthogonal_embeddings():
    emb = torch.eye(3).unsqueeze(0)  # pairwise arccos(0) / pi = 1/2
    dist = embedding_distances(emb)
    assert torch.allclose(dist, torch.tensor([[[1.0, 0.5, 0.5], [0.5, 1.0, 0.5], [0.5, 0.5, 1.0]]]))
    sets = torch.tensor([[[1, 0, 0], [1, 1, 0], [1, 1, 1]]], dtype=torch.bool)
    # one region: its distance to itself is set to 1 (the code's "+ eye"); then n * 1/2
    assert effectiveness_scores(dist, sets).tolist() == [[1.0, 1.0, 1.5]]


def test_effectiveness_takes_each_members_nearest_other_member():
    emb = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])  # angles 90, 45, 45 degrees
    sets = torch.ones(1, 1, 3, dtype=torch.bool)
    # min(1/2, 1/4) + min(1/2, 1/4) + min(1/4, 1/4)
    assert effectiveness_scores(embedding_distances(emb), sets).item() == pytest.approx(0.75, abs=1e-6)


def test_class_scores_probability_and_cosine_heads():
    logits = torch.tensor([[[1.0, 2.0, 0.0]]])
    assert class_scores(logits, torch.tensor([1]), "class_prob").item() == pytest.approx(logits.softmax(-1)[0, 0, 1].item())
    feats = torch.tensor([[[3.0, 4.0]]])
    weight = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert class_scores(feats, torch.tensor([1]), "cosine_to_class_weight", weight).item() == pytest.approx(0.8)


def test_evidential_uncertainty_values():
    assert evidential_uncertainty(torch.zeros(1, 4)).item() == pytest.approx(0.5)  # e = 1, alpha = 2
    huge = evidential_uncertainty(torch.full((1, 4), 50.0))  # clamped at 10
    assert huge.item() == pytest.approx(1 / (math.exp(10) + 1), rel=1e-5)
    assert evidential_uncertainty(torch.tensor([[1.0, 0.0]]), scale=5).item() == pytest.approx(2 / (math.exp(5) + 1 + 2))


def test_prior_division_ranks_cells_and_groups_them():
    prior = torch.tensor([[0.0, 9.0, 1.0, 1.0], [0.0, 9.0, 1.0, 1.0], [5.0, 5.0, 2.0, 2.0], [5.0, 5.0, 2.0, 2.0]])
    # 2x2 cells (bilinear to 2x2 = cell means here): [[4.5, 1], [5, 2]] -> ranks: cell 2, 0, 3, 1
    labels = prior_division(prior[None], grid=2, per_region=2)
    expected_cells = torch.tensor([[0, 1], [0, 1]])  # cells 2, 0 -> region 0; cells 3, 1 -> region 1
    assert torch.equal(labels[0], expected_cells.repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_cell_index_is_a_nearest_resize_for_grids_that_do_not_divide():
    idx = cell_index(10, 10, 3)
    assert idx[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]  # floor(x * 3 / 10)
    assert idx.max().item() == 8


def test_forward_pass_formula_values_from_the_digest():
    # the official code embeds each region alone in m passes of its own: the digest's counts
    assert smdl_forward_passes(25, 24, shared_embeddings=False) == 997
    assert smdl_forward_passes(49, 48, shared_embeddings=False) == 3721
    assert smdl_forward_passes(196, 195, shared_embeddings=False) == 58111
    # here those m passes are step 0's consistency passes (the same images), counted once
    assert smdl_forward_passes(25, 24) == 997 - 25


# --- the attributor on real models --------------------------------------------------------------


def masked(model, x, keep_cells, grid=4, fill="black"):
    """``x`` with only the cells ``keep_cells`` shown (raw black elsewhere) in the model's space."""
    mask = torch.zeros(grid * grid)
    mask[keep_cells] = 1
    h = x.shape[-1] // grid
    pixels = mask.view(1, 1, grid, grid).repeat_interleave(h, 2).repeat_interleave(h, 3)
    black = ModelAdapter(model).data_config.value_of(0.0, x)
    return x * pixels + black * (1 - pixels)


def test_each_term_of_the_first_steps_matches_a_hand_computation(cnn, images):
    x, y = images[:1], torch.tensor([3])
    a = create("smdl", cnn, division="patch", grid=4, budget=3)
    a.attribute(x, y)
    res = a.last_result
    first, second = res.order[0, :2].tolist()
    with torch.no_grad():
        shown = cnn(masked(cnn, x, [first]))
        hidden = cnn(masked(cnn, x, [c for c in range(16) if c != first]))
        feats = [cnn.forward_head(cnn.forward_features(masked(cnn, x, [c])), pre_logits=True) for c in (first, second)]
    assert res.terms["consistency"][0, 0].item() == pytest.approx(shown.softmax(-1)[0, 3].item(), abs=1e-5)
    assert res.terms["collaboration"][0, 0].item() == pytest.approx(1 - hidden.softmax(-1)[0, 3].item(), abs=1e-5)
    u = 6 / (torch.exp(shown.clamp(-10, 10)) + 1).sum()
    assert res.terms["confidence"][0, 0].item() == pytest.approx(1 - u.item(), abs=1e-5)
    assert res.terms["effectiveness"][0, 0].item() == pytest.approx(1.0)
    d = math.acos(max(-1.0, min(1.0, torch.cosine_similarity(feats[0], feats[1]).item()))) / math.pi
    assert res.terms["effectiveness"][0, 1].item() == pytest.approx(2 * d, abs=1e-4)
    total = sum(res.terms[t][0, 0] for t in ("confidence", "effectiveness", "consistency", "collaboration"))
    assert res.values[0, 0].item() == pytest.approx(total.item(), abs=1e-5)
    assert res.terms["area"][0].tolist() == pytest.approx([1 / 16, 2 / 16, 3 / 16])
    assert a.config()["confidence_model"] == FALLBACK


def test_consistency_alone_is_greedy_insertion_on_the_class_probability(cnn, images):
    a = create("smdl", cnn, division="patch", grid=4, lambdas=(0, 0, 1, 0), budget=8)
    with count_passes(cnn) as counter:
        maps = a.attribute(images[:2], 2)
    ref = create("moxi_insertion", cnn, grid=4, fill="black", reward="prob", budget=8)
    ref_maps = ref.attribute(images[:2], 2)
    assert torch.equal(a.last_result.order, ref.last_result.order[:, :8])  # MoXI also orders a tail
    assert torch.allclose(a.last_result.values, ref.last_result.values, atol=1e-6)
    assert torch.equal(maps, (ref_maps - 8).clamp_min(0))  # SMDL paints 8 - rank, MoXI 16 - rank over all
    assert counter.forward == 2 * (8 * (2 * 16 - 8 + 1) // 2)  # lambda = 0 terms cost nothing
    assert set(a.last_result.terms) == {"consistency", "area"}


@pytest.fixture
def edl_vit():
    torch.manual_seed(3)
    return create_model("vit_micro_p8", num_classes=4).eval()


def test_forward_passes_follow_the_formula(cnn, images, edl_vit):
    m, k = 9, 8  # a 3x3 grid (cells of 21 or 22 pixels on 64x64)
    separate = create("smdl", cnn, division="patch", grid=3, confidence_model=edl_vit)
    with count_passes(cnn) as counter:
        separate.attribute(images[:2], 0)
    assert counter.forward == 2 * smdl_forward_passes(m, k, True) == 2 * (3 * 8 * 11 // 2)
    fallback = create("smdl", cnn, division="patch", grid=3, budget=3)
    fallback.attribute(images[:1], 0)
    assert fallback.last_cost["forward_per_image"] == smdl_forward_passes(m, 3, False)
    per_step = 3 * (2 * m - 3 + 1) // 2
    for lambdas, passes in (((1, 0, 0, 0), per_step), ((0, 1, 0, 0), m), ((0, 0, 0, 1), per_step)):
        a = create("smdl", cnn, division="patch", grid=3, budget=3, lambdas=lambdas, confidence_model=edl_vit)
        a.attribute(images[:1], 0)
        assert a.last_cost["forward_per_image"] == passes, lambdas


def test_lazy_search_rescoring_every_candidate_per_round_is_the_exhaustive_search(cnn, images, edl_vit):
    # blur fill: a per-image fill tensor, which the lazy search selects with its images
    options = dict(division="patch", grid=3, budget=5, confidence_model=edl_vit, fill="blur")
    target = torch.tensor([0, 3])
    exhaustive = create("smdl", cnn, **options)
    exhaustive.attribute(images[:2], target)
    lazy = create("smdl", cnn, search="lazy", lazy_width=9, **options)
    lazy.attribute(images[:2], target)
    assert torch.equal(lazy.last_result.order, exhaustive.last_result.order)
    assert torch.allclose(lazy.last_result.values, exhaustive.last_result.values, atol=1e-5)
    for name, value in exhaustive.last_result.terms.items():
        assert torch.allclose(lazy.last_result.terms[name], value, atol=1e-5), name
    # one more evaluation of F per image (the empty set, for the first gains: 3 passes)
    assert lazy.last_cost["forward_per_image"] == exhaustive.last_cost["forward_per_image"] + 3
    assert lazy.config()["search"] == "lazy" and lazy.config()["lazy_width"] == 9


def test_prior_passes_come_on_top(cnn, images):
    a = create("smdl", cnn, prior="gradcam", budget=3)  # grid 8 / 4 -> 16 regions
    a.attribute(images[:1], 1)
    assert a.last_cost["forward_per_image"] == 1 + smdl_forward_passes(16, 3, False)


def test_separate_confidence_model_sees_the_image_in_its_own_normalisation(cnn, images, edl_vit):
    # the CNN uses ImageNet statistics, the ViT mean = std = 0.5: the shown image must be converted
    x = images[:1]
    a = create("smdl", cnn, division="patch", grid=4, budget=1, lambdas=(1, 0, 0, 0), confidence_model=edl_vit)
    a.attribute(x, 0)
    first = a.last_result.order[0, 0].item()
    raw = ModelAdapter(cnn).data_config.denormalize(masked(cnn, x, [first]))
    with torch.no_grad():
        logits = edl_vit(ModelAdapter(edl_vit).data_config.normalize(raw))
    expected = 1 - evidential_uncertainty(logits)
    assert a.last_result.terms["confidence"][0, 0].item() == pytest.approx(expected.item(), abs=1e-5)
    assert edl_vit.training is False


def test_confidence_model_from_a_checkpoint_path(cnn, images, edl_vit, tmp_path):
    path = tmp_path / "edl.pt"
    torch.save({"reproduce_spec": edl_vit.reproduce_spec, "state_dict": edl_vit.state_dict()}, path)
    a = create("smdl", cnn, division="patch", grid=2, confidence_model=str(path))
    b = create("smdl", cnn, division="patch", grid=2, confidence_model=edl_vit)
    assert torch.equal(a.attribute(images[:1], 0), b.attribute(images[:1], 0))
    assert a.config()["confidence_model"] == str(path)


def test_cosine_head_uses_the_class_weight(vit, images):
    x = images[:1]
    a = create("smdl", vit, division="patch", grid=4, budget=1, lambdas=(0, 0, 1, 0), score_head="cosine_to_class_weight")
    a.attribute(x, 5)
    first = a.last_result.order[0, 0].item()
    with torch.no_grad():
        feats = vit.forward_head(vit.forward_features(masked(vit, x, [first])), pre_logits=True)
    expected = torch.cosine_similarity(feats, vit.get_classifier().weight[5:6]).item()
    assert a.last_result.terms["consistency"][0, 0].item() == pytest.approx(expected, abs=1e-5)


def test_batch_results_equal_per_image_results(vit, images):
    a = create("smdl", vit, division="patch", grid=3, budget=4)
    maps = a.attribute(images, torch.tensor([0, 1, 2]))
    for i in range(3):
        single = create("smdl", vit, division="patch", grid=3, budget=4)
        assert torch.equal(single.attribute(images[i : i + 1], i), maps[i : i + 1])
        for name, v in single.last_result.terms.items():
            assert torch.allclose(v, a.last_result.terms[name][i : i + 1], atol=1e-5), name


def test_superpixel_division_uses_the_segmenter(cnn, images):
    from reproduce.attributors.segmenters import Segmenter

    a = create("smdl", cnn, division="superpixel", segmenter_options={"n_segments": 8, "compactness": 100}, budget=2,
               lambdas=(0, 0, 1, 0))
    a.attribute(images[:1], 0)
    labels = Segmenter("slic", {"n_segments": 8, "compactness": 100})(images[:1], ModelAdapter(cnn).data_config)
    assert a.last_result.num_players.item() == len(torch.unique(labels))
    # regions are the segments: every segment is constant in the partition used
    for s in torch.unique(labels):
        assert len(torch.unique(a.last_result.labels[0][labels[0] == s])) == 1


# --- bad input ----------------------------------------------------------------------------------


class NaNPrior(Attributor):
    def _attribute(self, x, target):
        return torch.full(x.shape[:1] + x.shape[-2:], float("nan"), device=x.device)


def test_a_nan_prior_is_an_input_error_before_the_search(cnn, images):
    for prior in (NaNPrior(cnn), lambda x, t: torch.full((x.shape[0], 64, 64), float("nan"))):
        a = create("smdl", cnn, prior=prior)
        with count_passes(cnn) as counter, pytest.raises(InputError, match="prior"):
            a.attribute(images, 0)
        assert counter.forward == 0


def test_budget_larger_than_the_regions_fails_before_any_forward(cnn, images):
    with pytest.raises(InputError, match="exceeds the 4 regions"):
        create("smdl", cnn, division="patch", grid=2, budget=5)
    with pytest.raises(InputError, match="exceeds the 16 regions"):
        create("smdl", cnn, grid=8, per_region=4, budget=17)
    # super-pixel counts are only known per image: checked after segmenting, before any forward
    a = create("smdl", cnn, division="superpixel", segmenter_options={"n_segments": 8, "compactness": 100}, budget=60)
    with count_passes(cnn) as counter, pytest.raises(InputError, match="exceeds the"):
        a.attribute(images[:1], 0)
    assert counter.forward == 0


def test_bad_options_are_config_errors(cnn, vit, images):
    with pytest.raises(ConfigError, match="lambdas"):
        create("smdl", cnn, division="patch", lambdas=(0, 0, 0, 0))
    with pytest.raises(ConfigError, match="lambdas"):
        create("smdl", cnn, division="patch", lambdas=(1, 1))
    with pytest.raises(ConfigError, match="per_region"):
        create("smdl", cnn, grid=3, per_region=4, prior="gradcam")
    with pytest.raises(ConfigError, match="score_head"):
        create("smdl", cnn, division="patch", score_head="cosine")
    with pytest.raises(ConfigError, match="division"):
        create("smdl", cnn, division="grid")
    with pytest.raises(ConfigError, match="search"):
        create("smdl", cnn, division="patch", search="greedy")
    with pytest.raises(ConfigError, match="lazy_width"):
        create("smdl", cnn, division="patch", search="lazy", lazy_width=0)
    with pytest.raises(InputError, match="Unknown attributor"):
        create("smdl", cnn, prior="no_such_method")
    small_vit = create_model("vit_micro_p8", num_classes=4, img_size=32)
    with pytest.raises(InputError, match="takes"):
        create("smdl", cnn, division="patch", grid=2, confidence_model=small_vit).attribute(images[:1], 0)


# --- evidential losses and the EDL training module ----------------------------------------------


def test_edl_losses_closed_form():
    from reproduce.models.evidential import edl_digamma_loss, edl_log_loss, edl_mse_loss, kl_to_uniform_dirichlet

    logits = torch.tensor([[math.log(3.0), 0.0]])  # exp evidence (3, 1) -> alpha (4, 2), S = 6
    label = torch.tensor([0])
    # epoch 0: the KL weight min(1, 0 / 10) is 0
    assert edl_mse_loss(logits, label, epoch=0).item() == pytest.approx(2 / 7, abs=1e-6)  # 2/9 + 4/63
    assert edl_log_loss(logits, label, epoch=0).item() == pytest.approx(math.log(1.5), abs=1e-6)
    assert edl_digamma_loss(logits, label, epoch=0).item() == pytest.approx(1 / 4 + 1 / 5, abs=1e-5)  # psi(6) - psi(4)
    # alpha~ = (1, 2): KL(Dir(1, 2) || Dir(1, 1)) = log 2 - 1/2, at half weight in epoch 5 of 10
    kl = math.log(2) - 0.5
    assert kl_to_uniform_dirichlet(torch.tensor([[1.0, 2.0]])).item() == pytest.approx(kl, abs=1e-6)
    assert kl_to_uniform_dirichlet(torch.ones(1, 5)).item() == pytest.approx(0.0, abs=1e-6)
    assert edl_log_loss(logits, label, epoch=5).item() == pytest.approx(math.log(1.5) + 0.5 * kl, abs=1e-5)
    assert edl_log_loss(logits, label, epoch=50, kl_term=False).item() == pytest.approx(math.log(1.5), abs=1e-6)
    relu = edl_log_loss(torch.tensor([[3.0, -2.0]]), label, epoch=0, evidence="relu")  # alpha (4, 1)
    assert relu.item() == pytest.approx(math.log(5 / 4), abs=1e-6)
    with pytest.raises(InputError, match="labels"):
        edl_mse_loss(logits, torch.tensor([0.0]), epoch=0)


def test_evidential_module_uses_the_edl_loss_and_records_its_options():
    from reproduce.models.evidential import edl_mse_loss
    from reproduce.lit.evidential import EvidentialClassifier

    module = EvidentialClassifier(model={"name": "resnet10t_os16", "num_classes": 3, "img_size": 32}, loss="mse", annealing_step=4)
    logits, labels = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    assert module.compute_loss(logits, labels).item() == pytest.approx(edl_mse_loss(logits, labels, epoch=0).item())
    assert module.hparams.loss == "mse" and module.hparams.annealing_step == 4 and module.hparams.model["num_classes"] == 3
    with pytest.raises(ConfigError, match="loss"):
        EvidentialClassifier(model={"name": "resnet10t_os16", "num_classes": 3}, loss="ce")


@pytest.mark.slow
def test_evidential_training_lowers_uncertainty_and_its_checkpoint_serves_smdl(tmp_path, cnn, images):
    import lightning as L

    from reproduce.lit.evidential import EvidentialClassifier

    torch.manual_seed(0)
    module = EvidentialClassifier(model={"name": "resnet10t_os16", "num_classes": 3, "img_size": 64},
                                  optimizer={"name": "adam", "lr": 3e-3})
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, 64, 64, generator=g), torch.randint(0, 3, (64,), generator=g)
    x += (y.float() - 1).view(-1, 1, 1, 1)  # separable classes
    loader = torch.utils.data.DataLoader([{"image": x[i], "label": y[i]} for i in range(64)], batch_size=16)
    module.eval()
    with torch.no_grad():
        before = module.uncertainty(module(x)).mean()
    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    module.train()
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
    module.eval()
    with torch.no_grad():
        after = module.uncertainty(module(x)).mean()
    assert after < before / 2
    path = tmp_path / "edl.ckpt"
    trainer.save_checkpoint(path)
    a = create("smdl", cnn, division="patch", grid=2, confidence_model=str(path))
    a.attribute(images[:1], 0)
    assert a.last_result.terms["confidence"].shape == (1, 3)


def test_smoke_config_keeps_the_division_and_prior():
    from reproduce.attributors import get_class

    options = get_class("smdl").smoke_config({"prior": "rise", "prior_options": {"n_masks": 1000}, "grid": 8, "per_region": 4})
    assert options["prior"] == "rise" and options.get("division", "prior_patch") == "prior_patch"
    assert options["prior_options"]["n_masks"] == get_class("rise").smoke_options["n_masks"]
    assert options["grid"] == 4 and options["per_region"] == 4
