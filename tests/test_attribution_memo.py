"""The attribution memo: a table's super-pixel rows share model B's base attribution before grouping."""

from __future__ import annotations

import copy

import pytest
import torch

from reproduce.attributors import create
from reproduce.attributors.memo import AttributionMemo, weights_digest
from reproduce.attributors.segmenters import SegmentationCache
from reproduce.lit.evaluation import AttributionEvaluation

TARGET = torch.tensor([1, 4])
# batch_size 2 on 2 images: one noisy copy per pass, so the memo's finish must sum the passes in order.
BASES = [
    ("saliency", {}),
    ("integrated_gradients", {"steps": 4}),
    ("smoothgrad", {"n_samples": 3, "batch_size": 2}),
    ("sparsified_smoothgrad", {"n_samples": 3, "batch_size": 2, "tau": 0.2, "saturate": 0.05}),
]


def superpixel(model, base, options, segmenter, memo=None, reduce="sum"):
    attributor = create("superpixel", model, base=base, base_options=options, segmenter=segmenter, reduce=reduce,
                        cache=SegmentationCache())
    attributor.use_memo(memo)
    return attributor


@pytest.mark.parametrize("base, options", BASES)
def test_memoised_maps_equal_fresh_ones_and_skip_the_base_method(cnn, images, base, options):
    x, memo = images[:2], AttributionMemo()
    rows = [("slic", "sum"), ("watershed", "sum"), ("slic", "mean"), ("pixel", "sum")]  # a table's segmenter rows
    for k, (segmenter, reduce) in enumerate(rows):
        fresh = superpixel(cnn, base, options, segmenter, reduce=reduce)
        shared = superpixel(cnn, base, options, segmenter, memo, reduce=reduce)
        expected, got = fresh.attribute(x, TARGET), shared.attribute(x, TARGET)
        assert torch.equal(got, expected), (segmenter, reduce)
        # the first row computes the base (same passes as without the memo); the others read it
        assert shared.last_cost["forward_per_image"] == (fresh.last_cost["forward_per_image"] if k == 0 else 0)
    assert (memo.misses, memo.hits) == (1, len(rows) - 1)


def test_memo_keys_on_base_options_weights_images_and_targets(cnn, images):
    memo = AttributionMemo()
    x = images[:2]

    def run(model, inputs, target, steps=4):
        return superpixel(model, "integrated_gradients", {"steps": steps}, "watershed", memo).attribute(inputs, target)

    first = run(cnn, x, TARGET)
    twin = copy.deepcopy(cnn)  # the same weights in another object (each table cell loads its models afresh)
    assert torch.equal(run(twin, x, TARGET), first) and memo.hits == 1
    run(cnn, x, TARGET, steps=5)
    run(cnn, x, torch.tensor([1, 3]))
    run(cnn, images[1:3], TARGET)
    with torch.no_grad():
        next(twin.parameters()).add_(1e-3)  # in place, as a sanity check randomises a layer
    run(twin, x, TARGET)
    assert (memo.hits, memo.misses) == (1, 5)


def test_weights_digest_sees_every_value_and_buffer(cnn):
    twin = copy.deepcopy(cnn)
    assert weights_digest(twin) == weights_digest(cnn)
    with torch.no_grad():
        list(twin.parameters())[-1].view(-1)[-1] += 1.0  # the last value of the last tensor
    assert weights_digest(twin) != weights_digest(cnn)
    twin = copy.deepcopy(cnn)
    bn = next(m for m in twin.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.num_batches_tracked += 1  # a 0-dim integer buffer
    assert weights_digest(twin) != weights_digest(cnn)


def test_memo_drops_its_oldest_entries_beyond_its_size(cnn, images):
    memo = AttributionMemo(max_bytes=3 * 64 * 64 * 4)  # room for one entry's images (3 x 64 x 64 floats)...
    x = images[:1]
    for target in range(3):
        memo.put("k", cnn, x, torch.tensor([target]), torch.zeros(64, 64))
    assert len(memo.entries) == 1 and memo.get("k", cnn, x, torch.tensor([2])) is not None
    assert memo.get("k", cnn, x, torch.tensor([0])) is None


def test_evaluation_gives_the_memo_to_reference_models_only(cnn, images):
    """Model B's maps come from the memo in a second row; the explained model's map (timed by the
    cost column) is always computed."""
    memo, model_b, x = AttributionMemo(), copy.deepcopy(cnn), images[:2]
    with torch.no_grad():
        next(model_b.parameters()).mul_(0.9)

    def row(segmenter):
        return AttributionEvaluation(cnn, "superpixel", {"segmenter": segmenter, "base_options": {"steps": 4}},
                                     metrics={}, reference_models={"b": model_b}, reference_memo=memo)

    first, second = row("slic"), row("watershed")
    a1, b1 = first.explain(x, TARGET), first.explain(x, TARGET, model=model_b)
    assert (memo.hits, memo.misses) == (0, 1)  # only model B went through the memo
    b2 = second.explain(x, TARGET, model=model_b)
    assert memo.hits == 1
    fresh_b2 = superpixel(model_b, "integrated_gradients", {"steps": 4}, "watershed").attribute(x, TARGET)
    assert torch.equal(b2, fresh_b2) and not torch.equal(b1, b2)
    second.explain(x, TARGET)
    assert (memo.hits, memo.misses) == (1, 1) and second.attributor.last_cost["forward_per_image"] > 0
    assert not torch.equal(a1, b1)
