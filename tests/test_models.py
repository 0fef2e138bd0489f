"""Model factory, the adapter surface, masking and checkpoint loading."""

import pytest
import torch

from reproduce.errors import ConfigError, DataError, InputError
from reproduce.models import (
    FillMasker,
    ModelAdapter,
    Partition,
    TokenDropMasker,
    count_passes,
    create_model,
    inference_state,
    load_model,
    load_weights,
    record_attention,
)


def test_presets_carry_their_data_config_and_spec(cnn, vit):
    for model in (cnn, vit):
        cfg = ModelAdapter(model).data_config
        assert cfg.input_size == (3, 64, 64)
        assert len(cfg.mean) == 3 and len(cfg.std) == 3
        assert model.reproduce_spec["num_classes"] == 6
    assert ModelAdapter(vit).token_grid == (8, 8) and ModelAdapter(vit).is_vit
    assert not ModelAdapter(cnn).is_vit and ModelAdapter(cnn).token_grid is None


def test_normalize_roundtrip(cnn):
    cfg = ModelAdapter(cnn).data_config
    x01 = torch.rand(2, 3, 8, 8)
    assert torch.allclose(cfg.denormalize(cfg.normalize(x01)), x01, atol=1e-6)
    black = cfg.value_of(0.0, x01)
    assert torch.allclose(cfg.denormalize(black.unsqueeze(0)), torch.zeros(1, 3, 1, 1), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="resnet19"), "Did you mean"),
        (dict(name="vit_micro_p8", img_size=60), "divisible by 8"),
        (dict(name="resnet10t_os16", img_size=8), "at least 16x16"),
        (dict(name="resnet10t_os16", num_classes=0), "positive integer"),
        (dict(name="efficientnet_lite0_imagenet", num_classes=6), "1000 outputs"),
    ],
)
def test_bad_model_requests_name_the_fix(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        create_model(**kwargs)


def test_token_dropping_with_every_token_is_the_stock_forward(vit, images):
    adapter = ModelAdapter(vit)
    with torch.no_grad():
        full = adapter.forward_tokens(images, torch.arange(64).expand(3, 64))
        assert torch.allclose(full, vit(images), atol=1e-5)
        # Dropping tokens changes the output, and order of kept indices does not matter.
        keep = torch.tensor([[0, 5, 9, 30]] * 3)
        a = adapter.forward_tokens(images, keep)
        b = adapter.forward_tokens(images, keep.flip(-1))
    assert not torch.allclose(a, full)
    assert torch.allclose(a, b, atol=1e-5)


def test_cam_activation_is_a_graph_node_and_folds_to_the_grid(cnn, vit, images):
    for model, grid in ((cnn, (4, 4)), (vit, (8, 8))):
        adapter = ModelAdapter(model)
        x = images.clone().requires_grad_(True)
        logits, act = adapter.forward_with_activation(x)
        (grad,) = torch.autograd.grad(logits[:, 0].sum(), act)
        assert adapter.fold(act).shape[-2:] == grid
        assert adapter.fold(grad).abs().sum() > 0  # patch tokens get gradient at the default layer
    with pytest.raises(InputError, match="does not exist"):
        ModelAdapter(cnn).forward_with_activation(images, layer="layer9")


def test_fill_masker_matches_manual_masking(cnn, images):
    part = Partition.patch_grid(3, 64, 64, 4)
    keep = torch.zeros(3, 2, 16)
    keep[:, 0, :8] = 1  # top half shown
    masker = FillMasker(cnn, fill="black")
    black = ModelAdapter(cnn).data_config.value_of(0.0, images)
    with torch.no_grad():
        out = masker(images, part, keep)
        manual = images.clone()
        manual[:, :, 32:] = black
        assert torch.allclose(out[:, 0], cnn(manual), atol=1e-5)
        assert torch.allclose(out[:, 1], cnn(black.expand_as(images).contiguous()), atol=1e-5)


@pytest.mark.parametrize("fill", ["blur", "mean"])
def test_fill_masker_splits_images_and_subsets_into_cache_sized_forwards(cnn, images, fill, monkeypatch):
    # On a CPU rows per forward are capped by pixels (64 px: 64 rows): with the cap at 2 rows the
    # 3 images x 5 subsets run as 2-row forwards (images split too) and give the same logits, each
    # image with its own fill (blur is per image).
    import reproduce.models.masking as masking

    part = Partition.patch_grid(3, 64, 64, 4)
    keep = torch.rand(3, 5, 16, generator=torch.Generator().manual_seed(2)) > 0.5
    with torch.no_grad():
        whole = FillMasker(cnn, fill=fill)(images, part, keep)
        assert masking.forward_rows(256, images) == 64 and masking.forward_rows(256, torch.zeros(1, 3, 224, 224)) == 5
        monkeypatch.setattr(masking, "CPU_PIXELS_PER_FORWARD", 2 * 64 * 64)
        batches = []
        handle = cnn.register_forward_pre_hook(lambda _m, args: batches.append(args[0].shape[0]))
        try:
            split = FillMasker(cnn, fill=fill)(images, part, keep)
        finally:
            handle.remove()
    assert batches == [2] * 5 + [1] * 5  # images 0-1: one subset each per forward; image 2 alone
    torch.testing.assert_close(split, whole, rtol=1e-4, atol=1e-5)


def test_token_drop_masker_rows_are_independent_and_counted(vit, images):
    part = Partition.patch_grid(3, 64, 64, 8)
    keep = torch.rand(3, 4, 64, generator=torch.Generator().manual_seed(1)) > 0.5
    masker = TokenDropMasker(vit)
    with torch.no_grad(), count_passes(vit) as counter:
        out = masker(images, part, keep)
    assert counter.forward == 12
    idx = keep[2, 3].nonzero()[:, 0]
    with torch.no_grad():
        single = ModelAdapter(vit).forward_tokens(images[2:3], idx[None])
    assert torch.allclose(out[2, 3], single[0], atol=1e-5)
    with pytest.raises(InputError, match="token grid"):
        masker(images, Partition.patch_grid(3, 64, 64, 4), torch.ones(3, 1, 16))


def test_partition_errors_and_relabelling():
    with pytest.raises(InputError, match="does not divide"):
        Partition.patch_grid(1, 64, 64, 7)
    labels = torch.tensor([[[5, 5], [9, 2]]])
    p = Partition.from_labels(labels)
    assert p.num_players == 3 and p.masks().sum() == 4
    with pytest.raises(InputError, match="empty"):
        Partition.from_labels(torch.empty(1, 0, 0, dtype=torch.long))


def test_state_and_hooks_restored(vit, images):
    vit.train()
    vit.head.weight.requires_grad_(False)
    with inference_state(vit):
        assert not vit.training
    assert vit.training and not vit.head.weight.requires_grad
    fused = [m.fused_attn for m in vit.modules() if hasattr(m, "fused_attn")]
    with pytest.raises(RuntimeError):
        with record_attention(vit) as maps:
            vit.eval()(images)
            assert len(maps) == 4 and maps[0].shape == (3, 4, 65, 65)
            raise RuntimeError("boom")
    assert [m.fused_attn for m in vit.modules() if hasattr(m, "fused_attn")] == fused
    assert all(not m._forward_hooks for m in vit.modules())


def test_checkpoint_round_trip_and_errors(cnn, tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"reproduce_spec": cnn.reproduce_spec, "state_dict": cnn.state_dict()}, path)
    clone = load_model(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(clone.eval()(x), cnn(x))
    with pytest.raises(ConfigError, match="has 6 classes but the model has 9"):
        load_weights(create_model("resnet10t_os16", num_classes=9), path)
    with pytest.raises(ConfigError, match="does not fit this architecture"):
        load_weights(create_model("vit_micro_p8", num_classes=6), path)
    with pytest.raises(DataError, match="does not exist"):
        load_weights(cnn, tmp_path / "missing.ckpt")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ConfigError, match="truncated, corrupt"):
        load_weights(cnn, truncated)


def test_checkpoint_loading_never_unpickles_objects(cnn, tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": cnn.state_dict(), "payload": Evil()}, path)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_weights(cnn, path)


def test_efficientnet_lite0_is_real_and_offline():
    from skimage import data as skdata

    model = create_model("efficientnet_lite0_imagenet")
    cfg = ModelAdapter(model).data_config
    for photo, imagenet_class in [(skdata.chelsea(), 285), (skdata.coffee(), 967)]:  # Egyptian cat, espresso
        img = torch.from_numpy(photo).permute(2, 0, 1).float()[None] / 255
        x = cfg.normalize(torch.nn.functional.interpolate(img, size=(224, 224), mode="bilinear", antialias=True))
        with torch.no_grad():
            assert model(x).argmax().item() == imagenet_class


def test_score_cam_and_road_give_the_same_result_in_cache_sized_forwards(cnn, images, monkeypatch):
    # Score-CAM and ROAD batch their own forwards; on a CPU they take the same pixel cap as
    # FillMasker. With the cap at 8 rows they must give what the uncapped forwards give.
    import reproduce.models.masking as masking
    from reproduce.attributors import create
    from reproduce.metrics import AttributionBatch, create_metric

    targets = torch.tensor([0, 1, 2])
    maps = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(3))
    batch = AttributionBatch(images=images, labels=targets, targets=targets, maps=maps, indices=torch.arange(3))

    def run():
        road = create_metric("road", cnn, percentages=[0.2, 0.5])
        road.update(batch)
        return create("scorecam", cnn).attribute(images, targets), road.compute()["morf"]

    whole = run()
    batches = []
    monkeypatch.setattr(masking, "CPU_PIXELS_PER_FORWARD", 8 * 64 * 64)
    handle = cnn.register_forward_pre_hook(lambda _m, args: batches.append(args[0].shape[0]))
    try:
        split = run()
    finally:
        handle.remove()
    assert max(batches) == 8  # uncapped: Score-CAM's 64 rows, ROAD's 15 rows per forward
    torch.testing.assert_close(split[0], whole[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(split[1], whole[1], rtol=1e-4, atol=1e-5)
