"""Import one part of a library without its package ``__init__``.

pyroute2's and prometheus_client's ``__init__`` re-export every API they have, which costs
the agent about 7 MB of RSS for code it never runs (pyroute2 alone: 163 modules where
rtnetlink needs 99). ``import_part`` registers the package as a bare module whose
``__path__`` lets submodules import normally, and completes it on first use of anything
else: ``from pyroute2 import NDB`` in a plugin then runs the real ``__init__`` and works as
usual. A package somebody already imported whole is used as it is.

Private to core (metrics, the netlink thread): plugins import their libraries the usual way,
and ``tests/test_lean.py`` pins that they still can after core's lean import.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any


def import_part(package: str, *modules: str) -> list[types.ModuleType]:
    """Import ``package.<module>`` for each of ``modules`` and return them, in order.

    Raises ModuleNotFoundError naming the package when it is not installed.
    """
    if package not in sys.modules:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.submodule_search_locations is None:
            raise ModuleNotFoundError(f"{package} is not installed: pip install overlay-core again", name=package)
        shell = types.ModuleType(package)
        shell.__spec__ = spec
        shell.__path__ = list(spec.submodule_search_locations)
        shell.__file__ = spec.origin
        shell.__loader__ = spec.loader

        def complete(name: str) -> Any:
            """A submodule is imported alone; anything else runs the real ``__init__`` first."""
            if not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}") is not None:
                return importlib.import_module(f"{package}.{name}")
            del shell.__getattr__  # type: ignore[attr-defined]
            spec.loader.exec_module(shell)  # type: ignore[union-attr]
            return getattr(shell, name)

        shell.__getattr__ = complete  # type: ignore[attr-defined]
        sys.modules[package] = shell
    return [importlib.import_module(f"{package}.{module}") for module in modules]
