"""Training an evidential (EDL) classifier: SMDL's confidence model.

``EvidentialClassifier`` is :class:`~reproduce.lit.classifier.ClassifierModule` with an EDL loss
(Sensoy et al. 2018; :mod:`reproduce.models.evidential`) whose KL term is annealed with the
epoch: weight min(1, epoch / annealing_step). Its checkpoints load with
``reproduce.models.load_model`` and plug into ``create("smdl", model, confidence_model=path)``.
Accuracy is still the argmax of the logits (the evidence is monotone in them).
"""

from __future__ import annotations

from typing import Any

import torch

from reproduce.checks import check_choice
from reproduce.models.evidential import EDL_LOSSES, EVIDENCE, evidential_uncertainty
from reproduce.errors import ConfigError
from reproduce.lit.classifier import ClassifierModule


class EvidentialClassifier(ClassifierModule):
    """Args (besides :class:`ClassifierModule`'s):
        loss: ``"digamma"`` (default), ``"log"`` or ``"mse"`` (Sensoy Eqs. 4, 3, 5).
        annealing_step: epochs until the KL term reaches full weight (10, Sensoy's code).
        evidence: ``"exp"`` (SMDL's reading of the model, default), ``"relu"`` or ``"softplus"``.
        kl_term: False drops the KL regulariser (SMDL's copy of the losses has it commented out).
    """

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        loss: str = "digamma",
        annealing_step: int = 10,
        evidence: str = "exp",
        kl_term: bool = True,
    ):
        check_choice("loss", loss, sorted(EDL_LOSSES))
        check_choice("evidence", evidence, EVIDENCE)
        if isinstance(annealing_step, bool) or not isinstance(annealing_step, (int, float)) or annealing_step <= 0:
            raise ConfigError(f"annealing_step must be a positive number of epochs, got {annealing_step!r}.")
        super().__init__(model=model, optimizer=optimizer, scheduler=scheduler)

    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        hp = self.hparams
        return EDL_LOSSES[hp.loss](
            logits, labels, epoch=self.current_epoch, annealing_step=hp.annealing_step,
            evidence=hp.evidence, kl_term=hp.kl_term,
        )

    def uncertainty(self, logits: torch.Tensor) -> torch.Tensor:
        """u = K / S per row, read with this module's evidence function."""
        return evidential_uncertainty(logits, evidence=self.hparams.evidence)
