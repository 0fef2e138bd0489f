"""The README figure of the embedded benchmark: examples of each preset and test variant, the
evidence outlined in white, the distractors in black (dashed: the occluder).

``python -m reproduce.viz.benchmark_examples out.png [--images 6] [--root DIR]`` (scenes are
generated, cached under ``--root``, default a temporary folder).
"""

from __future__ import annotations

import argparse
import tempfile

import matplotlib

matplotlib.use("Agg")  # figures are files; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from reproduce.data.synthetic import SyntheticShapes  # noqa: E402
from reproduce.viz.overlays import save_figure  # noqa: E402

# (row title, dataset options): presets and variants on the original background first (their
# objects are outlined), then the shortcut variant's ImageNet-9 test variants.
ROWS = [
    ("easy", {"preset": "easy"}),
    ("hard (default)", {"preset": "hard"}),
    ("hard, two parts", {"preset": "hard", "variant": "two_part"}),
    ("spurious: original", {"rho": 0.9}),
    ("mixed_rand", {"rho": 0.9, "background": "mixed_rand"}),
    ("mixed_same", {"rho": 0.9, "background": "mixed_same"}),
    ("mixed_next", {"rho": 0.9, "background": "mixed_next"}),
    ("only_fg", {"rho": 0.9, "background": "only_fg"}),
    ("only_bg_t", {"rho": 0.9, "background": "only_bg_t"}),
]


def _outline(ax, mask: np.ndarray, colour: str, style: str = "solid") -> None:
    if mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=1.0, linestyles=style)


def _draw(ax, ds: SyntheticShapes, i: int, interventions: bool) -> None:
    item = ds[i]
    ax.imshow(item["image"].permute(1, 2, 0).numpy(), interpolation="nearest")
    if interventions:
        names = [o["name"] for o in ds.objects(i)]
        masks, kinds = item["object_masks"].numpy(), item["object_kinds"].numpy()
        objects = [o for o in range(len(kinds)) if kinds[o] > 0]
        for o, name in zip(objects, names):
            if kinds[o] == 2:
                _outline(ax, masks[o], "black", "dashed" if name == "occluder" else "solid")
    _outline(ax, item["mask"].numpy(), "white")
    ax.set_xticks([])
    ax.set_yticks([])


def benchmark_examples(path: str, images: int = 6, root: str | None = None, size: int = 64) -> str:
    """Write the figure to ``path``: one row per preset or variant, ``images`` test images each."""
    root = root or tempfile.mkdtemp(prefix="reproduce-examples-")
    fig, axes = plt.subplots(len(ROWS), images, figsize=(1.4 * images + 1.6, 1.45 * len(ROWS)), squeeze=False)
    for r, (title, options) in enumerate(ROWS):
        interventions = options.get("background", "original") == "original"
        ds = SyntheticShapes(root=root, split="test", sizes={"test": max(images, 12)}, image_size=size,
                             interventions=interventions, **options)
        for c in range(images):
            _draw(axes[r, c], ds, c, interventions)
            if r == 0 or title.startswith("spurious") or title.startswith("hard"):
                axes[r, c].set_title(ds.class_names[int(ds.labels[c])].replace("_", " "), fontsize=5)
        axes[r, 0].set_ylabel(title, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle("Embedded benchmark: evidence outlined white, distractors black (dashed: occluder)", fontsize=8, y=1.0)
    fig.tight_layout(rect=(0, 0, 1, 0.99))
    return save_figure(fig, path, dpi=150)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="output PNG")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--root", default=None, help="scene cache folder (default: a temporary folder)")
    args = parser.parse_args(argv)
    print(benchmark_examples(args.path, args.images, args.root))


if __name__ == "__main__":
    main()
