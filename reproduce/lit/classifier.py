"""Training a classifier (the black-box models that post-hoc methods explain, and COMET's detector).

Hyper-parameters are plain dicts (no callables), so checkpoints load with ``weights_only=True`` and
``reproduce.models.load_model(ckpt)`` can rebuild the network from ``hyper_parameters["model"]``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from reproduce.lit.optim import build_optimizer, build_scheduler
from reproduce.models import ModelAdapter, create_model


class ClassifierModule(L.LightningModule):
    """Cross-entropy training of a model built by ``create_model(**model)``.

    Subclasses change the objective by overriding :meth:`compute_loss` (e.g. evidential training).
    """

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = create_model(**model)
        num_classes = self.model.num_classes
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    @property
    def data_config(self):
        return ModelAdapter(self.model).data_config

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)

    def _step(self, batch: dict[str, Any], stage: str, accuracy: MulticlassAccuracy) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self.compute_loss(logits, batch["label"])
        accuracy(logits, batch["label"])
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=on_step, sync_dist=not on_step)
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train", self.train_acc)

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx):
        self._step(batch, "test", self.test_acc)

    def configure_optimizers(self):
        optimizer = build_optimizer(self.model.parameters(), self.hparams.optimizer)
        scheduler = build_scheduler(optimizer, self.hparams.scheduler, self.trainer)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
