"""``reproduce <verb> [key=value ...]``: one command for every entry point (also ``python -m reproduce``).

    reproduce train experiment=quickstart_cnn
    reproduce evaluate attributor=gradcam train_run=quickstart_cnn
    reproduce table table=table3
    reproduce report
    reproduce list attributors|metrics|datasets|tables

``reproduce <verb> --help`` shows that verb's usage and examples; ``reproduce --version`` the
package version. A verb is one entry of :data:`VERBS` (its module and one line of help), so adding
one is one line here and one module.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Callable

from reproduce import __version__
from reproduce.checks import suggest
from reproduce.runtime.cli_errors import run_entry_point

# verb -> (module, what it does). A module either defines ``main(argv) -> int`` (plain commands) or is
# a Hydra entry point (``main`` decorated with ``hydra.main``, run through ``run_entry_point``).
VERBS: dict[str, tuple[str, str]] = {
    "train": ("reproduce.train", "train and test one model (a Hydra `train` config)"),
    "evaluate": ("reproduce.evaluate", "evaluate one attributor on one model (a Hydra `evaluate` config)"),
    "table": ("reproduce.table", "reproduce a paper table end to end (a spec in conf/table/)"),
    "report": ("reproduce.report", "judge the papers' claims from the tables on disk: results/REPORT.md"),
    "list": ("reproduce.runtime.listing", "list attributors, metrics, datasets or tables with their options"),
}
HYDRA_CONFIGS = {"train": "train", "evaluate": "evaluate", "table": "table", "report": "report"}


def usage() -> str:
    width = max(len(v) for v in VERBS)
    lines = ["usage: reproduce <verb> [key=value ...]   (or python -m reproduce <verb> ...)", "", "verbs:"]
    lines += [f"  {verb:{width}s}  {text}" for verb, (_, text) in VERBS.items()]
    lines += ["", "`reproduce <verb> --help` shows a verb's examples; `reproduce --version` the version."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"reproduce {__version__}")
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        sys.stderr.write(f"reproduce: error: unknown verb {verb!r}.{suggest(verb, VERBS)} Verbs: {', '.join(VERBS)}.\n")
        return 2
    module = importlib.import_module(VERBS[verb][0])
    if verb not in HYDRA_CONFIGS:
        return int(module.main(rest) or 0)
    sys.argv = [f"reproduce {verb}", *rest]  # Hydra reads its overrides from sys.argv
    entry: Callable[[], object] = module.main
    run_entry_point(entry, module.PROG, HYDRA_CONFIGS[verb], module.__doc__, shown=f"reproduce {verb}")
    return 0


def run() -> int:
    """:func:`main`, quiet when the reader of its output goes away (``reproduce list metrics | head``)."""
    try:
        return main()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 0


if __name__ == "__main__":
    raise SystemExit(run())
