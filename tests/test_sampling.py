"""Which test images an evaluation explains (issue 12.8, 11.3): N images that pass the samples filter,
at most k per class, in a seeded order; the first N for ``samples=all``; an empty filter is an error
that names it. A stub classifier with known predictions makes every expectation exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reproduce.errors import DataError
from reproduce.runtime.sampling import select_test_images

N, CLASSES = 60, 6


class Items(torch.utils.data.Dataset):
    """Image i is filled with i; its label is i % 6. ``__getitem__`` calls are counted."""

    def __init__(self):
        self.reads = 0

    def __len__(self):
        return N

    def __getitem__(self, i):
        self.reads += 1
        return {"image": torch.full((3, 4, 4), float(i)), "label": i % CLASSES, "index": i}


class Oracle(nn.Module):
    """Right on images whose index is a multiple of 3 (20 of 60), wrong (label + 1) on the others."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        i = x[:, 0, 0, 0].round().long()
        pred = torch.where(i % 3 == 0, i % CLASSES, (i + 1) % CLASSES)
        return nn.functional.one_hot(pred, CLASSES).float() + 0 * self.weight


def correct(i):
    return i % 3 == 0


def test_all_without_per_class_keeps_the_first_n_images_without_a_model_pass():
    model, data = Oracle(), Items()
    selection = select_test_images(model, data, samples="all", eval_images=10)
    assert selection.indices == list(range(10)) and model.calls == 0 and data.reads == 0
    assert select_test_images(model, data, samples="all").indices is None  # every image


@pytest.mark.parametrize("samples, keep", [("correct", correct), ("misclassified", lambda i: not correct(i))])
def test_n_images_that_pass_the_filter_chosen_after_it(samples, keep):
    selection = select_test_images(Oracle(), Items(), samples=samples, eval_images=8, seed=3, batch_size=7)
    assert len(selection.indices) == 8 and all(keep(i) for i in selection.indices)
    assert selection.indices == sorted(selection.indices)
    # The old rule (first N, then the filter) would have kept 3 of 8 correct ones: the filter comes first now.
    assert sum(correct(i) for i in range(8)) == 3
    again = select_test_images(Oracle(), Items(), samples=samples, eval_images=8, seed=3, batch_size=16)
    assert again.indices == selection.indices  # seeded, and independent of the batch size
    other = select_test_images(Oracle(), Items(), samples=samples, eval_images=8, seed=4)
    assert other.indices != selection.indices
    assert selection.record()["order"] == "seeded" and selection.record()["chosen"] == 8


def test_at_most_k_per_class_and_the_accuracy_of_the_visited_images():
    selection = select_test_images(Oracle(), Items(), samples="correct", eval_images=None, per_class=2, seed=0)
    labels = [i % CLASSES for i in selection.indices]
    # Correct images are 0, 3, 6, ...: labels 0 and 3 only (i % 3 == 0 and i % 6 in {0, 3}).
    assert sorted(set(labels)) == [0, 3] and all(labels.count(c) == 2 for c in (0, 3)) and len(labels) == 4
    assert selection.scanned == N and selection.accuracy == pytest.approx(100 * 20 / 60)
    capped = select_test_images(Oracle(), Items(), samples="all", eval_images=12, per_class=2, seed=0)
    assert sorted(i % CLASSES for i in capped.indices) == sorted(list(range(CLASSES)) * 2)


def test_the_pass_stops_once_enough_images_are_chosen():
    data = Items()
    select_test_images(Oracle(), data, samples="correct", eval_images=2, seed=0, batch_size=10)
    assert data.reads < N


class Never(Oracle):
    def forward(self, x):
        i = x[:, 0, 0, 0].round().long()
        return nn.functional.one_hot((i + 1) % CLASSES, CLASSES).float() + 0 * self.weight


def test_a_filter_that_keeps_nothing_is_an_error_naming_it():
    with pytest.raises(DataError, match=r"samples=correct kept 0 of 60 test images: the model classifies none "
                                        r"correctly \(accuracy 0.0 %\). Nothing to explain: train it longer or use samples=all"):
        select_test_images(Never(), Items(), samples="correct", eval_images=4)
    assert len(select_test_images(Never(), Items(), samples="all", eval_images=4).indices) == 4  # the fix works
    with pytest.raises(DataError, match=r"samples=misclassified kept 0 of 60 .* classifies every one correctly"):
        select_test_images(_Always(), Items(), samples="misclassified")


class _Always(Oracle):
    def forward(self, x):
        i = x[:, 0, 0, 0].round().long()
        return nn.functional.one_hot(i % CLASSES, CLASSES).float() + 0 * self.weight
