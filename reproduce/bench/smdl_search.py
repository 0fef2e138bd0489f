"""``python -m reproduce.bench smdl_search --classifier CKPT [--confidence CKPT] [--images 64] ...``

SMDL's lazy greedy (``search="lazy"``) against its exhaustive greedy on trained models: SMDL's
objective is only approximately submodular, so the lazy search's stale gains are not guaranteed
upper bounds and its choices can differ. Measured on the first ``--images`` correctly classified
test images of the embedded benchmark (``--data-root``: the dataset cache the models were trained
from), with the spec's settings (prior, grid, regions, black fill, lambdas 1):

- ``order_match``: fraction of images whose whole selection order equals exhaustive's;
  ``position_match``: mean fraction of positions holding the same region;
  ``first_diff``: mean 0-based step of the first difference (k when none);
- ``insertion_auc_diff`` / ``deletion_auc_diff``: mean and max |lazy - exhaustive| of the
  Xplique-style pixel AUCs (10 steps, baseline 0 in normalised space, softmax of the label; the
  SMDL table's metrics), and the signed mean;
- ``passes_per_image`` of the search (the prior is computed once and shared, so it is not
  counted), ``seconds_per_image`` and the speed-ups over exhaustive (LiMA reports 1.6x for its
  search over plain greedy).
"""

from __future__ import annotations

import argparse

import torch

from reproduce.attributors import create
from reproduce.bench._report import now, parse_suite_args, write_report
from reproduce.data import create_dataset
from reproduce.metrics import insertion_deletion_curve, trapezoid_auc
from reproduce.models import ModelAdapter, load_model


def correct_images(model, root: str, count: int, sizes: dict, batch: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` test images the model classifies correctly, and their labels."""
    data = create_dataset("synthetic", root=root, split="test", sizes=sizes, normalize=ModelAdapter(model).data_config)
    images, labels = [], []
    with torch.no_grad():
        for start in range(0, len(data), batch):
            items = [data[i] for i in range(start, min(len(data), start + batch))]
            x = torch.stack([it["image"] for it in items])
            y = torch.tensor([int(it["label"]) for it in items])
            keep = model(x).argmax(-1) == y
            images.append(x[keep])
            labels.append(y[keep])
            if sum(len(i) for i in images) >= count:
                break
    return torch.cat(images)[:count], torch.cat(labels)[:count]


def aucs(model, x, maps, y) -> dict[str, torch.Tensor]:
    return {mode: trapezoid_auc(insertion_deletion_curve(model, x, maps, y, mode=mode, steps=10)[1]) for mode in ("insertion", "deletion")}


def run_search(model, options: dict, x, y, priors: torch.Tensor | None, batch: int):
    """Orders, maps, passes and seconds per image of SMDL with ``options`` over the images; the
    prior maps (computed once, shared by every search) are handed in as a function."""
    orders, maps, passes, seconds = [], [], 0.0, 0.0
    for start in range(0, len(x), batch):
        xb, yb = x[start : start + batch], y[start : start + batch]
        prior = {} if priors is None else {"prior": lambda _x, _t, pb=priors[start : start + batch]: pb}
        smdl = create("smdl", model, **options, **prior)
        begin = now()
        maps.append(smdl.attribute(xb, yb))
        seconds += now() - begin
        passes += smdl.last_cost["forward_per_image"] * len(xb)
        orders.append(smdl.last_result.order)
    return torch.cat(orders), torch.cat(maps), passes / len(x), seconds / len(x)


def compare(x, reference: dict, candidate: dict) -> dict[str, float]:
    same = candidate["order"] == reference["order"]
    differs = ~same
    first = torch.where(differs.any(1), differs.float().argmax(1), torch.full((len(x),), same.shape[1])).float()
    row = {"order_match": float(same.all(1).float().mean()), "position_match": float(same.float().mean()),
           "first_diff": float(first.mean())}
    for mode in ("insertion", "deletion"):
        diff = candidate["auc"][mode] - reference["auc"][mode]
        row.update({f"{mode}_auc_diff_mean_abs": float(diff.abs().mean()), f"{mode}_auc_diff_max_abs": float(diff.abs().max()),
                    f"{mode}_auc_diff_mean": float(diff.mean()), f"{mode}_auc": float(candidate["auc"][mode].mean())})
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reproduce.bench smdl_search", description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", required=True, help="checkpoint of the explained classifier")
    parser.add_argument("--confidence", default=None, help="checkpoint of the EDL confidence model (default: the fallback)")
    parser.add_argument("--data-root", required=True, help="dataset cache the models were trained from")
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16, help="images per attribute() call")
    parser.add_argument("--prior", default="hsic")
    parser.add_argument("--grid", type=int, default=8)
    parser.add_argument("--per-region", type=int, default=4)
    parser.add_argument("--division", default="prior_patch", choices=["prior_patch", "patch"])
    parser.add_argument("--widths", default="1,4,8", help="lazy_width values to measure")
    args = parse_suite_args(parser, argv)

    model = load_model(args.classifier).eval()
    x, y = correct_images(model, args.data_root, args.images, {"test": args.test_size})
    print(f"[smdl_search] {len(x)} correctly classified images", flush=True)
    options = {"division": args.division, "grid": args.grid, "confidence_model": args.confidence}
    priors = None
    if args.division == "prior_patch":
        options["per_region"] = args.per_region
        priors = torch.cat([create(args.prior, model).attribute(x[s : s + args.batch], y[s : s + args.batch])
                            for s in range(0, len(x), args.batch)])
    searches = [("exhaustive", {"search": "exhaustive"})] + [
        (f"lazy(width={w})", {"search": "lazy", "lazy_width": int(w)}) for w in args.widths.split(",")]
    results = {}
    for label, search in searches:
        order, maps, passes, seconds = run_search(model, {**options, **search}, x, y, priors, args.batch)
        results[label] = {"order": order, "auc": aucs(model, x, maps, y), "passes": passes, "seconds": seconds}
        print(f"[smdl_search] {label}: {passes:.0f} passes/image, {seconds:.3f} s/image", flush=True)
    reference = results["exhaustive"]
    rows = [{"search": label, "images": len(x), "passes_per_image": res["passes"], "seconds_per_image": res["seconds"],
             "pass_speedup": reference["passes"] / res["passes"], "time_speedup": reference["seconds"] / res["seconds"],
             **compare(x, reference, res), "division": args.division, "grid": args.grid,
             "prior": args.prior if priors is not None else None}
            for label, res in results.items()]
    write_report("smdl_search", rows, out_dir=args.out, lima_reported_speedup=1.6)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
