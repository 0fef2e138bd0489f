"""Figures (matplotlib, no Hydra/Lightning): heatmap overlays, curves, stability side-by-sides."""
