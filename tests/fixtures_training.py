"""A fast-dev-run checker: train one step through a real config and check that it trained and tested.

``fit`` is run with ``reproduce.runtime.training.instantiate_node`` wrapped, so the test sees the module
and data module the run built. A fast dev run trains one batch and tests one batch with the weights
in memory (it saves no checkpoint), so the reported ``test/acc`` must equal the accuracy of the
trained module recomputed by hand on the first test batch, and the training step must have moved the
trainable weights: a run that skips the optimizer step, tests another model or mis-computes the
accuracy fails.
"""

from __future__ import annotations

import pytest
import torch

import reproduce.runtime.training as training


def fit_one_step_and_check(cfg, monkeypatch) -> dict[str, float]:
    """``fit(cfg)`` (a ``+trainer.fast_dev_run=true`` config) with the checks above; its test metrics."""
    built, before = [], {}
    real = training.instantiate_node

    def spying(node):
        obj = real(node)
        built.append(obj)
        if not before and isinstance(obj, torch.nn.Module):  # the module is built first
            before.update({k: p.detach().clone() for k, p in obj.named_parameters() if p.requires_grad})
        return obj

    monkeypatch.setattr(training, "instantiate_node", spying)
    metrics = training.fit(cfg).metrics
    module, datamodule = built[0], built[1]
    moved = [k for k, p in module.named_parameters() if k in before and not torch.equal(p.detach(), before[k])]
    assert moved, "the training step changed no trainable weight"
    batch = next(iter(datamodule.test_dataloader()))
    with torch.no_grad():
        predictions = module.eval()(batch["image"]).argmax(-1)
    accuracy = (predictions == batch["label"]).float().mean().item()
    assert metrics["test/acc"] == pytest.approx(accuracy, abs=1e-6)
    return metrics
