"""Training COMET (selector, predictor, detector) with manual optimisation.

One AdamW per trainable player (the code: lr 5e-4, weight decay 0.03) and the released code's
gradient routing (:func:`reproduce.models.comet.player_losses`): the predictor learns from its own
cross-entropy on the kept region only, an adversarial detector from its cross-entropy on the
removed region only, the selector from the total objective; a frozen detector gets no gradient.
Each player's learning rate follows the same per-step schedule (``reproduce.lit.optim.lr_factor``:
warm-up, then COMET's MultiStepLR). Optimiser and schedule states are in every checkpoint, so a
run resumed from ``last.ckpt`` continues where it stopped.

Model selection: ``val/acc``, the predictor's accuracy on the kept region (the code's criterion), or
``val/neg_loss`` (``monitor``).
Logged per epoch for val/test: ``acc``, ``detector_acc`` (detector on the removed region: low is
what COMET wants), ``area`` (mean mask), ``loss``/``ce_p``/``ce_d``, ``hinge_active`` and, when the
data has ground truth, ``mask_fg``/``mask_bg`` (mean mask inside/outside the evidence) and for
two-part data ``coverage`` (fraction of images whose every part has a mean mask above
``coverage_threshold``). With a W&B logger, a grid of example masks is logged every
``log_masks_every_n_epochs`` epochs (``val/masks``: image, mask, kept region).

Lightning counts every optimiser step in ``trainer.global_step`` under manual optimisation: one per
trainable player per batch (``trainer.max_steps`` counts those too). Training runs on one device.

Hyper-parameters are plain dicts, so checkpoints load with ``weights_only=True``; each checkpoint
also carries ``comet_spec`` so :func:`reproduce.models.comet.load_comet` rebuilds the trained model
without the detector checkpoint.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy

from reproduce.checks import check_int
from reproduce.errors import ConfigError
from reproduce.lit.optim import build_optimizer, build_scheduler, lr_factor
from reproduce.models.comet import (
    Objective,
    build_comet,
    comet_objective,
    fill_value,
    mean_colour,
    route_gradients,
)

STAGES = ("train", "val", "test")
# Model selection (``fit`` keeps the checkpoint maximising ``module.monitor``): the code's validation
# accuracy of the predictor on x_s, or the negated validation objective, which still ranks epochs
# once accuracy saturates (on the embedded benchmark it reaches 100 % in the first epochs, and the
# accuracy rule then keeps the first such epoch, whose mask is still far from trained).
MONITORS = ("val/acc", "val/neg_loss")


def mask_grid(images01: torch.Tensor, masks: torch.Tensor, kept01: torch.Tensor) -> np.ndarray:
    """uint8 ``[3H, N*W, 3]``: the images, their masks (grey) and the kept regions, one column each."""
    grey = masks.unsqueeze(1).expand_as(images01)
    rows = [torch.cat(list(t.clamp(0, 1)), dim=2) for t in (images01, grey, kept01)]  # [3, H, N*W] each
    grid = torch.cat(rows, dim=1)
    return (grid.permute(1, 2, 0).detach().cpu().numpy() * 255).round().astype(np.uint8)


class CometModule(L.LightningModule):
    """COMET in Lightning.

    Args:
        selector: ``create_selector`` arguments, e.g. ``{name: unet_small, width: 16, depth: 3}`` or
            ``{name: lraspp_mobilenet_v3_large, pretrained_backbone: false}``.
        predictor: ``{model: create_model kwargs, checkpoint: null, trainable: true, optimizer: null}``.
        detector: ``{mode: frozen | adversarial | none, checkpoint, model, train_command, optimizer}``
            (see :func:`reproduce.models.comet.build_comet`).
        objective: :class:`reproduce.models.comet.Objective` fields (form, m_p, a, gap, b, tau,
            per_sample_hinge).
        mask_fill: ``dataset_mean`` (the mean colour of the first ``fill_stats_images`` training
            images, in the model's normalised space, computed once when fitting starts), ``zero``,
            ``black``, a number or a list (normalised space).
        detector_bn_train: keep a frozen detector's BatchNorm in train mode (the released code).
        optimizer / scheduler: shared by every player (a player's ``optimizer`` entry overrides
            keys); scheduler as in ``reproduce.lit.optim``.
        monitor: model-selection metric, ``val/acc`` (the code) or ``val/neg_loss`` (see MONITORS).
    """

    def __init__(
        self,
        selector: dict[str, Any],
        predictor: dict[str, Any],
        detector: dict[str, Any] | None = None,
        objective: dict[str, Any] | None = None,
        mask_fill: str | float | list[float] = "dataset_mean",
        fill_stats_images: int = 2048,
        detector_bn_train: bool = False,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        log_masks_every_n_epochs: int = 1,
        num_logged_masks: int = 8,
        coverage_threshold: float = 0.5,
        monitor: str = "val/acc",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.objective = Objective.from_dict(objective)
        check_int("module.fill_stats_images", fill_stats_images)
        check_int("module.log_masks_every_n_epochs", log_masks_every_n_epochs, minimum=0)
        check_int("module.num_logged_masks", num_logged_masks)
        if isinstance(coverage_threshold, bool) or not isinstance(coverage_threshold, (int, float)) or not 0 < coverage_threshold < 1:
            raise ConfigError(f"module.coverage_threshold must lie in (0, 1), got {coverage_threshold!r}.")
        if monitor not in MONITORS:
            raise ConfigError(f"module.monitor={monitor!r} is unknown; use one of {MONITORS}.")
        self.monitor = monitor
        if scheduler:
            lr_factor(0, 1, 1, dict(scheduler))  # unknown schedule names fail before training
        self.comet = build_comet(selector, predictor, detector, detector_bn_train)
        fill = fill_value(mask_fill, self.comet.data_config)
        if fill is not None:
            self.comet.fill.copy_(fill)
        k = self.comet.num_classes
        # ModuleDicts keyed by stage ("train" would shadow nn.Module.train as a key of the module).
        self.acc = torch.nn.ModuleDict({f"{s}_acc": MulticlassAccuracy(k, average="micro") for s in STAGES})
        self.detector_acc = torch.nn.ModuleDict({f"{s}_acc": MulticlassAccuracy(k, average="micro") for s in STAGES})

    # ---- what the runners and evaluation use -------------------------------------------------------
    @property
    def data_config(self):
        return self.comet.data_config

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The explainable classifier's logits (predictor on the kept region)."""
        return self.comet(images)

    @torch.no_grad()
    def masks(self, images: torch.Tensor) -> torch.Tensor:
        """Selector masks ``[B, H, W]`` in [0, 1], computed in eval mode (mode restored)."""
        was = self.comet.training
        self.comet.eval()
        try:
            return self.comet.mask(images)
        finally:
            self.comet.train(was)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["comet_spec"] = self.comet.spec()

    # ---- setup: the fill colour ---------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "fit" and self.trainer.world_size > 1:
            # Each player's loss is back-propagated separately (backward(inputs=...)); DDP's reducer
            # expects one backward per forward, so the routing is single-device (as the release).
            raise ConfigError("COMET trains on one device: set trainer.devices=1 (trainer=default); its "
                              "per-player backward passes are not compatible with DDP gradient syncing.")
        if stage != "fit" or self.hparams.mask_fill != "dataset_mean":
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "dataset"):
            raise ConfigError("mask_fill=dataset_mean computes the fill from the training split and needs an "
                              "ImageDataModule; pass one, or set module.mask_fill=zero.")
        loader = DataLoader(datamodule.dataset("train"), batch_size=256, shuffle=False, num_workers=0)
        batches = (batch["image"] for batch in loader)
        self.comet.fill.copy_(mean_colour(batches, self.hparams.fill_stats_images).to(self.comet.fill))

    # ---- optimisation --------------------------------------------------------------------------------
    def _players(self) -> list[str]:
        return [p for p in ("selector", "predictor", "detector") if self.comet.parameters_of(p)]

    def configure_optimizers(self):
        shared = dict(self.hparams.optimizer or {"name": "adamw", "lr": 5e-4, "weight_decay": 0.03})
        optimizers = []
        for player in self._players():
            own = (self.hparams.get(player) or {}).get("optimizer") or {}
            optimizers.append(build_optimizer(self.comet.parameters_of(player), {**shared, **own}))
        if not self.hparams.scheduler:
            return optimizers
        schedulers = [build_scheduler(o, self.hparams.scheduler, self.trainer)["scheduler"] for o in optimizers]
        return optimizers, schedulers

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images, labels = batch["image"], batch["label"]
        outputs = self.comet.players(images)
        loss = comet_objective(outputs, labels, self.objective)
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        for opt in optimizers:
            opt.zero_grad()
        route_gradients(loss, self.comet, backward=self.manual_backward)
        for opt in optimizers:
            opt.step()
        schedulers = self.lr_schedulers()
        for sched in (schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []):
            sched.step()
        self._log_stage("train", outputs, loss, labels, batch)
        self.log("train/lr", optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss.total.detach()

    # ---- evaluation ----------------------------------------------------------------------------------
    def _eval_step(self, batch: dict[str, Any], stage: str):
        outputs = self.comet.players(batch["image"])
        loss = comet_objective(outputs, batch["label"], self.objective)
        self._log_stage(stage, outputs, loss, batch["label"], batch)
        return outputs

    def validation_step(self, batch, batch_idx):
        outputs = self._eval_step(batch, "val")
        if batch_idx == 0:
            self._log_mask_grid(batch["image"], outputs.mask)

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def _log_stage(self, stage: str, outputs, loss, labels: torch.Tensor, batch: dict[str, Any]) -> None:
        on_step = stage == "train"
        n = labels.shape[0]
        log = dict(on_step=on_step, on_epoch=True, batch_size=n)
        acc = self.acc[f"{stage}_acc"]
        acc(outputs.predictor_logits.detach(), labels)
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        values = {"loss": loss.total, "ce_p": loss.ce_p, "area": loss.area, "area_term": loss.area_term}
        if outputs.detector_logits is not None:
            detector_acc = self.detector_acc[f"{stage}_acc"]
            detector_acc(outputs.detector_logits.detach(), labels)
            self.log(f"{stage}/detector_acc", detector_acc, on_step=False, on_epoch=True)
            values.update(ce_d=loss.ce_d, detector_term=loss.detector_term, hinge_active=loss.hinge_active)
        mask = outputs.mask.detach()
        if "mask" in batch:
            gt = batch["mask"].to(mask.dtype)
            values["mask_fg"] = ((mask * gt).sum((1, 2)) / gt.sum((1, 2)).clamp_min(1)).mean()
            values["mask_bg"] = ((mask * (1 - gt)).sum((1, 2)) / (1 - gt).sum((1, 2)).clamp_min(1)).mean()
        if "parts" in batch:
            parts = batch["parts"].to(mask.dtype)  # [B, P, H, W]
            part_means = (mask.unsqueeze(1) * parts).sum((2, 3)) / parts.sum((2, 3)).clamp_min(1)
            values["coverage"] = (part_means > self.hparams.coverage_threshold).all(1).float().mean()
        if stage == "val":
            values["neg_loss"] = -loss.total
        prog = {"area"} if on_step else set()
        for key, value in values.items():
            self.log(f"{stage}/{key}", value.detach(), prog_bar=key in prog, **log)

    def _log_mask_grid(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        every = self.hparams.log_masks_every_n_epochs
        if not every or self.current_epoch % every or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        from lightning.pytorch.loggers import WandbLogger

        loggers = [lg for lg in self.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            return
        k = min(self.hparams.num_logged_masks, images.shape[0])
        x, m = images[:k], masks[:k]
        cfg = self.data_config
        grid = mask_grid(cfg.denormalize(x), m, cfg.denormalize(self.comet.keep(x, m)))
        for lg in loggers:
            lg.log_image(key="val/masks", images=[grid],
                         caption=[f"epoch {self.current_epoch}: images / masks / kept regions"])
