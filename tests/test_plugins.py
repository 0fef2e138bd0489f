"""Out-of-tree attributors: a module named in REPRODUCE_PLUGINS is registered like a built-in one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

PLUGIN = textwrap.dedent(
    '''
    from reproduce.attributors import Attributor, register

    @register("plugin_gradient_sign")
    class GradientSign(Attributor):
        def _attribute(self, x, target):
            return (self.input_gradient(x, target).sign() * x).sum(1)
    '''
)

PROBE = textwrap.dedent(
    """
    import torch
    from reproduce.attributors import available, create
    from reproduce.models import create_model
    model = create_model("resnet10t_os16", num_classes=3, img_size=64).eval()
    maps = create("plugin_gradient_sign", model).attribute(torch.randn(2, 3, 64, 64), target=1)
    print("plugin_gradient_sign" in available(), tuple(maps.shape))
    """
)


def _run(tmp_path, plugins: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "REPRODUCE_PLUGINS": plugins}
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)


def test_a_plugin_module_is_discovered_and_runs_the_contract(tmp_path):
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    done = _run(tmp_path, " my_plugin , ")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True (2, 64, 64)"


def test_a_missing_plugin_module_names_the_variable_and_the_fix(tmp_path):
    done = _run(tmp_path, "no_such_plugin_module")
    assert done.returncode != 0
    assert "REPRODUCE_PLUGINS" in done.stderr and "no_such_plugin_module" in done.stderr
    assert "PYTHONPATH" in done.stderr
