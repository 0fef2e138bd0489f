"""Insertion/deletion speed: our batched curves against per-step pixel-flipping loops.

``python -m reproduce.bench metrics [--quick] [--images 8] [--steps 100] [--model NAME]``

Same model, images, maps and targets for every implementation:

- **ours**: :func:`reproduce.metrics.insertion_deletion_curve`: keep masks for all steps built on
  the device from the ranking, evaluated ``max_batch`` rows per forward pass.
- **Quantus PixelFlipping** (deletion; the real library when installed): called through
  ``evaluate_batch``, its per-step loop, on ``H*W / steps`` pixels per step. Its ``__call__``
  asserts ``H*W % features_in_step == 0`` while the step is counted in channel-features, which no
  pixel-aligned step satisfies at 224x224 (224**2 is not divisible by 3), so the step count is the
  divisor of ``H*W`` closest to ``--steps``. Its curve omits the unperturbed point.
- **Xplique-style loop** (insertion and deletion): a faithful re-implementation, in this file, of
  ``xplique.metrics.CausalFidelity.detailed_evaluate`` (Xplique is TensorFlow-only): per step,
  copy the start state in NumPy, flip the top pixels image by image, run the model on the batch
  (``batch_size`` 64 as Xplique's default), read the softmax of the target.

Every row checks that the curves match (max absolute difference of the per-image curves) and
reports the speed-up. Maps are seeded random permutations of ``1..H*W``: no ties, so every
implementation ranks the pixels identically (float noise maps have ties, which the libraries break
differently).
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import numpy as np
import torch

from reproduce.bench._report import now, parse_suite_args, write_report
from reproduce.metrics import insertion_deletion_curve
from reproduce.models import create_model, inference_state

LOOP_LABEL = "Xplique CausalFidelity loop (re-implemented here)"


def xplique_loop(model, images: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *, mode: str, steps: int,
                 batch_size: int = 64) -> np.ndarray:
    """Faithful re-implementation of Xplique's ``detailed_evaluate`` per-image curves ``[B, steps+1]``."""
    b, c, h, w = images.shape
    n = h * w
    inputs = images.permute(0, 2, 3, 1).reshape(b, n, c).cpu().numpy()  # Xplique works channels-last
    order = np.argsort(maps.reshape(b, n).cpu().numpy(), axis=-1)[:, ::-1]
    baselines = np.zeros_like(inputs)
    start, end = (inputs, baselines) if mode == "deletion" else (baselines, inputs)
    counts = np.linspace(0, n, steps + 1, dtype=np.int32)
    curves = []
    with inference_state(model), torch.no_grad():
        for step in counts:
            batch = start.copy()
            for i, ids in enumerate(order[:, :step]):
                batch[i, ids] = end[i, ids]
            x = torch.from_numpy(batch).reshape(b, h, w, c).permute(0, 3, 1, 2).to(images.device)
            probs = torch.cat([torch.softmax(model(x[s:s + batch_size]), -1) for s in range(0, b, batch_size)])
            curves.append(probs.gather(1, targets[:, None]).squeeze(1).cpu().numpy())
    return np.stack(curves, axis=1)


def quantus_deletion(model, images: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, steps: int) -> np.ndarray:
    """Quantus ``PixelFlipping`` curves ``[B, steps]`` (after each step), baseline 0, softmax."""
    import quantus
    from quantus.helpers.model.pytorch_model import PyTorchModel

    b, c, h, w = images.shape
    metric = quantus.PixelFlipping(features_in_step=c * h * w // steps, perturb_baseline=0.0, normalise=False,
                                   disable_warnings=True, display_progressbar=False)
    wrapped = PyTorchModel(model, channel_first=True, softmax=True, device=str(images.device))
    with inference_state(model):
        curves = metric.evaluate_batch(model=wrapped, x_batch=images.cpu().numpy(), y_batch=targets.cpu().numpy(),
                                       a_batch=maps[:, None].cpu().numpy())
    return np.asarray(curves)


def _closest_divisor(n: int, target: int) -> int:
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - target), d))


def interleaved(ours, anchor, repeat: int) -> tuple[float, Any, float, Any, float, float]:
    """Median seconds of ``ours`` and ``anchor`` timed interleaved, their outputs, and the median
    and IQR of the per-repeat speed-up anchor / ours."""
    t_ours, t_anchor = [], []
    out_ours = out_anchor = None
    for _ in range(repeat):
        start = now()
        out_ours = ours()
        t_ours.append(now() - start)
        start = now()
        out_anchor = anchor()
        t_anchor.append(now() - start)
    ratios = [a / o for a, o in zip(t_anchor, t_ours)]
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return statistics.median(t_ours), out_ours, statistics.median(t_anchor), out_anchor, statistics.median(ratios), q[2] - q[0]


def curve_rows(model, images, maps, targets, *, steps: int, max_batch: int, repeat: int, tolerance: float,
               common: dict) -> list[dict]:
    """Our curves against the Xplique loop (insertion, deletion) and Quantus (deletion)."""
    n = images.shape[-2] * images.shape[-1]
    rows = []
    for mode in ("insertion", "deletion"):
        t_ours, (_, ours), t_loop, loop, ratio, iqr = interleaved(
            lambda: insertion_deletion_curve(model, images, maps, targets, mode=mode, steps=steps, max_batch=max_batch),
            lambda: xplique_loop(model, images, maps, targets, mode=mode, steps=steps), repeat)
        diff = float(np.abs(ours.cpu().numpy() - loop).max())
        rows.append({**common, "curve": mode, "steps": steps, "anchor": LOOP_LABEL, "ours_s": t_ours, "anchor_s": t_loop,
                     "speedup": ratio, "speedup_iqr": iqr, "max_abs_diff": diff, "match": diff <= tolerance})
    try:
        import quantus  # noqa: F401
    except ImportError:
        print("quantus is not installed: skipping the Quantus PixelFlipping row (pip install quantus).")
        return rows
    q_steps = _closest_divisor(n, steps)
    t_ours, (_, ours), t_q, q, ratio, iqr = interleaved(
        lambda: insertion_deletion_curve(model, images, maps, targets, mode="deletion", steps=q_steps, max_batch=max_batch),
        lambda: quantus_deletion(model, images, maps, targets, q_steps), repeat)
    diff = float(np.abs(ours[:, 1:].cpu().numpy() - q).max())
    rows.append({**common, "curve": "deletion", "steps": q_steps, "anchor": "Quantus PixelFlipping (evaluate_batch)",
                 "ours_s": t_ours, "anchor_s": t_q, "speedup": ratio, "speedup_iqr": iqr, "max_abs_diff": diff,
                 "match": diff <= tolerance})
    return rows


def random_maps(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """Seeded random permutations of ``1..size*size`` as maps: no ties (module docstring)."""
    g = torch.Generator().manual_seed(seed)
    return torch.argsort(torch.rand(count, size * size, generator=g), dim=1).float().view(-1, size, size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reproduce.bench metrics", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 images, 10 steps: a smoke run")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--model", default="efficientnet_lite0_imagenet")
    parser.add_argument("--max-batch", type=int, default=64, help="rows per forward pass for ours")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved timings (median and IQR reported)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max curve difference accepted")
    args = parse_suite_args(parser, argv)
    if args.quick:
        args.images, args.steps = 2, 10

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    kwargs = {} if args.model == "efficientnet_lite0_imagenet" else {"num_classes": 1000, "img_size": args.size}
    model = create_model(args.model, **kwargs).eval().to(device)
    images = torch.randn(args.images, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(device)
    maps = random_maps(args.images, args.size).to(device)
    with torch.no_grad():
        targets = model(images).argmax(-1)
    insertion_deletion_curve(model, images[:1], maps[:1], targets[:1], mode="deletion", steps=2)  # warm-up

    common = dict(images=args.images, size=args.size, model=args.model, device=device, threads=torch.get_num_threads())
    rows = curve_rows(model, images, maps, targets, steps=args.steps, max_batch=args.max_batch, repeat=args.repeat,
                      tolerance=args.tolerance, common=common)

    write_report("metrics", rows, out_dir=args.out)
    bad = [r for r in rows if not r["match"]]
    if bad:
        print(f"curves differ beyond {args.tolerance}: {[(r['curve'], r['anchor']) for r in bad]}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
