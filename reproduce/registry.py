"""Classes by name, one registry per kind (attributors, metrics, datasets).

Each kind's modules register their classes with a decorator; the modules of the kind's package are
imported on the first lookup, so adding a class never means editing a list. An unknown name is an
error that suggests close matches and lists what exists.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
from typing import Any, Callable


class Registry:
    """Named classes of one ``kind`` found in ``package``.

    Args:
        kind: what is registered, for messages (``"attributor"``).
        package: the package whose modules are imported on first use (``_private`` ones are not).
        error: exception class raised for a duplicate or unknown name.
        attribute: class attribute set to the registered name (``name`` or ``registry_name``).
        import_extra: called after the package's modules are imported, to import more (e.g. user
            plugins); if it raises, the registry stays undiscovered, so the error repeats.
        positional: leading constructor arguments that are not options (``1``: the model of an
            attributor or metric; ``0``: datasets take options only).
    """

    def __init__(self, kind: str, package: str, error: type[Exception], attribute: str = "name",
                 import_extra: Callable[[], None] | None = None, positional: int = 0):
        self.kind, self.package, self.error, self.attribute = kind, package, error, attribute
        self.import_extra = import_extra
        self.positional = positional
        self.classes: dict[str, type] = {}
        self._discovered = False

    def register(self, name: str):
        """Class decorator: make the class available under ``name``."""

        def wrap(cls: type) -> type:
            if name in self.classes and self.classes[name] is not cls:
                raise self.error(f"{self.kind.capitalize()} name {name!r} is already registered by "
                                 f"{self.classes[name].__name__}.")
            setattr(cls, self.attribute, name)
            self.classes[name] = cls
            return cls

        return wrap

    def discover(self) -> None:
        if self._discovered:
            return
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__, prefix=f"{self.package}."):
            if not info.name.rsplit(".", 1)[-1].startswith("_"):
                importlib.import_module(info.name)
        if self.import_extra is not None:
            self.import_extra()
        self._discovered = True

    def names(self) -> list[str]:
        self.discover()
        return sorted(self.classes)

    def get(self, name: str) -> type:
        self.discover()
        if name not in self.classes:
            close = difflib.get_close_matches(str(name), list(self.classes), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise self.error(f"Unknown {self.kind} {name!r}.{hint} Available: {', '.join(sorted(self.classes))}.")
        return self.classes[name]

    def options(self, name_or_class: str | type) -> list[str]:
        """Keyword options a class accepts, in signature order: its constructor's, plus its parents'
        while the constructor forwards ``**kwargs`` (so a subclass changing one default need not
        re-spell the others)."""
        cls = self.get(name_or_class) if isinstance(name_or_class, str) else name_or_class
        names: list[str] = []
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            params = list(inspect.signature(init).parameters.values())[1 + self.positional:]  # self, positionals
            names += [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in names]
            if not any(p.kind is p.VAR_KEYWORD for p in params):
                break
        return names

    def check_options(self, name: str, options: dict[str, Any] | Any) -> None:
        """Unknown option names are an error that suggests close matches and lists the accepted ones."""
        accepted = self.options(name)
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), accepted, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise self.error(f"{self.kind.capitalize()} {name!r} has no option(s) {unknown}.{hint} "
                             f"It accepts {sorted(accepted)}.")

    def create(self, name: str, *args: Any, **options: Any) -> Any:
        """An instance of ``name`` built with ``args`` (the positional ones) and checked ``options``."""
        cls = self.get(name)
        self.check_options(name, options)
        return cls(*args, **options)
