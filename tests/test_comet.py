"""COMET: objective values, gradient routing, the players, configs, checkpoints, resume, bad input.

Tiny everything: 32x32 synthetic images, a U-Net selector of width 2-4, ResNet-10-T players and a
detector checkpoint written into tmp_path by Lightning's own ``trainer.save_checkpoint``.
"""

from __future__ import annotations

import os

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from conftest import compose_config
from fixtures_training import fit_one_step_and_check
from reproduce.attributors import create
from reproduce.errors import ConfigError, InputError
from reproduce.lit.classifier import ClassifierModule
from reproduce.lit.comet import CometModule, mask_grid
from reproduce.models import create_model
from reproduce.models.comet import (
    Comet,
    Objective,
    build_comet,
    code_hinge_objective,
    comet_objective,
    create_selector,
    fill_value,
    load_comet,
    mean_colour,
    paper_linear_objective,
    route_gradients,
)
from reproduce.runtime.training import fit

SIZE = 32
TINY = [
    "data.options.sizes={train:64,val:32,test:32}", f"data.image_size={SIZE}", "data.batch_size=16",
    "logger=none", "module.fill_stats_images=32", "module.selector.width=4", "trainer.enable_progress_bar=false",
]
COMET_CONFIGS = ["comet_synthetic", "comet_two_part", "comet_no_detector", "comet_adversarial_detector", "comet_posthoc_selector"]


def save_classifier(path, name="resnet10t_os16", num_classes=6, img_size=SIZE, seed=0) -> str:
    """A (randomly initialised) classifier checkpoint exactly as `python -m reproduce.train` writes one."""
    torch.manual_seed(seed)
    module = ClassifierModule(model={"name": name, "num_classes": num_classes, "img_size": img_size})
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    trainer.save_checkpoint(path)
    return str(path)


def detector_path(root, run="detector_synthetic") -> str:
    return os.path.join(root, "outputs", "train", run, "checkpoints", "best.ckpt")


def tiny_comet(detector: str = "frozen", seed: int = 0) -> Comet:
    torch.manual_seed(seed)
    pred = create_model("resnet10t_os16", num_classes=6, img_size=SIZE)
    det = create_model("resnet10t_os16", num_classes=6, img_size=SIZE) if detector != "none" else None
    return Comet(create_selector("unet_small", width=2, depth=2), pred, det, detector_frozen=detector == "frozen")


def batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, SIZE, SIZE, generator=g), torch.randint(0, 6, (n,), generator=g)


# ---- objective on hand-made tensors -----------------------------------------------------------------
CE_P, CE_D, AREA = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 1.5]), torch.tensor([0.7, 0.5])


def test_code_hinge_on_hand_values():
    # margin = mean(ce_p) - mean(ce_d) + gap = 1.5 - 1.0 + 2 = 2.5 -> 4 * 2.5 = 10;
    # R = mean(max(0.7 - 0.6, 0), max(0.5 - 0.6, 0)) = 0.05 -> 100 * 0.05 = 5; total = 1.5 + 10 + 5.
    loss = code_hinge_objective(CE_P, CE_D, AREA, Objective())
    assert loss.total.item() == pytest.approx(16.5)
    assert loss.predictor.item() == pytest.approx(1.5)
    assert loss.detector_term.item() == pytest.approx(10.0)
    assert loss.area_term.item() == pytest.approx(5.0)
    assert loss.hinge_active.item() == 1.0 and loss.area.item() == pytest.approx(0.6)


def test_code_hinge_is_silent_beyond_the_gap():
    # mean(ce_d) = 4 exceeds mean(ce_p) + gap = 3.5: the detector term vanishes.
    loss = code_hinge_objective(CE_P, torch.tensor([3.0, 5.0]), AREA, Objective())
    assert loss.detector_term.item() == 0.0 and loss.hinge_active.item() == 0.0
    assert loss.total.item() == pytest.approx(1.5 + 5.0)


def test_batch_mean_and_per_sample_hinges_differ_as_defined():
    ce_d = torch.tensor([4.0, 0.5])
    # batch mean: 1.5 - 2.25 + 2 = 1.25 -> 5.0; per sample: max(1-4+2, 0)=0, max(2-0.5+2, 0)=3.5 -> 4*1.75 = 7.
    mean = code_hinge_objective(CE_P, ce_d, AREA, Objective())
    per = code_hinge_objective(CE_P, ce_d, AREA, Objective(per_sample_hinge=True))
    assert mean.detector_term.item() == pytest.approx(5.0) and mean.hinge_active.item() == 1.0
    assert per.detector_term.item() == pytest.approx(7.0) and per.hinge_active.item() == 0.5


def test_area_term_is_thresholded_at_tau():
    below = code_hinge_objective(CE_P, CE_D, torch.tensor([0.1, 0.29]), Objective(tau=0.3))
    assert below.area_term.item() == 0.0
    above = code_hinge_objective(CE_P, CE_D, torch.tensor([0.5, 0.2]), Objective(tau=0.3, b=10.0))
    assert above.area_term.item() == pytest.approx(10 * 0.2 / 2)


def test_paper_linear_on_hand_values():
    # m_p*1.5 - 4*1.0 + 100*0.05 = 2.5; unbounded: a larger detector loss always lowers it.
    loss = paper_linear_objective(CE_P, CE_D, AREA, Objective(form="paper_linear"))
    assert loss.total.item() == pytest.approx(2.5)
    assert paper_linear_objective(CE_P, CE_D + 100, AREA, Objective(form="paper_linear")).total.item() == pytest.approx(-397.5)


def test_two_player_objective_has_no_detector_term():
    for form in ("code_hinge", "paper_linear"):
        obj = Objective(form=form)
        loss = (code_hinge_objective if form == "code_hinge" else paper_linear_objective)(CE_P, None, AREA, obj)
        assert loss.detector_term.item() == 0.0 and loss.ce_d is None
        assert loss.total.item() == pytest.approx(1.5 + 5.0)


def test_comet_objective_uses_per_sample_cross_entropies():
    model = tiny_comet()
    x, y = batch()
    out = model.players(x)
    loss = comet_objective(out, y, Objective())
    ce_p = F.cross_entropy(out.predictor_logits, y, reduction="none")
    ce_d = F.cross_entropy(out.detector_logits, y, reduction="none")
    ref = code_hinge_objective(ce_p, ce_d, out.mask.flatten(1).mean(1), Objective())
    assert torch.allclose(loss.total, ref.total)


@pytest.mark.parametrize("bad,message", [
    ({"tau": 0.0}, "tau"), ({"tau": 1.0}, "tau"), ({"tau": 1.5}, "tau"), ({"tau": -0.2}, "tau"), ({"a": -1.0}, "objective.a"),
    ({"form": "linear"}, "form"), ({"margin": 2.0}, "no option"), ({"per_sample_hinge": "yes"}, "per_sample_hinge"),
])
def test_bad_objective_options_are_config_errors(bad, message):
    with pytest.raises(ConfigError, match=message):
        Objective.from_dict(bad)


# ---- players and gradient routing ------------------------------------------------------------------
@pytest.mark.parametrize("name,options", [("unet_small", {"width": 2, "depth": 2}), ("lraspp_mobilenet_v3_large", {})])
def test_selector_masks_are_the_sigmoid_of_per_pixel_logits_of_each_image(name, options):
    torch.manual_seed(0)
    pred = create_model("resnet10t_os16", num_classes=6, img_size=SIZE)
    model = Comet(create_selector(name, **options), pred).eval()
    x = torch.randn(2, 3, SIZE, SIZE) * 5
    with torch.no_grad():
        mask = model.mask(x)
        logits = model.selector(x)  # one logit per input pixel
        alone = model.mask(x[1:])
    assert mask.shape == logits.shape == (2, SIZE, SIZE)
    torch.testing.assert_close(mask, torch.sigmoid(logits))  # the soft mask, no threshold or temperature
    torch.testing.assert_close(mask[1:], alone, rtol=1e-4, atol=1e-5)  # each image's own mask
    assert (mask[0] - mask[1]).abs().max() > 1e-3 and mask[0].std() > 0  # it depends on the image and varies in it


def test_keep_and_remove_blend_towards_the_fill():
    model = tiny_comet()
    model.fill.copy_(torch.tensor([1.0, 2.0, 3.0]))
    x = torch.randn(1, 3, 4, 4)
    mask = torch.zeros(1, 4, 4)
    mask[0, :2] = 1
    kept, removed = model.keep(x, mask), model.remove(x, mask)
    assert torch.equal(kept[:, :, :2], x[:, :, :2]) and torch.equal(removed[:, :, 2:], x[:, :, 2:])
    assert torch.equal(kept[0, :, 2:], model.fill.view(3, 1, 1).expand(3, 2, 4))
    assert torch.equal(removed[0, :, :2], model.fill.view(3, 1, 1).expand(3, 2, 4))


def test_mean_colour_counts_only_the_first_images():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(10, 3, 5, 5, generator=g)
    batches = [images[:4], images[4:8], images[8:]]
    torch.testing.assert_close(mean_colour(iter(batches), 6), images[:6].mean((0, 2, 3)))
    torch.testing.assert_close(mean_colour(iter(batches), 100), images.mean((0, 2, 3)))
    with pytest.raises(ConfigError, match="empty"):
        mean_colour(iter([]), 5)


def test_fill_values_are_in_normalised_space():
    cfg = tiny_comet().data_config
    torch.testing.assert_close(fill_value("black", cfg), -torch.tensor(cfg.mean) / torch.tensor(cfg.std))
    assert torch.equal(fill_value("zero", cfg), torch.zeros(3)) and fill_value("dataset_mean", cfg) is None
    assert torch.equal(fill_value([0.1, 0.2, 0.3], cfg), torch.tensor([0.1, 0.2, 0.3]))


def _grads(params):
    return [p.grad.clone() for p in params]


@pytest.mark.parametrize("per_sample", [False, True])
def test_gradient_routing_predictor_ce_only_selector_total_detector_nothing(per_sample):
    # (the hinge form: in the paper's linear form the detector term has no predictor gradient anyway)
    model = tiny_comet().train()
    x, y = batch(6)
    objective = Objective(per_sample_hinge=per_sample, tau=0.1)
    sel, pred = model.parameters_of("selector"), model.parameters_of("predictor")
    det = list(model.detector.parameters())
    loss = comet_objective(model.players(x), y, objective)
    assert loss.hinge_active.item() == 1.0  # the detector term is live, so routing matters
    want_pred = torch.autograd.grad(loss.predictor, pred, retain_graph=True)
    total_pred = torch.autograd.grad(loss.total, pred, retain_graph=True)
    want_sel = torch.autograd.grad(loss.total, sel, retain_graph=True)
    route_gradients(loss, model)
    for got, want, total in zip(_grads(pred), want_pred, total_pred):
        torch.testing.assert_close(got, want)
    # the total's predictor gradient differs (the detector term), so the test can tell them apart
    assert any(not torch.allclose(w, t) for w, t in zip(want_pred, total_pred))
    for got, want in zip(_grads(sel), want_sel):
        torch.testing.assert_close(got, want)
    assert all(p.grad is None and not p.requires_grad for p in det)


def test_adversarial_detector_learns_from_its_own_cross_entropy_only():
    model = tiny_comet(detector="adversarial").train()
    x, y = batch(6)
    loss = comet_objective(model.players(x), y, Objective(tau=0.1))
    det = model.parameters_of("detector")
    assert det, "an adversarial detector must be trainable"
    want = torch.autograd.grad(loss.ce_d, det, retain_graph=True)
    total = torch.autograd.grad(loss.total, det, retain_graph=True)
    route_gradients(loss, model)
    for got, w, t in zip(_grads(det), want, total):
        torch.testing.assert_close(got, w)
    assert any(not torch.allclose(w, t) for w, t in zip(want, total))


def test_frozen_players_stay_in_eval_mode_unless_bn_train():
    model = tiny_comet().train()
    assert model.selector.training and model.predictor.training and not model.detector.training
    pred = create_model("resnet10t_os16", num_classes=6, img_size=SIZE)
    det = create_model("resnet10t_os16", num_classes=6, img_size=SIZE)
    code_like = Comet(create_selector("unet_small", width=2, depth=1), pred, det, detector_bn_train=True).train()
    assert code_like.detector.training and not any(p.requires_grad for p in code_like.detector.parameters())
    fixed = Comet(create_selector("unet_small", width=2, depth=1), pred, None, predictor_frozen=True).train()
    assert not fixed.predictor.training and fixed.parameters_of("predictor") == []


# ---- through Lightning -----------------------------------------------------------------------------
class _Batches(L.LightningDataModule):
    def __init__(self, n=8):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.items = [{"image": torch.randn(3, SIZE, SIZE, generator=g), "label": i % 6} for i in range(n)]

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.items, batch_size=4)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(self.items, batch_size=4)


@pytest.mark.parametrize("bn_train", [False, True])
def test_a_training_step_leaves_the_frozen_detector_untouched(tmp_path, bn_train):
    ckpt = save_classifier(tmp_path / "det.ckpt")
    module = CometModule(
        selector={"name": "unet_small", "width": 2, "depth": 1},
        predictor={"model": {"name": "resnet10t_os16", "num_classes": 6, "img_size": SIZE}},
        detector={"mode": "frozen", "checkpoint": ckpt}, detector_bn_train=bn_train, mask_fill="zero",
        objective={"tau": 0.1}, scheduler={"name": "multistep", "warmup_epochs": 1, "milestones": [1]},
    )
    before = {k: v.clone() for k, v in module.comet.state_dict().items()}
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=_Batches())
    after = module.comet.state_dict()
    weights = [k for k in before if k.startswith("detector.") and "running" not in k and "num_batches" not in k]
    stats = [k for k in before if k.startswith("detector.") and "running_mean" in k]
    assert all(torch.equal(before[k], after[k]) for k in weights)
    assert all(torch.equal(before[k], after[k]) for k in stats) != bn_train  # BN statistics drift only if bn_train
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("selector."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("predictor."))
    # one optimiser per trainable player; each stepped twice, with the warm-up then the decay
    opts = trainer.optimizers
    assert len(opts) == 2 and all(o.state_dict()["state"][0]["step"].item() == 2 for o in opts)
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 2


def test_model_selection_monitor(tmp_path):
    module = CometModule(
        selector={"name": "unet_small", "width": 2, "depth": 1},
        predictor={"model": {"name": "resnet10t_os16", "num_classes": 6, "img_size": SIZE}},
        detector={"mode": "none"}, mask_fill="zero", monitor="val/neg_loss",
    )
    assert module.monitor == "val/neg_loss" and CometModule.__init__.__defaults__[-1] == "val/acc"
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.validate(module, datamodule=_Batches(), verbose=False)
    assert metrics["val/neg_loss"] == pytest.approx(-metrics["val/loss"]) and "val/acc" in metrics
    with pytest.raises(ConfigError, match="monitor"):
        CometModule({"name": "unet_small"}, module.hparams.predictor, {"mode": "none"}, monitor="val/loss")


def test_mask_grid_layout():
    images = torch.rand(3, 3, 8, 8)
    masks = torch.rand(3, 8, 8)
    grid = mask_grid(images, masks, images * masks.unsqueeze(1))
    assert grid.shape == (24, 24, 3) and grid.dtype.name == "uint8"
    assert (grid[8:16, 8:16, 0] == (masks[1] * 255).round().byte().numpy()).all()


# ---- the real configs ------------------------------------------------------------------------------
@pytest.mark.parametrize("experiment", COMET_CONFIGS + ["detector_synthetic", "detector_two_part"])
def test_fast_dev_run_of_every_config(tmp_path, experiment, monkeypatch):
    if experiment.startswith("comet"):  # the detectors COMET reads; a detector run must not find one in its own run dir
        save_classifier(detector_path(tmp_path, "detector_synthetic"))
        save_classifier(detector_path(tmp_path, "detector_two_part"))
    overrides = TINY if experiment.startswith("comet") else [o for o in TINY if not o.startswith("module.")]
    cfg = compose_config("train", [f"experiment={experiment}", *overrides, "+trainer.fast_dev_run=true"], tmp_path)
    metrics = fit_one_step_and_check(cfg, monkeypatch)  # it trained; test/acc is the trained model's
    if experiment.startswith("comet"):
        assert 0 <= metrics["test/area"] <= 1
        assert ("test/coverage" in metrics) == (experiment == "comet_two_part")
        assert ("test/detector_acc" in metrics) == (experiment != "comet_no_detector")


def test_fast_dev_run_of_the_imagenet9_config(tmp_path, monkeypatch):
    from fixtures_datasets import write_imagenet9

    root = write_imagenet9(tmp_path / "in9", per_class=1, size=SIZE)
    save_classifier(detector_path(tmp_path, "detector_imagenet9"), name="resnet18", num_classes=9)
    cfg = compose_config("train", [
        "experiment=comet_imagenet9", f"data.options.root={root}", f"data.image_size={SIZE}", "data.batch_size=9", "data.num_workers=0",
        "logger=none", "module.fill_stats_images=9", "+trainer.fast_dev_run=true", "trainer.enable_progress_bar=false",
    ], tmp_path)
    fit_one_step_and_check(cfg, monkeypatch)  # it trained; test/acc is the trained model's on the 9 test images


def _short_run(root, name="run"):
    return compose_config("train", [
        "experiment=comet_synthetic", *TINY, "module.selector.width=2", "data.options.sizes={train:32,val:16,test:16}",
        "trainer.max_epochs=2", "module.scheduler.warmup_epochs=1", "module.scheduler.milestones=[1]", f"name={name}",
    ], root)


def test_resume_after_a_kill_continues_steps_optimisers_and_schedule(tmp_path, monkeypatch):
    save_classifier(detector_path(tmp_path))
    clean = fit(_short_run(tmp_path, "clean"))

    def killed(self):
        if self.current_epoch == 1:
            raise RuntimeError("simulated kill at the start of epoch 1")

    monkeypatch.setattr(CometModule, "on_train_epoch_start", killed)
    with pytest.raises(RuntimeError, match="simulated kill"):
        fit(_short_run(tmp_path, "killed"))
    last = os.path.join(tmp_path, "outputs", "train", "killed", "checkpoints", "last.ckpt")
    interrupted = torch.load(last, weights_only=True)
    assert interrupted["epoch"] == 0
    monkeypatch.undo()
    resumed = fit(_short_run(tmp_path, "killed"))

    a = torch.load(clean.last_checkpoint, weights_only=True)
    b = torch.load(resumed.last_checkpoint, weights_only=True)
    # 2 epochs x 2 batches x 2 optimisers (selector, predictor): Lightning counts optimiser steps
    assert a["global_step"] == b["global_step"] == 2 * interrupted["global_step"] == 8
    assert [s["last_epoch"] for s in b["lr_schedulers"]] == [4, 4]
    assert [o["state"][0]["step"].item() for o in b["optimizer_states"]] == [4, 4]
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], msg=key)
    assert resumed.metrics == pytest.approx(clean.metrics)


def test_checkpoint_round_trip_of_all_three_players(tmp_path):
    save_classifier(detector_path(tmp_path))
    cfg = compose_config("train", [
        "experiment=comet_synthetic", *TINY, "data.options.sizes={train:16,val:16,test:16}", "trainer.max_epochs=1",
    ], tmp_path)
    result = fit(cfg)
    ckpt = torch.load(result.last_checkpoint, weights_only=True)
    module = CometModule(**ckpt["hyper_parameters"])
    module.load_state_dict(ckpt["state_dict"])
    loaded = load_comet(result.last_checkpoint)
    assert loaded.detector is not None and not loaded.training
    assert torch.equal(loaded.fill, module.comet.fill) and loaded.fill.abs().sum() > 0  # the dataset mean, not 0
    module.comet.eval()
    x, _ = batch(3)
    with torch.no_grad():
        a, b = module.comet.players(x), loaded.players(x)
    for name in ("mask", "predictor_logits", "detector_logits"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    maps = create("comet", result.last_checkpoint).attribute(x)
    assert torch.equal(maps, b.mask)


# ---- the comet attributor: its contract checks ---------------------------------------------------------
def test_attributor_contract_batch_invariance_state_and_hooks():
    model = tiny_comet().train()
    training = {n: m.training for n, m in model.named_modules()}
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
    attributor = create("comet", model)
    x, _ = batch(4)
    maps = attributor.attribute(x)
    assert maps.shape == (4, SIZE, SIZE) and maps.min() >= 0 and maps.max() <= 1
    # a sample's map does not depend on its batch-mates (BatchNorm in eval mode inside attribute)
    singles = torch.cat([attributor.attribute(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(maps, singles)
    # class-agnostic: the target changes nothing
    assert torch.equal(attributor.attribute(x, target=0), maps)
    assert {n: m.training for n, m in model.named_modules()} == training
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()) == hooks
    assert attributor.last_cost["forward_per_image"] == 1.0


def test_attributor_refuses_a_plain_classifier(cnn):
    with pytest.raises(InputError, match="trained COMET model"):
        create("comet", cnn)
    from reproduce.attributors import get_class

    assert get_class("comet").contract_skip


# ---- bad input -----------------------------------------------------------------------------------------
def _comet_cfg(tmp_path, *extra):
    return compose_config("train", ["experiment=comet_synthetic", *TINY, "+trainer.fast_dev_run=true", *extra], tmp_path)


def test_missing_detector_checkpoint_says_how_to_train_one(tmp_path):
    with pytest.raises(ConfigError, match="python -m reproduce.train experiment=detector_synthetic"):
        fit(_comet_cfg(tmp_path))
    assert not os.path.exists(os.path.join(tmp_path, "outputs", "train", "comet_synthetic", "checkpoints"))


def test_detector_with_other_class_count_is_refused(tmp_path):
    save_classifier(detector_path(tmp_path), num_classes=4)
    with pytest.raises(ConfigError, match="num_classes=4"):
        fit(_comet_cfg(tmp_path))


def test_detector_with_other_architecture_is_refused(tmp_path):
    save_classifier(detector_path(tmp_path), name="resnet18")
    with pytest.raises(ConfigError, match="name='resnet18'"):
        fit(_comet_cfg(tmp_path))


def _plain_dict_checkpoint(tmp_path):
    path = tmp_path / "not_a_classifier.ckpt"
    torch.save({"comet_spec": {}, "state_dict": {}}, path)
    return str(path)


def test_a_comet_checkpoint_is_not_a_detector(tmp_path):
    with pytest.raises(ConfigError, match="no model spec"):
        build_comet({"name": "unet_small"}, {"model": {"name": "resnet10t_os16", "num_classes": 6}},
                    {"mode": "frozen", "checkpoint": _plain_dict_checkpoint(tmp_path)})


@pytest.mark.parametrize("tau", [0, 1, 1.2, -0.1])
def test_area_target_outside_0_1_is_refused_before_training(tmp_path, tau):
    save_classifier(detector_path(tmp_path))
    with pytest.raises(ConfigError, match=r"objective.tau .* must lie in \(0, 1\)"):
        fit(_comet_cfg(tmp_path, f"module.objective.tau={tau}"))


def test_other_bad_module_options(tmp_path):
    predictor = {"model": {"name": "resnet10t_os16", "num_classes": 6, "img_size": SIZE}}
    with pytest.raises(ConfigError, match="detector.mode"):
        build_comet({"name": "unet_small"}, predictor, {"mode": "jointly"})
    with pytest.raises(ConfigError, match="needs module.predictor.checkpoint"):
        build_comet({"name": "unet_small"}, {**predictor, "trainable": False}, {"mode": "none"})
    with pytest.raises(ConfigError, match="Unknown selector"):
        build_comet({"name": "fcn"}, predictor, {"mode": "none"})
    with pytest.raises(ConfigError, match="mask_fill"):
        CometModule({"name": "unet_small"}, predictor, {"mode": "none"}, mask_fill="grey")
