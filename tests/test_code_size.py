"""The size rules of the house (BRIEFING, issue 13): no module of ``reproduce/`` over 400 lines, no
function over 60 lines (``def`` to its last line, docstring included) unless its docstring says why
it stays whole: a line starting ``Long:``."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "reproduce"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert not long, f"split these modules along their seams: {long}"


def test_no_function_is_over_60_lines_without_a_reason():
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                doc = ast.get_docstring(node) or ""
                if n > MAX_FUNCTION_LINES and not any(line.startswith("Long:") for line in doc.splitlines()):
                    long[f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"] = n
    assert not long, f"split these functions, or say why in a docstring line starting 'Long:': {long}"
