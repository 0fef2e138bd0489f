"""``python -m reproduce.bench games [--quick] [--large] [--threads N] [--images B] [--repeats R]``

Set-game attributors (MoXI, MoXI(-), sampled Shapley, SMDL) against the physical limit of their
model: the images/s of plain batched forwards at the best batch size. These methods are nothing
but forward passes, so ``efficiency = passes/image x images/s / best forward images/s`` is the
fraction of that limit they reach. Token dropping runs shorter sequences, which are cheaper: for
ViTs ``flop_passes`` counts a pass of L tokens as FLOPs(L) / FLOPs(full length) (per block
24 L D^2 + 4 L^2 D, the linear layers and the two attention products) and ``flop_efficiency``
uses it. The limit is re-measured (at the best batch size) next to every method, and
``--repeats`` keeps each method's fastest run, because other load on a shared machine only ever
slows a run down.

MoXI is also run the way the official code does it (``moxi_official`` rows, re-implemented
below): one image at a time, all n candidates at every step including the chosen ones (n^2
passes; a chosen candidate's token is duplicated, as in the official code, and its row discarded).

Models: ``vit_micro_p8`` at 64x64 (8x8 token grid = players, token dropping), ``resnet10t_os16``
at 64x64 (8x8 players, fill); ``--large`` adds ``vit_tiny_patch16_224`` (14x14 players, MoXI only:
19,305 vs 38,416 passes per image). Random weights: the cost does not depend on them.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from typing import Any, Iterator

import torch
from torch import nn

from reproduce.attributors import create
from reproduce.attributors.games import reward_from_logits
from reproduce.bench._report import now, parse_suite_args, write_report
from reproduce.models import ModelAdapter, Partition, count_passes, create_model, inference_state


def vit_flops(tokens: int, dim: int, depth: int) -> float:
    return depth * (24 * tokens * dim * dim + 4 * tokens * tokens * dim)


@contextlib.contextmanager
def flop_passes(model: nn.Module) -> Iterator[dict[str, float]]:
    """Full-length-equivalent passes through a ViT's blocks (plain forward count for other models)."""
    adapter = ModelAdapter(model)
    acc = {"passes": 0.0}
    if not adapter.is_vit:
        with count_passes(model) as counter:
            yield acc
        acc["passes"] = float(counter.forward)
        return
    gh, gw = adapter.token_grid
    dim, depth = model.embed_dim, len(model.blocks)
    full = vit_flops(gh * gw + adapter.num_prefix_tokens, dim, depth)

    def hook(_m, args):
        n, length = args[0].shape[:2]
        acc["passes"] += n * vit_flops(length, dim, depth) / full

    handle = model.blocks.register_forward_pre_hook(hook)
    try:
        yield acc
    finally:
        handle.remove()


def forward_rate(model: nn.Module, size: int, batch: int, seconds: float) -> float:
    """Images/s of plain forwards of ``batch`` random images, over at least ``seconds``."""
    x = torch.randn(batch, 3, size, size, device=next(model.parameters()).device)
    model(x)  # warm-up
    runs, start = 0, now()
    while runs < 2 or now() - start < seconds:
        model(x)
        runs += 1
    _sync(x)
    return runs * batch / (now() - start)


def best_forward(model: nn.Module, size: int, batch_sizes: list[int], seconds: float) -> tuple[float, int]:
    """Best images/s of plain batched forwards and the batch size that reaches it."""
    return max((forward_rate(model, size, bs, seconds), bs) for bs in batch_sizes)


def _sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize(x.device)


def official_moxi_insertion(model: nn.Module, x: torch.Tensor, target: torch.Tensor, grid: int, max_batch: int) -> torch.Tensor:
    """The official scheme: per image, n steps x n candidates (chosen ones too), n^2 passes."""
    adapter = ModelAdapter(model)
    n = grid * grid
    orders = []
    for i in range(x.shape[0]):
        xi, ti = x[i : i + 1], target[i : i + 1]
        chosen: list[int] = []
        tokens = adapter.embed_tokens(xi) if adapter.is_vit else None
        part = Partition.patch_grid(1, x.shape[-2], x.shape[-1], grid, device=x.device)
        for _ in range(n):
            rewards = []
            for start in range(0, n, max_batch):
                cands = list(range(start, min(n, start + max_batch)))
                if adapter.is_vit:  # kept list = chosen + [candidate], built per row as the official code
                    keep = torch.tensor([[chosen + [c] for c in cands]], device=x.device)
                    logits = adapter.forward_kept_tokens(tokens, keep)
                else:  # pixel_zero_values: keep-mask upsampled and multiplied into the normalised image
                    mask = torch.zeros(1, len(cands), n, device=x.device)
                    mask[0, :, chosen] = 1
                    mask[0, torch.arange(len(cands)), cands] = 1
                    logits = model(xi * part.to_pixels(mask)[0].unsqueeze(1))[None]
                rewards.append(reward_from_logits(logits, ti)[0])
            r = torch.cat(rewards)
            r[chosen] = float("-inf")
            chosen.append(int(r.argmax()))
        orders.append(chosen)
    return torch.tensor(orders, device=x.device)


def run_method(model, name, options, x, target, limit, repeats: int) -> tuple[dict[str, Any], Any]:
    """One attributor timed ``repeats`` times (the fastest run counts: other load only slows)."""
    attributor = create(name, model, **options)
    seconds = float("inf")
    for _ in range(repeats):
        with flop_passes(model) as flops:
            start = now()
            attributor.attribute(x, target)
            _sync(x)
            seconds = min(seconds, now() - start)
    b = x.shape[0]
    passes = attributor.last_cost["forward_per_image"]
    rate = b / seconds
    row = {
        "method": name,
        "passes_per_image": passes,
        "seconds_per_image": seconds / b,
        "images_per_s": rate,
        "efficiency": passes * rate / limit,
        "flop_passes_per_image": flops["passes"] / b,
        "flop_efficiency": flops["passes"] / b * rate / limit,
        "forward_limit_images_per_s": limit,
    }
    return row, attributor


def bench_model(model_name: str, size: int, grid: int, args, methods: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10, img_size=size).to(args.device)
    rows = []
    with inference_state(model), torch.no_grad():
        sizes = [32, 128] if args.quick else [16, 32, 64, 128, 256, 512]
        limit, best_bs = best_forward(model, size, sizes, seconds=0.5 if args.quick else 2.0)
        b = args.images if model_name != "vit_tiny_patch16_224" else 1
        x = torch.randn(b, 3, size, size, device=args.device)
        target = model(x).argmax(1)
        common = {"model": model_name, "players": grid * grid, "images": b}
        print(f"[games] {model_name}: best forward {limit:.0f} images/s at batch {best_bs}", flush=True)
        probe = 0.5 if args.quick else 2.0
        for name, options in methods:
            opts = {"max_batch": best_bs, **options}
            if name != "smdl":
                opts.setdefault("grid", grid)
            # the limit is re-measured next to each method: on a shared machine the load drifts
            limit = forward_rate(model, size, best_bs, probe)
            row, _ = run_method(model, name, opts, x, target, limit, args.repeats)
            rows.append({**common, **row, "best_batch": best_bs, "options": _short(options)})
            print(f"[games]   {name}: {row['seconds_per_image']:.3f} s/image", flush=True)
        if any(name == "moxi_insertion" for name, _ in methods) and not args.skip_official:
            rows += official_rows(common, model, x, target, grid, args.repeats, best_bs)
    return rows


def official_rows(setting: dict[str, Any], model: nn.Module, x: torch.Tensor, target: torch.Tensor, grid: int,
                  repeats: int, max_batch: int = 256) -> list[dict[str, Any]]:
    """Our full MoXI insertion against the official n^2 scheme, timed interleaved (ours, official,
    ...): median seconds per image, the median and IQR of the per-repeat speed-up, the pass counts
    and whether the orders agree."""
    ours = create("moxi_insertion", model, grid=grid, max_batch=max_batch)
    times, official_times, ratios = [], [], []
    for _ in range(max(1, repeats)):
        start = now()
        ours.attribute(x, target)
        _sync(x)
        times.append(now() - start)
        with count_passes(model) as counter:
            start = now()
            official = official_moxi_insertion(model, x, target, grid, max_batch)
            _sync(x)
            official_times.append(now() - start)
        ratios.append(official_times[-1] / times[-1])
    b = x.shape[0]
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return [{
        **setting, "method": "moxi_insertion", "anchor": "official MoXI scheme (one image at a time, n^2 passes)",
        "ours_s_per_img": statistics.median(times) / b, "anchor_s_per_img": statistics.median(official_times) / b,
        "speedup": statistics.median(ratios), "speedup_iqr": q[2] - q[0],
        "ours_fwd_bwd": f"{ours.last_cost['forward_per_image']:.0f}/0", "anchor_fwd_bwd": f"{counter.forward / b:.0f}/0",
        "orders_agree": bool(torch.equal(official, ours.last_result.order)),
    }]


def _short(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reproduce.bench games", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 images, 10 Shapley rounds, short throughput probes")
    parser.add_argument("--large", action="store_true", help="add vit_tiny_patch16_224 (MoXI, 196 players; minutes per image on a CPU)")
    parser.add_argument("--models", default=None, help="comma-separated subset of the models (default: the two 64x64 ones)")
    parser.add_argument("--images", type=int, default=None, help="images per batch (default 8, quick 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-official", action="store_true", help="do not run the official-scheme MoXI")
    parser.add_argument("--repeats", type=int, default=1, help="time each method this often, keep the fastest")
    args = parse_suite_args(parser, argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.images = args.images or (2 if args.quick else 8)
    rounds = 10 if args.quick else 200
    small = [
        ("moxi_insertion", {}),
        ("moxi_deletion", {}),
        ("moxi_minus", {}),
        ("shapley_sampling", {"n_rounds": rounds}),
        ("smdl", {"division": "prior_patch", "prior": "hsic", "grid": 8, "per_region": 4}),
    ]
    suites = {
        "vit_micro_p8": (64, 8, small),
        "resnet10t_os16": (64, 8, small),
        "vit_tiny_patch16_224": (224, 14, [("moxi_insertion", {})]),
    }
    names = args.models.split(",") if args.models else ["vit_micro_p8", "resnet10t_os16"]
    if args.large and "vit_tiny_patch16_224" not in names:
        names.append("vit_tiny_patch16_224")
    unknown = sorted(set(names) - set(suites))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {sorted(suites)}")
    rows = []
    for name in names:
        size, grid, methods = suites[name]
        rows += bench_model(name, size, grid, args, methods)
    write_report("games", rows, out_dir=args.out, threads=torch.get_num_threads(), device=args.device, quick=args.quick)
    return 0
