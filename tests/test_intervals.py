"""Per-image metric states and the bootstrap intervals built on them.

- every metric that keeps per-image states reproduces ``compute()`` exactly from the sums of any
  subset of its rows (so a bootstrap resample is scored by the reported statistic itself, pooled PxAP
  included), and its rows are DDP-correct (two merged processes == one);
- the bootstrap interval of a mean of normal samples agrees with mean +- 1.96 s / sqrt(n);
- paired intervals exclude zero for rows that differ by construction and cover it for rows that do
  not; rows on different images are paired on their intersection and say so;
- two runs give identical intervals; fewer than 10 images give none; a crossed seed bootstrap is
  wider than one seed when seeds disagree.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

import reproduce.metrics as M
from reproduce.errors import InputError
from reproduce.runtime.intervals import MIN_IMAGES, PerImageStates, cell_interval, paired_interval
from test_metrics_api import CASES, MODEL, TinyCNN, explain, make_batch, rows


def _tracked(name):
    return M.create_metric(name, MODEL, **CASES[name])


TRACKED = sorted(n for n in CASES if _tracked(n)._per_image_names)


def test_every_metric_keeps_per_image_states():
    assert set(CASES) == set(TRACKED)


def _scalars(metric, out):
    """The scalars of ``compute()`` that per-image states reproduce (all but ``no_interval``)."""
    return {k: float(v) for k, v in out.items() if v.dim() == 0 and k not in metric.no_interval}


@pytest.mark.parametrize("name", TRACKED)
def test_statistic_of_any_subset_of_rows_is_what_compute_reports_on_it(name):
    """On the metric itself and on the model-free instance a table builds from the stored options
    and config (so no scalar may read a state that is not tracked), one by one and batched."""
    batch = make_batch(6)
    metric = _tracked(name)
    metric.update(batch, explain=explain)
    states = metric.per_image_states()
    assert states["indices"].tolist() == batch.indices.tolist()
    full = _scalars(metric, metric.compute())
    sums = {k: v.sum(0) for k, v in states["states"].items()}
    subset = [1, 3, 4]
    alone = _tracked(name)
    alone.update(rows(batch, slice(1, 2)), explain=explain)
    alone.update(rows(batch, slice(3, 5)), explain=explain)
    expected = _scalars(alone, alone.compute())
    picked = {k: v[subset].sum(0) for k, v in states["states"].items()}
    stored = json.loads(json.dumps(metric.config()))
    rebuilt = type(metric).for_statistic(json.loads(json.dumps(CASES[name], default=lambda m: "@other")), stored)
    for judge in (metric, rebuilt):
        assert judge.statistic(sums) == pytest.approx(full, rel=1e-12, abs=1e-12)
        assert judge.statistic(picked) == pytest.approx(expected, rel=1e-12, abs=1e-12)
        batched = judge.statistic_batch({k: torch.stack([sums[k], picked[k]]) for k in sums})  # vectorised or not
        assert {k: float(v[0]) for k, v in batched.items()} == pytest.approx(full, rel=1e-12, abs=1e-12)
        assert {k: float(v[1]) for k, v in batched.items()} == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert _scalars(metric, metric.compute()) == full  # nothing changed
    record = metric.per_image_record({"name": name})
    assert record["no_interval"] == metric.no_interval if metric.no_interval else "no_interval" not in record
    bytes_per_image = sum(8 * v[0].numel() for v in states["states"].values())
    assert bytes_per_image <= 2048, bytes_per_image  # a few numbers per image, never per-pixel data


def test_iou_auc_per_image_states_equal_the_pooled_survival_auc_on_random_inputs():
    """The old state (an IoU histogram per threshold, the area under the pooled survival curve) and
    the per-image survival AUCs give the same IoU-AUC, whatever the IoUs (ties on grid points, 0, 1)."""
    from reproduce.metrics.localization import iou_grid, iou_survival_auc

    g = torch.Generator().manual_seed(0)
    for n in (1, 20, 20000):
        grid = iou_grid(1 / n)
        ious = torch.rand(50, 3, generator=g, dtype=torch.float64)
        ious[:5] = torch.randint(0, n + 1, (5, 3), generator=g) / n  # exactly on grid points, 0 and 1 included
        ious[5, 0], ious[6, 1] = 0.0, 1.0
        hist = torch.stack([torch.bincount(torch.bucketize(ious[:, t].contiguous(), grid, right=True) - 1, minlength=n + 1)
                            for t in range(3)]).double()
        survival = hist.flip(1).cumsum(1).flip(1) / hist.sum(1, keepdim=True)
        pooled = torch.trapezoid(survival, grid, dim=1)
        assert torch.allclose(iou_survival_auc(ious, grid).mean(0), pooled, rtol=1e-12, atol=1e-12), n


@pytest.mark.parametrize("variant", ["comet", "standard"])
def test_batched_pooled_pxap_equals_the_pooled_pxap(variant):
    from reproduce.metrics.pxap import pxap_batch, pxap_from_histograms

    g = torch.Generator().manual_seed(0)
    hist = torch.randint(0, 5, (6, 2, 21), generator=g).double()
    hist[2, 0, 1:] = 0  # no positive pixel above the cut-off: undefined
    hist[3, 1] = 0  # no negative pixel
    got = pxap_batch(hist, variant)
    for r in range(hist.shape[0]):
        try:
            want = float(pxap_from_histograms(hist[r], variant)[0])
        except InputError:
            want = float("nan")
        assert float(got[r]) == pytest.approx(want, rel=1e-12, nan_ok=True), r


@pytest.mark.parametrize("name", TRACKED)
def test_per_image_rows_of_two_merged_processes_equal_one_process(name):
    batch = make_batch(6)
    one, first, second = _tracked(name), _tracked(name), _tracked(name)
    one.update(batch, explain=explain)
    second.update(rows(batch, slice(3, 6)), explain=explain)  # the later images reach the merge first
    first.update(rows(batch, slice(0, 3)), explain=explain)
    second.merge_state(first)
    a, b = one.per_image_states(), second.per_image_states()
    assert torch.equal(a["indices"], b["indices"])
    for key in a["states"]:
        assert torch.allclose(a["states"][key], b["states"][key], rtol=0, atol=1e-12), key


def test_repeated_images_and_misaligned_rows_are_refused():
    metric = _tracked("cost")
    batch = make_batch(4)
    metric.update(batch)
    metric.update(batch)
    with pytest.raises(InputError, match="more than once"):
        metric.per_image_states()
    with pytest.raises(InputError, match="exactly the tracked states"):
        metric._accumulate_rows({"totals": torch.zeros(2, 3)}, torch.arange(2))
    assert _tracked("cost").per_image_states()["indices"].numel() == 0  # nothing seen: no rows, no error


def _mean_result(values, indices=None, label="m"):
    values = np.asarray(values, dtype=float)
    indices = list(range(len(values))) if indices is None else list(indices)
    return {"per_image": {label: {"indices": indices, "states": {"v": values.tolist(), "count": [1.0] * len(values)},
                                  "statistic": "mean"}}}


def _states(values, indices=None):
    return PerImageStates.from_result(_mean_result(values, indices), "m")


def test_interval_of_a_mean_of_normal_samples_matches_the_closed_form():
    x = np.random.default_rng(3).normal(5.0, 2.0, size=400)
    interval = cell_interval([_states(x)], "m/v")
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    assert interval.estimate == pytest.approx(x.mean())
    assert interval.low == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert interval.high == pytest.approx(x.mean() + half, abs=0.1 * half)
    assert interval.method.startswith("BCa")


def test_two_runs_give_identical_intervals():
    x = np.random.default_rng(4).exponential(size=50)
    assert cell_interval([_states(x)], "m/v") == cell_interval([_states(x)], "m/v")


def test_fewer_than_ten_images_give_no_interval():
    interval = cell_interval([_states(np.arange(MIN_IMAGES - 1.0))], "m/v")
    assert not interval.defined and interval.estimate == pytest.approx(4.0)
    assert "fewer than 10 images" in interval.note


def test_paired_interval_separates_rows_that_differ_and_covers_zero_for_rows_that_do_not():
    rng = np.random.default_rng(5)
    base = rng.normal(0, 3, size=60)  # large between-image spread: unpaired intervals would overlap
    shifted = base + 0.5 + rng.normal(0, 0.2, size=60)
    differ = paired_interval([_states(shifted)], [_states(base)], "m/v")
    assert differ.low > 0 and differ.low < 0.5 < differ.high
    same = paired_interval([_states(base + rng.normal(0, 0.2, size=60))], [_states(base)], "m/v")
    assert same.low < 0 < same.high
    assert not (cell_interval([_states(shifted)], "m/v").low > cell_interval([_states(base)], "m/v").high)


def test_rows_on_different_images_are_paired_on_their_intersection():
    a = _states(np.arange(30.0) + 1, indices=range(30))
    b = _states(np.arange(20.0), indices=range(10, 30))
    interval = paired_interval([a], [b], "m/v")
    assert interval.n_images == 20 and "paired on the 20 images" in interval.note
    assert interval.estimate == pytest.approx(11.0)  # a's images 10..29 score 11..30, b's 0..19
    apart = paired_interval([_states([1.0] * 12, range(12))], [_states([1.0] * 12, range(50, 62))], "m/v")
    assert not apart.defined and "share no image" in apart.note


def test_relative_effect_and_constant_comparison():
    a, b = _states(np.full(20, 3.0) + np.linspace(0, 1, 20)), _states(np.full(20, 2.0))
    assert paired_interval([a], [b], "m/v", effect="relative").estimate == pytest.approx((3.5 / 2 - 1) * 100)
    against = paired_interval([a], None, "m/v", constant=3.0)
    assert against.estimate == pytest.approx(0.5) and against.low > 0


def test_crossed_bootstrap_covers_the_seeds():
    rng = np.random.default_rng(6)
    x = rng.normal(0, 1, size=80)
    one = cell_interval([_states(x)], "m/v")
    seeds = cell_interval([_states(x), _states(x + 2.0), _states(x - 2.0)], "m/v")
    assert seeds.n_seeds == 3 and seeds.estimate == pytest.approx(one.estimate)
    assert seeds.high - seeds.low > 2 * (one.high - one.low)


def test_pooled_pxap_metric_end_to_end_from_a_stored_result(tmp_path):
    """A hand-written cell file with robustness (pooled PxAP) states: the stored statistic is the
    reported number, the interval brackets it, and the .npz form reads the same."""
    metric = M.create_metric("robustness", variant="standard", bins=10)
    for seed in range(4):
        batch = make_batch(6, seed=seed)
        batch.indices = batch.indices + 6 * seed  # distinct images, as a real test set
        metric.update(batch, explain=explain)
    record = metric.per_image_record({"name": "robustness", "variant": "standard", "bins": 10})
    result = json.loads(json.dumps({"metrics": {"rob": metric.config()}, "per_image": {"rob": record}}))
    states = PerImageStates.from_result(result, "rob")
    reported = float(metric.compute()["pxap"])
    assert states.estimate("rob/pxap") == pytest.approx(reported, rel=1e-12)
    interval = cell_interval([states], "rob/pxap")
    assert interval.defined and interval.low <= reported <= interval.high and interval.n_images == 24
    arrays = {"rob/indices": np.asarray(record["indices"])}
    arrays.update({f"rob/{k}": np.asarray(v) for k, v in record["states"].items()})
    np.savez(tmp_path / "per_image.npz", **arrays)
    result["per_image"]["rob"]["states"] = "per_image.npz"
    from_file = PerImageStates.from_result(result, "rob", cell_dir=str(tmp_path))
    assert cell_interval([from_file], "rob/pxap") == interval


# --- tables ---------------------------------------------------------------------------------------
def _cost_cell(seconds, forwards, start=0):
    """A cell file whose cost metric kept per-image states (seconds, forward, backward per image)."""
    seconds, forwards = np.asarray(seconds, float), np.asarray(forwards, float)
    n = seconds.size
    totals = np.stack([seconds, forwards, np.zeros(n)], 1)
    return {
        "scalars": {"cost/seconds_per_image": float(seconds.mean()), "cost/forward_per_image": float(forwards.mean())},
        "directions": {"cost/seconds_per_image": "lower", "cost/forward_per_image": "lower"},
        "metrics": {"cost": {"metric": "cost"}}, "evaluated_images": n,
        "per_image": {"cost": {"indices": list(range(start, start + n)), "states": {"totals": totals.tolist(), "count": [1.0] * n},
                               "options": {"name": "cost"}, "statistic": "metric"}},
    }


def _cost_spec():
    from reproduce.runtime.table_spec import TableSpec

    return TableSpec.from_config({
        "name": "toyci", "seeds": [0], "models": {"m": {"train": ["experiment=quickstart_cnn"]}},
        "metrics": {"cost": {"name": "cost"}},
        "rows": [{"label": lab, "model": "m", "attributor": "saliency"} for lab in ("A", "B", "C", "D")],
        "columns": [{"label": "Time (ms)", "key": "cost/seconds_per_image", "scale": 1000, "digits": 1},
                    {"label": "Passes", "key": "cost/forward_per_image", "digits": 0}],
    })


def test_table_cells_get_intervals_and_best_is_bold_only_where_significant(tmp_path):
    from reproduce.atomic import atomic_write_json
    from reproduce.runtime.table_assembly import assemble, cell_result_path

    spec, root = _cost_spec(), str(tmp_path)
    rng = np.random.default_rng(7)
    base = rng.uniform(0.01, 0.05, size=40)
    cells = {"a-s0": _cost_cell(base, np.full(40, 10.0)),                                  # fastest
             "b-s0": _cost_cell(base + 0.004 + rng.normal(0, 5e-4, 40), np.full(40, 10.0)),  # clearly slower
             "c-s0": _cost_cell(base + rng.normal(0, 5e-4, 40), np.full(40, 12.0)),          # tied with A
             "d-s0": _cost_cell(base[:8], np.full(8, 12.0))}                                  # 8 images: no CI
    for key, cell in cells.items():
        atomic_write_json(cell_result_path(root, spec, key), cell)
    out = assemble(root, spec)
    assert sorted(out.best["Time (ms)"]) == ["A", "C"]  # A beats B significantly; C is a tie
    assert out.best["Passes"] == ["A", "B"]  # identical per-image passes: the difference is exactly 0
    md = out.markdown
    assert " ± " in md.split("| A | m | ")[1].split("|")[0] and "(n = 8: no CI)" in md and "95 % bootstrap" in md
    with open(out.csv_path) as f:
        table = {r["method"]: r for r in csv.DictReader(f)}
    assert float(table["A"]["Time (ms) lo"]) < float(table["A"]["Time (ms)"]) < float(table["A"]["Time (ms) hi"])
    assert table["A"]["Time (ms) n images"] == "40" and table["D"]["Time (ms) lo"] == ""
    again = assemble(root, spec)
    assert again.markdown == out.markdown and open(again.csv_path).read() == open(out.csv_path).read()


def test_cells_without_per_image_states_keep_todays_table(tmp_path):
    from reproduce.atomic import atomic_write_json
    from reproduce.runtime.table_assembly import assemble, cell_result_path

    spec, root = _cost_spec(), str(tmp_path)
    for key, value in (("a-s0", 0.01), ("b-s0", 0.01), ("c-s0", 0.02), ("d-s0", 0.03)):
        cell = _cost_cell(np.full(20, value), np.full(20, 5.0))
        del cell["per_image"]
        atomic_write_json(cell_result_path(root, spec, key), cell)
    out = assemble(root, spec)
    assert out.best["Time (ms)"] == ["A", "B"] and "±" not in out.markdown and "bootstrap" not in out.markdown
    assert "Time (ms) lo" not in open(out.csv_path).read()


# --- real DDP (two gloo processes), one of them without any image ---------------------------------
def _ddp_worker(rank: int, world: int, port: int, out_path: str, split: int) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        batch = make_batch(6)
        out = {}
        for name in ("robustness", "cost"):
            metric = _tracked(name)
            if rank == 0 or split < 6:
                metric.update(rows(batch, slice(0, split) if rank == 0 else slice(split, 6)), explain=explain)
            states = metric.per_image_states()  # collective
            out[name] = {"indices": states["indices"].tolist(), **{k: v.tolist() for k, v in states["states"].items()}}
        if rank == 0:
            torch.save(out, out_path)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("split", [2, 6])  # 6: the second process sees no image at all
def test_per_image_states_gather_across_ddp_processes(tmp_path, split):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, port, str(out), split), nprocs=2, join=True)
    gathered = torch.load(out)
    for name in ("robustness", "cost"):
        metric = _tracked(name)
        metric.update(make_batch(6), explain=explain)
        states = metric.per_image_states()
        assert gathered[name]["indices"] == states["indices"].tolist()
        for key, value in states["states"].items():
            assert torch.allclose(torch.tensor(gathered[name][key], dtype=torch.float64), value, atol=1e-12), (name, key)


def test_a_scalar_that_is_no_function_of_per_image_sums_gets_no_interval_and_says_why():
    from reproduce.runtime.intervals import row_states

    metric = M.create_metric("mege", MODEL, others=[TinyCNN(0)])
    for seed in range(3):
        batch = make_batch(6, seed=seed)
        batch.indices = batch.indices + 6 * seed
        metric.update(batch, explain=explain)
    record = metric.per_image_record({"name": "mege", "others": ["@b"]})
    result = json.loads(json.dumps({"metrics": {"mege": metric.config()}, "per_image": {"mege": record}}))
    states, why = row_states([result], "mege/reco")
    assert states is None and "quantiles of the pooled distances" in why
    states, why = row_states([result], "mege/mege")
    assert why == "" and states[0].estimate("mege/mege") == pytest.approx(float(metric.compute()["mege"]), rel=1e-12)
