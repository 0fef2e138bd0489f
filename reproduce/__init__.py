"""reproduce: explain image classifiers and reproduce COMET, MoXI, super-pixel saliency and SMDL.

The library layers (``reproduce.data``, ``reproduce.models``, ``reproduce.attributors``,
``reproduce.metrics``) import neither Hydra nor Lightning; the runners
(``python -m reproduce.train|evaluate|table|bench``) and ``reproduce.lit`` sit on top.
"""

__version__ = "0.1.0"
