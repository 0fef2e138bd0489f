"""``python -m reproduce.bench <suite> [options]``: run one benchmark suite."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import reproduce.bench as package


def suites() -> list[str]:
    return sorted(i.name for i in pkgutil.iter_modules(package.__path__) if not i.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in suites():
        print(f"usage: python -m reproduce.bench {{{','.join(suites())}}} [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(f"reproduce.bench.{argv[0]}")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
