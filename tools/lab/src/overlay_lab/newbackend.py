"""``overlay-core new-backend NAME``: a backend package skeleton that passes its own tests.

The skeleton is the backend of docs/writing-a-backend.md under another name (a test holds the
two together): a pyproject with the ``overlay.backends`` entry point, a working host-gw-like
backend to change, its unit tests, the conformance kit enabled in one class, and a README.
Templates are package data (``templates/*.tmpl``, ``string.Template`` placeholders).
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from importlib import resources
from importlib.metadata import entry_points
from string import Template

from overlay_core import hookimpl
from overlay_core.errors import OverlayError

NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

# template file -> path in the package, with the module directory as {module}
FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "backend.py.tmpl": "src/{module}/__init__.py",
    "test_unit.py.tmpl": "tests/test_unit.py",
    "test_conformance.py.tmpl": "tests/test_conformance.py",
}


@dataclass(frozen=True)
class Names:
    """Every spelling of a backend's name: ``Backend.Type``, distribution, module and class prefix."""

    name: str
    dist: str
    module: str
    cls: str

    @classmethod
    def of(cls, name: str) -> Names:
        if not NAME.match(name):
            raise OverlayError(f"backend name {name!r}: use lower-case letters and digits, words joined by "
                               "dashes, starting with a letter (for example 'mynet' or 'my-net')")
        return cls(name, f"overlay-{name}", "overlay_" + name.replace("-", "_"),
                   "".join(part.capitalize() for part in name.split("-")))


def render(names: Names) -> dict[str, str]:
    """The skeleton's files, path relative to the package directory -> text."""
    values = {"name": names.name, "dist": names.dist, "module": names.module, "cls": names.cls}
    templates = resources.files(__package__).joinpath("templates")
    return {path.format(module=names.module): Template(templates.joinpath(tmpl).read_text()).substitute(values)
            for tmpl, path in FILES.items()}


def installed_backend(name: str) -> str | None:
    """The distribution that already provides backend ``name``, if any."""
    for ep in entry_points(group="overlay.backends"):
        if ep.name.lower() == name:
            return ep.dist.name if ep.dist is not None else "an unknown distribution"
    return None


def write(names: Names, directory: str) -> list[str]:
    """Write the skeleton into ``directory`` (created; it must not hold files yet)."""
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise OverlayError(f"{directory} already exists and is not an empty directory: "
                           "choose another one with --dir")
    written = []
    for path, text in render(names).items():
        full = os.path.join(directory, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as fh:
            fh.write(text)
        written.append(path)
    return written


def cmd_new_backend(ns: argparse.Namespace) -> int:
    names = Names.of(ns.backend_name)
    taken = installed_backend(names.name)
    if taken is not None:
        raise OverlayError(f"a backend named {names.name!r} is already installed (from {taken}): choose another name")
    directory = ns.dir or names.dist
    written = write(names, directory)
    print(f"wrote backend {names.name!r} (distribution {names.dist}) in {directory}: {', '.join(written)}")
    print(f"next: cd {directory} && pip install -e . && pytest tests/test_unit.py; "
          "then read docs/writing-a-backend.md")
    return 0


@hookimpl
def overlay_register_commands(subparsers) -> None:
    parser = subparsers.add_parser("new-backend", help="write a backend package skeleton that passes its own tests")
    parser.add_argument("backend_name", metavar="NAME", help="the Backend.Type users will write, e.g. mynet")
    parser.add_argument("--dir", default="", help="where to write it (default: ./overlay-NAME)")
    parser.set_defaults(func=cmd_new_backend, parser=parser)
