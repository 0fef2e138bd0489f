"""``python -m reproduce.bench memory [--images 1000] [--size 224] [--model resnet10t_os16] ...``

Shows that evaluation memory does not grow with the number of test images: a flat ImageNet-val
style folder (JPEGs + ``LOC_val_solution.csv`` boxes, so PxAP has masks) is written to a temporary
directory, streamed from disk by ``data.num_workers`` loader processes, and evaluated by the real
``evaluate_cell`` (Grad-CAM with PxAP, insertion, deletion and cost). A callback samples the
resident set size (RSS) of the main process and of the loader workers after every batch.

Reported: RSS after the first ``--early`` images and after all of them, the least-squares slope of
RSS against images evaluated from ``--early`` on (MiB per 1000 images: ~0 when memory does not
scale with N), the range of the samples, and the peak RSS of the process and of its largest finished
child (``resource.getrusage``). glibc keeps freed tensor buffers in its heap, so raw RSS moves in
steps of tens of MiB without any live allocation growing; ``--trim`` calls ``malloc_trim(0)`` before
each sample to measure the memory actually held. The images are random-coloured boxes on noise with
an untrained model: memory, not accuracy, is measured.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import resource
import tempfile
import time
from typing import Any

import lightning as L
import numpy as np
import psutil
from PIL import Image

WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361", "n01494475",
         "n01496331", "n01498041", "n01514668", "n01514859", "n01518878")


def write_dataset(root: str, images: int, size: int, seed: int = 0) -> None:
    """``images`` JPEGs ``ILSVRC2012_val_*.JPEG`` with one labelled box each, and the solution CSV."""
    rng = np.random.default_rng(seed)
    lines = ["ImageId,PredictionString"]
    for i in range(1, images + 1):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
        w, h = (int(v) for v in rng.integers(size // 8, size // 2, 2))
        pixels[y0:y0 + h, x0:x0 + w] = rng.integers(0, 256, 3, dtype=np.uint8)
        name = f"ILSVRC2012_val_{i:08d}"
        Image.fromarray(pixels).save(os.path.join(root, f"{name}.JPEG"), quality=90)
        lines.append(f"{name},{WNIDS[i % len(WNIDS)]} {x0} {y0} {x0 + w} {y0 + h}")
    with open(os.path.join(root, "LOC_val_solution.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")


def _mib(n_bytes: float) -> float:
    return n_bytes / 2**20


class RssProbe(L.Callback):
    """RSS of this process and of its live children (the loader workers) after every test batch."""

    def __init__(self, trim: bool = False) -> None:
        self.samples: list[dict[str, float]] = []
        self.process = psutil.Process()
        self.trim = ctypes.CDLL("libc.so.6").malloc_trim if trim else None

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.trim is not None:
            self.trim(0)
        workers = 0
        for child in self.process.children(recursive=True):
            try:
                workers += child.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        self.samples.append({"images": int(pl_module.evaluated), "main_mib": _mib(self.process.memory_info().rss),
                             "workers_mib": _mib(workers)})

    def at(self, images: int) -> dict[str, float]:
        """The first sample taken once ``images`` images were evaluated."""
        return next(s for s in self.samples if s["images"] >= images)

    def slope(self, key: str, start: int) -> float:
        """Least-squares slope of ``key`` in MiB per 1000 images over the samples from ``start`` on."""
        points = [(s["images"], s[key]) for s in self.samples if s["images"] >= start]
        mx, my = statistics.fmean(p[0] for p in points), statistics.fmean(p[1] for p in points)
        return 1000 * sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)

    def spread(self, key: str, start: int) -> float:
        values = [s[key] for s in self.samples if s["images"] >= start]
        return max(values) - min(values)


def compose_cell(root: str, data_root: str, args: argparse.Namespace):
    from hydra import compose, initialize_config_dir

    from reproduce.runtime.paths import CONF_DIR

    steps = args.steps
    overrides = [
        f"paths.root={root}", "data=imagenet_val", f"data.options.root={data_root}",
        f"data.image_size={args.size}", f"data.num_workers={args.workers}", f"data.eval_batch_size={args.batch}",
        f"model={args.model}", "checkpoint=null", "attributor=gradcam", "logger=none", "name=memory",
        "metrics=[pxap,insertion,deletion,cost]", f"metrics.insertion.steps={steps}",
        f"metrics.deletion.steps={steps}", "trainer.enable_progress_bar=false",
    ]
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose("evaluate", overrides=overrides)


def main(argv: list[str]) -> int:
    from reproduce.bench._report import write_report
    from reproduce.runtime.evaluation import evaluate_cell

    parser = argparse.ArgumentParser(prog="python -m reproduce.bench memory", description=__doc__.split("\n\n")[1])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--early", type=int, default=100, help="RSS reference point (images evaluated)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--model", default="resnet10t_os16", help="a conf/model config (untrained)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--steps", type=int, default=5, help="insertion/deletion steps")
    parser.add_argument("--trim", action="store_true", help="malloc_trim(0) before every RSS sample")
    parser.add_argument("--out", default="bench_results")
    args = parser.parse_args(argv)
    if not 0 < args.early < args.images:
        parser.error("--early must be between 0 and --images")

    with tempfile.TemporaryDirectory(prefix="reproduce-memory-") as tmp:
        data_root = os.path.join(tmp, "val")
        os.makedirs(data_root)
        start = time.perf_counter()
        write_dataset(data_root, args.images, args.size)
        written = time.perf_counter() - start
        disk = sum(os.path.getsize(os.path.join(data_root, f)) for f in os.listdir(data_root))
        probe = RssProbe(trim=args.trim)
        before = _mib(psutil.Process().memory_info().rss)
        start = time.perf_counter()
        result = evaluate_cell(compose_cell(tmp, data_root, args), callbacks=[probe])
        seconds = time.perf_counter() - start

    early, last = probe.at(args.early), probe.samples[-1]
    row: dict[str, Any] = {
        "images": result["evaluated_images"],
        "size": args.size,
        "model": args.model,
        "workers": args.workers,
        "trim": args.trim,
        "dataset_mib_on_disk": _mib(disk),
        "rss_before_mib": before,
        f"rss_at_{early['images']}_mib": early["main_mib"],
        f"rss_at_{last['images']}_mib": last["main_mib"],
        "rss_slope_mib_per_1000_images": probe.slope("main_mib", early["images"]),
        "rss_range_mib": probe.spread("main_mib", early["images"]),
        f"workers_rss_at_{early['images']}_mib": early["workers_mib"],
        f"workers_rss_at_{last['images']}_mib": last["workers_mib"],
        "workers_rss_slope_mib_per_1000_images": probe.slope("workers_mib", early["images"]),
        "peak_rss_main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_largest_child_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "seconds_eval": seconds,
        "seconds_write_dataset": written,
        "pxap": result["scalars"]["pxap/pxap"],
    }
    write_report("memory", [row], out_dir=args.out, rss_samples=probe.samples,
                 note="RSS of the main process and of the live loader workers after every test batch")
    return 0
