"""The benchmark's extras reach the metrics through the real evaluation path: a metric that needs a
test variant or the interventions gets them from the data module without any data option."""

from __future__ import annotations

import pytest
import torch

from reproduce.errors import ConfigError
from reproduce.lit.datamodule import ImageDataModule
from reproduce.models.data_config import DataConfig
from reproduce.runtime.evaluation import _available, evaluate_cell

N_TEST = 12
BASE = ["checkpoint=null", f"data.options.sizes={{train:8,val:8,test:{N_TEST}}}", "data.eval_batch_size=6",
        "trainer.enable_progress_bar=false", "logger=none", "attributor=gradcam"]
VARIANTS = {"mixed_rand": {"background": "mixed_rand"}, "only_fg": {"background": "only_fg"}}


def module(tmp_path, **kw) -> ImageDataModule:
    dm = ImageDataModule("synthetic_spurious", options={"root": str(tmp_path), "sizes": {"train": 8, "val": 8, "test": N_TEST}},
                         variants=VARIANTS, **kw)
    dm.set_data_config(DataConfig(mean=(0.5,) * 3, std=(0.25,) * 3, input_size=(3, 64, 64)))
    return dm


def test_requested_extras_pair_variants_and_switch_interventions_on(tmp_path):
    dm = module(tmp_path)
    assert dm.provided_extras() == set()
    dm.request_extras({"images_mixed_rand", "object_masks", "images_bg_shift", "step_area"})
    item = dm.dataset("test")[3]
    variant = dm.variants["mixed_rand"]
    from reproduce.data import create_dataset

    direct = create_dataset("synthetic_spurious", root=str(tmp_path), split="test", sizes={"test": N_TEST},
                            normalize=dm.data_config, **variant)
    assert torch.equal(item["images_mixed_rand"], direct[3]["image"])
    assert {"object_masks", "object_layers", "images_mixed_rand"} <= set(item)
    assert dm.provided_extras() == {"images_mixed_rand", "object_masks", "object_footprints", "object_kinds",
                                    "object_layers", "images_without_objects"}
    assert "extra:object_kinds" in _available(dm, attributor_has_steps=False)


def test_paired_variants_from_the_config_and_unknown_names(tmp_path):
    assert "images_only_fg" in module(tmp_path, paired_variants=["only_fg"]).dataset("test")[0]
    with pytest.raises(ConfigError, match="paired_variants entry"):
        module(tmp_path, paired_variants=["mixed_up"])


def test_evaluate_cell_scores_the_variant_and_the_interventions(compose):
    cfg = compose("evaluate", [*BASE, "data=synthetic_spurious", "name=cell", "metrics=[variant_accuracy,interventions]"])
    result = evaluate_cell(cfg)
    scalars = result["scalars"]
    # the explained model's own accuracy on the paired mixed_rand images, computed here directly
    from reproduce.models import ModelAdapter
    from reproduce.runtime.evaluation import load_models
    from reproduce.runtime.training import instantiate_node

    model = load_models(cfg).explained
    dm = instantiate_node(cfg.data)
    dm.set_data_config(ModelAdapter(model).data_config)
    dm.request_extras({"images_mixed_rand"})
    items = [dm.dataset("test")[i] for i in range(N_TEST)]
    with torch.no_grad():
        preds = model(torch.stack([it["images_mixed_rand"] for it in items])).argmax(-1)
    labels = torch.tensor([it["label"] for it in items])
    assert scalars["variant_accuracy/accuracy"] == pytest.approx((preds == labels).float().mean().item())
    assert scalars["variant_accuracy/accuracy_clean"] == pytest.approx(scalars["accuracy"] / 100)
    for key in ("csdc", "pc", "dc", "d", "sd", "bi", "mx"):
        assert f"interventions/{key}" in scalars
    assert result["directions"]["interventions/mx"] == "higher" and result["directions"]["variant_accuracy/gap"] == "lower"


def test_a_dataset_without_interventions_fails_before_the_test_loop(compose):
    cfg = compose("evaluate", [*BASE, "data=synthetic", "data.options.background=mixed_next", "name=bad",
                               "metrics=[interventions]"])
    with pytest.raises(ConfigError, match="interventions=True needs background='original'"):
        evaluate_cell(cfg)
