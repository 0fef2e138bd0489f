"""Per-image random generators seeded by (seed, image content), for batch-invariant sampling.

``attribute`` receives no dataset index, so a sampling method that must give an image the same map
whatever its batch-mates, its position in the batch or the batch size seeds each image's draws from
a hash of the image itself: the image's float32 bytes on the CPU (so the same image on a GPU draws
the same numbers), mixed with the method's ``seed``. Two bit-identical images get identical draws;
an image changed in any pixel gets independent ones. Draws are made on the CPU and moved, so the
maps do not depend on the device either.
"""

from __future__ import annotations

import hashlib

import torch


def image_seed(seed: int, image: torch.Tensor) -> int:
    """A 63-bit generator seed from ``seed`` and the bytes of one image ``[C, H, W]``."""
    data = image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    digest = hashlib.blake2b(data, digest_size=8, key=int(seed).to_bytes(8, "little", signed=True)).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def image_generators(seed: int, images: torch.Tensor) -> list[torch.Generator]:
    """One CPU generator per image of ``images`` ``[B, C, H, W]``, seeded by :func:`image_seed`."""
    generators = []
    for image in images:
        g = torch.Generator()
        g.manual_seed(image_seed(seed, image))
        generators.append(g)
    return generators
