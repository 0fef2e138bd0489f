"""The package's layers: imports run one way, no module imports itself back, and the library is
usable from a notebook without Hydra or Lightning.

Layers, lowest first (``reproduce/DESIGN``):

- base: ``errors``, ``registry``, ``atomic``, ``checks``, ``models``, ``data``, ``viz``
- library: ``attributors``, ``metrics``
- lightning: ``lit``
- runners: ``runtime``, ``bench``, the entry points (``train``, ``evaluate``, ``table``, ``cli``, ...)

A module may import its own layer and the layers below it, never one above. The imports are read
from the source with ``ast``, at the top level *and* inside functions (an import hidden in a function
is still a dependency), so the test sees what a reader of the code would have to trust.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "reproduce"

LAYERS = {
    "errors": 0, "registry": 0, "atomic": 0, "checks": 0, "models": 0, "data": 0, "viz": 0,
    "attributors": 1, "metrics": 1,
    "lit": 2,
}
RUNNER = 3  # runtime, bench and every entry point not listed above
LAYER_NAMES = ("base", "library", "lightning", "runners")


def layer_of(module: str) -> int:
    """Layer of a dotted module name inside the package (``reproduce.metrics.pxap`` -> 1)."""
    parts = module.split(".")
    if len(parts) == 1:  # the package's own __init__ (version string only) sits below everything
        return -1
    return LAYERS.get(parts[1], RUNNER)


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """``{module: {imported package module: line}}`` for every module under ``root`` (a package dir).

    ``from a.b import c`` counts as an import of ``a.b.c`` when that is a module of the package, and
    of ``a.b`` otherwise.
    """
    top = root.name
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, dict[str, int]] = {}
    for module, path in files.items():
        edges: dict[str, int] = {}
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, path.name == "__init__.py", node)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.append(full if full in files else base)
            for target in targets:
                if target == top or target.startswith(f"{top}."):
                    while target not in files and "." in target:  # `import a.b.c` of a name inside a.b
                        target = target.rsplit(".", 1)[0]
                    if target != module:
                        edges.setdefault(target, node.lineno)
        graph[module] = edges
    return graph


def upward_imports(graph: dict[str, dict[str, int]]) -> list[str]:
    bad = []
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            if layer_of(target) > layer_of(module) >= 0:
                bad.append(f"{module}:{line} imports {target} "
                           f"({LAYER_NAMES[layer_of(module)]} -> {LAYER_NAMES[layer_of(target)]})")
    return bad


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def _without_package_inits(graph: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Edges into a package ``__init__`` from its own modules are re-export plumbing (``from
    reproduce.metrics.base import X`` runs ``reproduce/metrics/__init__.py`` first): keep the modules'
    real dependencies, drop ``module -> its own package``."""
    out = {}
    for module, edges in graph.items():
        out[module] = {t: line for t, line in edges.items() if not module.startswith(f"{t}.")}
    return out


def test_no_import_runs_upward():
    bad = upward_imports(import_graph(PACKAGE_DIR))
    assert not bad, "imports from a lower layer into a higher one:\n" + "\n".join(bad)


def test_no_import_cycles_between_modules():
    cycles = import_cycles(_without_package_inits(import_graph(PACKAGE_DIR)))
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "reproduce"
    for rel, source in {"__init__.py": "", "data/__init__.py": "", "lit/__init__.py": "",
                        "metrics/__init__.py": "", "runtime/__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return root


def test_a_planted_upward_import_is_caught(tmp_path):
    root = _plant(tmp_path, {
        "lit/evaluation.py": "X = 1\n",
        "runtime/atomic.py": "Y = 2\n",
        # hidden inside a function, and relative: still an upward dependency
        "data/planted.py": "def f():\n    from ..lit.evaluation import X\n    return X\n",
        "metrics/planted.py": "import reproduce.runtime.atomic\n",
    })
    bad = upward_imports(import_graph(root))
    assert len(bad) == 2, bad
    assert any(b.startswith("reproduce.data.planted:2 imports reproduce.lit.evaluation (base -> lightning)") for b in bad), bad
    assert any(b.startswith("reproduce.metrics.planted:1 imports reproduce.runtime.atomic (library -> runners)") for b in bad), bad


def test_a_planted_cycle_is_caught(tmp_path):
    root = _plant(tmp_path, {
        "data/a.py": "from reproduce.data.b import B\nA = 1\n",
        "data/b.py": "def f():\n    from reproduce.data import a\n    return a\nB = 2\n",
        "data/c.py": "from reproduce.data.a import A\n",
    })
    assert import_cycles(_without_package_inits(import_graph(root))) == [["reproduce.data.a", "reproduce.data.b"]]


def test_downward_and_same_layer_imports_are_fine(tmp_path):
    root = _plant(tmp_path, {
        "data/a.py": "X = 1\n",
        "metrics/m.py": "from reproduce.data.a import X\n",
        "lit/l.py": "from reproduce.metrics.m import X\nfrom reproduce.data import a\n",
        "runtime/r.py": "from reproduce.lit.l import X\n",
    })
    graph = import_graph(root)
    assert graph["reproduce.lit.l"] == {"reproduce.metrics.m": 1, "reproduce.data.a": 2}
    assert upward_imports(graph) == []


CODE = """
import sys
import reproduce.data, reproduce.models, reproduce.attributors, reproduce.metrics
reproduce.attributors.available(); reproduce.data.available_datasets(); reproduce.metrics.available_metrics()
leaked = sorted(m for m in ("hydra", "omegaconf", "lightning", "pytorch_lightning") if m in sys.modules)
print(",".join(leaked))
"""


def test_library_imports_without_hydra_or_lightning():
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_DIR.parent)}
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "", f"library modules imported {out.stdout.strip()}"


def test_every_subpackage_is_placed_in_a_layer():
    """A new sub-package is placed in a layer on purpose: only runtime and bench default to runners."""
    subpackages = {p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").exists()}
    assert subpackages - set(LAYERS) == {"runtime", "bench"}
