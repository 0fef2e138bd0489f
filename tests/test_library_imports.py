"""The library layers must be usable from a notebook without Hydra or Lightning."""

import subprocess
import sys

CODE = """
import sys
import reproduce.data, reproduce.models, reproduce.attributors, reproduce.metrics
reproduce.attributors.available(); reproduce.data.available_datasets()
leaked = sorted(m for m in ("hydra", "omegaconf", "lightning", "pytorch_lightning") if m in sys.modules)
print(",".join(leaked))
"""


def test_library_imports_without_hydra_or_lightning():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"library modules imported {out.stdout.strip()}"
