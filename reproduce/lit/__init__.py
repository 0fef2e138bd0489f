"""Lightning modules and data modules (the runner layer: imports Lightning, never Hydra)."""
