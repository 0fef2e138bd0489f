"""Post-hoc and inherent attribution methods behind one contract.

    from reproduce.attributors import create
    maps = create("gradcam", model).attribute(images, target=labels)   # [B, H, W]

``available()`` lists the registered names; each method lives in its own module here.
"""

from reproduce.attributors.base import Attributor, check_inputs, normalize_maps, resolve_target
from reproduce.attributors.registry import available, create, get_class, register

__all__ = ["Attributor", "available", "check_inputs", "create", "get_class", "normalize_maps", "register", "resolve_target"]
