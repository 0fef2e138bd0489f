"""The attributor contract, checked for every registered method (present and future).

Each test is parametrised over ``reproduce.attributors.available()``, so a new ``@register``-ed
class is tested without editing this file. Per class, the test reads:

- ``smoke_options``: fast options for these checks (keep one call under ~1 s on the tiny models);
- ``requires_vit``: the method runs on the ``vit`` fixture (and must refuse the ``cnn``);
- ``model_free`` (optional ``ClassVar[bool]``): the method never runs the model (control maps), so a
  failure injected into the model cannot reach it: it must then report zero forward passes;
- ``contract_skip`` (optional ``ClassVar[str]``): a reason the generic checks cannot run, e.g. the
  method needs a trained model of its own (``comet``); the class is then skipped with that reason.

Checks: output shape/dtype/device/finiteness; batch invariance; model mode and ``requires_grad``
restored; no hooks left behind, also after errors; repeatability (and seed sensitivity for
methods with a ``seed`` option); ``normalize="minmax"``; bad inputs rejected with ``InputError``.
"""

from __future__ import annotations

import pytest
import torch

from reproduce.attributors import available, create, get_class
from reproduce.attributors.registry import ATTRIBUTORS
from reproduce.errors import InputError

METHODS = available()
TARGET = torch.tensor([1, 4, 2])
HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks", "_forward_hooks_with_kwargs")


def cls_of(name: str):
    cls = get_class(name)
    reason = getattr(cls, "contract_skip", None)
    if reason:
        pytest.skip(f"{name}: {reason}")
    return cls


def build(name: str, request, **extra):
    """The attributor with its smoke options, and the model it runs on."""
    cls = cls_of(name)
    model = request.getfixturevalue("vit" if cls.requires_vit else "cnn")
    return create(name, model, **{**cls.smoke_options, **extra}), model


def hooks_left(model: torch.nn.Module) -> list[str]:
    return [
        f"{mod_name or '<root>'}.{attr}"
        for mod_name, module in model.named_modules()
        for attr in HOOK_DICTS
        if getattr(module, attr, None)
    ]


def scale_of(maps: torch.Tensor) -> float:
    return max(maps.abs().max().item(), 1e-12)


@pytest.mark.parametrize("name", METHODS)
def test_output_batch_invariance_and_model_state(name, request, images):
    attributor, model = build(name, request)
    model.train()  # attribution must run in eval mode and give the caller back a training model
    for p in list(model.parameters())[::3]:
        p.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]

    batch = attributor.attribute(images, TARGET)
    assert batch.shape == (3, 64, 64)
    assert batch.is_floating_point() and batch.device == images.device
    assert torch.isfinite(batch).all()
    assert {"seconds_per_image", "forward_per_image", "backward_per_image"} <= set(attributor.last_cost)
    assert all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert hooks_left(model) == []

    # A sample's map does not depend on its batch-mates or its position in the batch ...
    alone = attributor.attribute(images[1:2], TARGET[1:2])
    torch.testing.assert_close(alone[0], batch[1], rtol=0, atol=1e-5 * scale_of(batch[1]))
    # ... and a second call repeats the first; a method with a seed changes with it.
    again = attributor.attribute(images[1:2], TARGET[1:2])
    torch.testing.assert_close(again, alone, rtol=0, atol=1e-6 * scale_of(alone))
    if "seed" in ATTRIBUTORS.options(name):
        options = {**get_class(name).smoke_options, "seed": 12345}
        other = create(name, model, **options).attribute(images[1:2], TARGET[1:2])
        assert (other - alone).abs().max() > 1e-4 * scale_of(alone), "the seed does not change the map"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", METHODS)
def test_output_stays_on_cuda(name, request, images):
    attributor, model = build(name, request)
    model.cuda()
    maps = attributor.attribute(images.cuda(), TARGET.cuda())
    assert maps.device.type == "cuda" and maps.shape == (3, 64, 64)


@pytest.mark.parametrize("name", METHODS)
def test_errors_leave_no_hooks_and_restore_the_model(name, request, images):
    attributor, model = build(name, request)
    fused = {m: m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")}
    with pytest.raises(InputError, match="out of range"):
        attributor.attribute(images[:1], 99)
    assert hooks_left(model) == []

    # A failure in the middle of the attribution: the classifier head raises on its first call.
    def fail(*_):
        raise RuntimeError("injected failure")

    handle = model.get_classifier().register_forward_hook(fail)
    model.train()
    try:
        if getattr(attributor, "model_free", False):  # control maps never run the model
            attributor.attribute(images[:1], TARGET[:1])
            assert attributor.last_cost["forward_per_image"] == 0
        else:
            with pytest.raises(RuntimeError, match="injected failure"):
                attributor.attribute(images[:1], TARGET[:1])
    finally:
        handle.remove()
    assert hooks_left(model) == []
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    assert {m: m.fused_attn for m in fused} == fused  # attention recording switched fused SDPA back


@pytest.mark.parametrize("name", METHODS)
def test_minmax_normalisation(name, request, images):
    attributor, _ = build(name, request, normalize="minmax")
    maps = attributor.attribute(images[:1], TARGET[:1])
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    for m in maps:
        if m.max() > m.min():
            assert m.min().item() == pytest.approx(0.0, abs=1e-6) and m.max().item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", METHODS)
def test_bad_inputs_raise_input_error(name, request, images):
    attributor, _ = build(name, request)
    nan = images[:1].clone()
    nan[0, 0, 3, 3] = float("nan")
    cases = [
        (images[0], TARGET[:1], "unsqueeze"),
        ((images[:1] * 255).to(torch.uint8), TARGET[:1], "float"),
        (nan, TARGET[:1], "NaN"),
        (images[:1], 6, "out of range"),
        (images[:1], -1, "out of range"),
        (images[:2], TARGET, "one class per sample"),
        (images[:1], torch.tensor([0.5]), "integer"),
    ]
    for inputs, target, fragment in cases:
        with pytest.raises(InputError, match=fragment):
            attributor.attribute(inputs, target)


@pytest.mark.parametrize("name", [n for n in METHODS if get_class(n).requires_vit])
def test_vit_only_methods_refuse_a_cnn(name, cnn):
    cls = cls_of(name)
    with pytest.raises(InputError, match="Vision Transformer"):
        create(name, cnn, **cls.smoke_options)


@pytest.mark.parametrize("name", METHODS)
def test_declared_hooks_keep_their_contract(name, request, images):
    """``provides_steps``, ``last_extras`` and ``extra_cost`` are declared (and documented) on the
    base class; every method's values follow the declaration."""
    from reproduce.attributors import Attributor

    for hook in ("last_extras", "extra_cost", "group_input", "finish_grouped", "use_memo"):
        assert getattr(Attributor, hook).__doc__
    attributor, _ = build(name, request)
    attributor.attribute(images[:1], TARGET[:1])
    extras = attributor.last_extras()
    # tensors are per sample; MoXI's greedy path (a PlayerPath) carries per-sample fields
    rows = [v.shape[0] if isinstance(v, torch.Tensor) else v.inputs.shape[0] for v in extras.values()]
    assert isinstance(extras, dict) and all(r == 1 for r in rows)
    if type(attributor).provides_steps:
        assert {"step_area", "step_score"} <= set(extras)
    assert set(attributor.extra_cost(1)) <= set(attributor.last_cost)
