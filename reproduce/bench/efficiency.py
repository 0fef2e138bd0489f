"""``python -m reproduce.bench efficiency [--quick] [--models M1,M2] [--images 8] [--repeats 5] [--no-anchors]``

How close each method comes to its model's throughput: for every perturbation, set-game and
gradient attributor and every perturbation metric, ``efficiency = ideal seconds / seconds``, where
the ideal is what the passes it ran would cost at the model's best batched seconds per pass for
the same input: a forward of that image size, a forward+backward for passes that need the input
gradient, and for a ViT whose tokens are dropped a forward of that many tokens (measured per
sequence length). An efficiency of 1 means nothing but model passes at the best batch size;
below 1, time goes into Python loops, small batches, mask building or copies. Single-pass methods
(saliency, Grad-CAM) are left out: their batch is the caller's, so the batched limit does not
apply to them (``bench attributors`` compares Grad-CAM with pytorch-grad-cam).

Every method is timed ``--repeats`` times; before each run the forward throughput is probed again
and the ideal rescaled by the drift (load on a shared machine changes the limit too), and the
table reports the median efficiency with its inter-quartile range (IQR), the median seconds per
image and the passes per image. ``--anchors`` (default on) adds, in the same run, the ratios to
the anchors: pytorch-grad-cam and Captum (``bench attributors``), the official MoXI n^2 scheme
(``bench games``), Quantus and the Xplique loop (``bench metrics``), each timed interleaved (ours,
anchor, ours, anchor, ...) with the median ratio and its IQR.

Models: ``resnet10t_os16`` and ``vit_micro_p8`` at 64x64 (random weights: the cost does not depend
on them), ``--images`` images per call (the model's predictions as targets).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from typing import Any, Callable, Iterator

import torch
from torch import nn

from reproduce.attributors import create
from reproduce.bench._report import now, parse_suite_args, write_report
from reproduce.metrics import AttributionBatch, create_metric
from reproduce.models import ModelAdapter, count_passes, create_model, inference_state


# --- the physical limit ---------------------------------------------------------------------------
def _rate(run: Callable[[], Any], rows: int, seconds: float) -> float:
    """Seconds per row of ``run`` (``rows`` rows per call), the best of calls over ``seconds``."""
    run()  # warm-up: allocator, oneDNN kernels
    best, start = float("inf"), now()
    while best == float("inf") or now() - start < seconds:
        t = now()
        run()
        best = min(best, now() - t)
    return best / rows


class Limits:
    """Best batched seconds per row: forward, forward+backward (input gradient), and per token count
    for a ViT (``forward_kept_tokens`` on ``length`` patch tokens), at the best batch size."""

    def __init__(self, model: nn.Module, size: int, batch_sizes: list[int], seconds: float):
        self.model, self.size, self.seconds = model, size, seconds
        self.adapter = ModelAdapter(model)
        dev = next(model.parameters()).device
        inputs = {bs: torch.randn(bs, 3, size, size, device=dev) for bs in batch_sizes}
        # the best over batch sizes and memory formats (channels-last is often faster for CNNs)
        formats = [torch.contiguous_format] + ([] if self.adapter.is_vit else [torch.channels_last])
        with torch.no_grad():
            rates = {(bs, fmt): _rate(lambda x=inputs[bs].contiguous(memory_format=fmt): model(x), bs, seconds)
                     for bs in batch_sizes for fmt in formats}
        (self.batch, best_format), self.forward = min(rates.items(), key=lambda item: item[1])
        x = self.probe_input = inputs[self.batch].contiguous(memory_format=best_format)

        def gradient():
            xg = x.detach().requires_grad_(True)
            with torch.enable_grad():
                torch.autograd.grad(model(xg)[:, 0].sum(), xg)

        self.gradient = float("inf")
        for fmt in formats:
            for bs in sorted({self.batch, 64, max(batch_sizes)} & set(batch_sizes)):
                x = inputs[bs].contiguous(memory_format=fmt)
                self.gradient = min(self.gradient, _rate(gradient, bs, seconds))
        x = self.probe_input
        self.tokens: dict[int, float] = {}
        self.embed = 0.0  # a ViT's patch + position embedding per image (token dropping runs it once)
        if self.adapter.is_vit:
            gh, gw = self.adapter.token_grid
            n = gh * gw
            with torch.no_grad():
                self.embed = _rate(lambda: self.adapter.embed_tokens(x), self.batch, seconds / 4)
            tokens = self.adapter.embed_tokens(x[:1]).expand(self.batch, -1, -1)
            lengths = sorted({1, 2, 4, n // 8, n // 4, n // 2, 3 * n // 4, n} - {0})
            with torch.no_grad():
                for k in lengths:
                    keep = torch.arange(k, device=dev).expand(self.batch, 1, k)
                    self.tokens[k + self.adapter.num_prefix_tokens] = _rate(
                        lambda keep=keep: self.adapter.forward_kept_tokens(tokens, keep), self.batch, seconds / 4)
        self.scale = 1.0

    def probe(self) -> None:
        """Re-measure the forward limit and rescale every limit by the drift."""
        with torch.no_grad():
            now = _rate(lambda: self.model(self.probe_input), self.batch, self.seconds / 2)
        self.scale = now / self.forward

    def token_row(self, length: int) -> float:
        """Seconds per sequence of ``length`` tokens (linear between measured lengths); a full-length
        sequence is a plain forward (patch embedding included)."""
        if length == max(self.tokens, default=-1):
            return self.forward - self.embed  # the embedding is costed by its own hook
        known = sorted(self.tokens)
        lo = max((k for k in known if k <= length), default=known[0])
        hi = min((k for k in known if k >= length), default=known[-1])
        if lo == hi:
            return self.tokens[lo]
        w = (length - lo) / (hi - lo)
        return (1 - w) * self.tokens[lo] + w * self.tokens[hi]


@contextlib.contextmanager
def ideal_seconds(limits: Limits) -> Iterator[dict[str, float]]:
    """The ideal cost of every pass run inside. A ViT: a pre-hook on its blocks sees every pass
    (token-dropped, through ``forward_features`` or not), costed by sequence length, or at the
    gradient limit when the tokens need a gradient; one on its patch embedding adds the embedding
    of every image it embeds (once per image for token dropping, once per pass otherwise). Other models: every pass is of the image size,
    so the pass counter (which also sees passes that bypass ``model.forward``) gives forwards at
    the forward limit and backwards at the gradient limit."""
    acc = {"seconds": 0.0}
    model = limits.model
    if not limits.adapter.is_vit:
        with count_passes(model) as counter:
            yield acc
        grad = counter.backward
        acc["seconds"] = ((counter.forward - grad) * limits.forward + grad * limits.gradient) * limits.scale
        return

    def needs_grad(t: torch.Tensor) -> bool:
        return torch.is_grad_enabled() and t.requires_grad

    def blocks(_m, args):
        rows, length = args[0].shape[:2]
        acc["seconds"] += rows * (limits.gradient if needs_grad(args[0]) else limits.token_row(length)) * limits.scale

    def embedding(_m, args):  # a gradient pass is costed whole by the blocks hook
        if not needs_grad(args[0]):
            acc["seconds"] += args[0].shape[0] * limits.embed * limits.scale

    handles = [model.blocks.register_forward_pre_hook(blocks), model.patch_embed.register_forward_pre_hook(embedding)]
    try:
        yield acc
    finally:
        for h in handles:
            h.remove()


# --- methods and metrics --------------------------------------------------------------------------
def attributor_cases(quick: bool) -> list[tuple[str, str, dict[str, Any]]]:
    few = quick
    return [
        ("occlusion", "occlusion", {"window": 8, "stride": 8 if few else 4}),
        ("rise", "rise", {"n_masks": 64 if few else 500}),
        ("scorecam", "scorecam", {}),
        ("hsic", "hsic", {"nb_design": 64 if few else 500}),
        ("shapley_sampling", "shapley_sampling", {"grid": 4, "n_rounds": 2 if few else 20}),
        ("moxi_insertion (budget 8)", "moxi_insertion", {"budget": 8}),
        ("moxi_deletion (budget 8)", "moxi_deletion", {"budget": 8}),
        ("moxi_minus", "moxi_minus", {}),
        ("smdl (patch 4x4)", "smdl", {"division": "patch", "grid": 4}),
        ("smdl lazy (patch 4x4)", "smdl", {"division": "patch", "grid": 4, "search": "lazy"}),
        ("integrated_gradients", "integrated_gradients", {"steps": 8 if few else 32}),
        ("smoothgrad", "smoothgrad", {"n_samples": 8 if few else 32}),
    ]


def metric_cases(adapter: ModelAdapter, quick: bool) -> list[tuple[str, dict[str, Any]]]:
    grid = {} if adapter.is_vit else {"grid": 8}
    steps = 10 if quick else 50
    return [
        ("insertion", {"steps": steps}),
        ("deletion", {"steps": steps}),
        ("patch_insertion", grid),
        ("patch_deletion", grid),
        ("fidelity", {}),
        ("accuracy_at_budget", {**grid, "budgets": (0.04, 0.10)}),
        ("average_highest_confidence", {"steps": steps}),
    ]


def repeated(limits: Limits, run: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """Median/IQR efficiency and median seconds of ``run`` over ``repeats`` runs."""
    effs, secs, counts = [], [], []
    for _ in range(repeats):
        limits.probe()
        with ideal_seconds(limits) as ideal, count_passes(limits.model) as counter:
            start = now()
            run()
            seconds = now() - start
        effs.append(ideal["seconds"] / seconds)
        secs.append(seconds)
        counts.append(counter.forward)
    q = statistics.quantiles(effs, n=4) if len(effs) > 1 else [effs[0]] * 3
    return {"efficiency": statistics.median(effs), "efficiency_iqr": q[2] - q[0], "seconds": statistics.median(secs),
            "passes": statistics.median(counts)}


def efficiency_rows(name: str, size: int, args) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, img_size=size).eval()
    adapter = ModelAdapter(model)
    sizes = [32, 128, 256] if args.quick else [16, 32, 64, 128, 256, 512]
    with inference_state(model):
        limits = Limits(model, size, sizes, seconds=0.3 if args.quick else 1.0)
        x = torch.randn(args.images, 3, size, size)
        with torch.no_grad():
            target = model(x).argmax(1)
        common = {"model": name, "size": size, "images": args.images, "best_batch": limits.batch,
                  "forward_ms_per_row": limits.forward * 1e3, "gradient_ms_per_row": limits.gradient * 1e3}
        print(f"[efficiency] {name}: {limits.forward * 1e3:.3f} ms/forward row, {limits.gradient * 1e3:.3f} ms/gradient row "
              f"at batch {limits.batch}", flush=True)
        rows = []
        for label, method, options in attributor_cases(args.quick):
            attributor = create(method, model, **options)
            attributor.attribute(x[:1], target[:1])  # warm-up
            res = repeated(limits, lambda: attributor.attribute(x, target), args.repeats)
            rows.append(_row(common, "attributor", label, options, res, args.images))
            print(f"[efficiency]   {label}: {res['efficiency']:.2f}", flush=True)
        maps = create("gradcam", model).attribute(x, target).detach()  # a map to score
        batch = AttributionBatch(images=x, labels=target, targets=target, maps=maps)
        for metric_name, options in metric_cases(adapter, args.quick):
            metric = create_metric(metric_name, model, **options)

            def run(metric=metric):
                metric.reset()
                metric.update(batch)

            res = repeated(limits, run, args.repeats)
            rows.append(_row(common, "metric", metric_name, options, res, args.images))
            print(f"[efficiency]   {metric_name}: {res['efficiency']:.2f}", flush=True)
    return rows


def _row(common: dict, kind: str, label: str, options: dict, res: dict, images: int) -> dict[str, Any]:
    return {**common, "kind": kind, "method": label, "options": ", ".join(f"{k}={v}" for k, v in options.items()),
            "passes_per_image": res["passes"] / images, "seconds_per_image": res["seconds"] / images,
            "efficiency": res["efficiency"], "efficiency_iqr": res["efficiency_iqr"], "met": res["efficiency"] >= 0.85}


# --- anchors --------------------------------------------------------------------------------------
def anchor_rows(name: str, size: int, args) -> list[dict[str, Any]]:
    """The other suites' anchor comparisons, run here with interleaved repeats (median, IQR)."""
    from reproduce.bench import attributors as bench_attributors
    from reproduce.bench import games as bench_games
    from reproduce.bench import metrics as bench_metrics

    ns = argparse.Namespace(repeat=args.repeats, steps=8 if args.quick else 32, samples=8 if args.quick else 32, rows=64,
                            occlusion_rows=256, window=None, stride=None, segmenter="slic", images=args.images)
    torch.manual_seed(0)
    model = create_model(name, num_classes=6, img_size=size).eval()
    adapter = ModelAdapter(model)
    x = adapter.data_config.normalize(bench_attributors.photo_batch(args.images, size))
    with torch.no_grad():
        target = model(x).argmax(-1)
    setting = {"model": name, "size": size, "images": args.images, "kind": "anchor"}
    rows = bench_attributors.speed_rows(setting, model, x, target, ns) + bench_attributors.overhead_rows(setting, model, x, target, ns)
    rows += bench_games.official_rows(setting, model, x[:2], target[:2], grid=adapter.token_grid[0] if adapter.is_vit else 8,
                                      repeats=args.repeats)
    rows += bench_metrics.curve_rows(model, x, bench_metrics.random_maps(len(x), size), target, steps=16 if args.quick else 64,
                                     max_batch=256, repeat=args.repeats, tolerance=1e-4, common=setting)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reproduce.bench efficiency", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 images, 3 repeats, fewer samples: a smoke run")
    parser.add_argument("--models", default="resnet10t_os16,vit_micro_p8")
    parser.add_argument("--images", type=int, default=None, help="images per call (default 8, quick 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per method (default 5, quick 3)")
    parser.add_argument("--no-anchors", action="store_true", help="skip the anchor comparisons")
    parser.add_argument("--threads", type=int, default=None)
    args = parse_suite_args(parser, argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.images = args.images or (2 if args.quick else 8)
    args.repeats = args.repeats or (3 if args.quick else 5)
    rows = []
    for name in args.models.split(","):
        rows += efficiency_rows(name, 64, args)
        if not args.no_anchors:
            rows += anchor_rows(name, 64, args)
    below = [f"{r['model']}:{r['method']}" for r in rows if r.get("kind") in ("attributor", "metric") and not r["met"]]
    write_report("efficiency", rows, out_dir=args.out, threads=torch.get_num_threads(), below_0_85=below)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
