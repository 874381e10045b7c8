"""Fenced code blocks of a Markdown page, for tests that run every block of a tutorial.

A block's info string says what it is: ``python file=PATH`` / ``toml file=PATH`` (a file of the
package the page builds), ``python run`` (a snippet to execute), ``sh`` (commands, one a line),
``text output`` (what the one command of the ``sh`` block just before it prints).
Anything else is ``unknown``, which the tests refuse: a block no test exercises cannot hide.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    kind: str  # "file", "run", "sh", "output" or "unknown"
    info: str
    text: str
    path: str = ""


def blocks(markdown: str) -> list[Block]:
    out = []
    for match in FENCE.finditer(markdown):
        info, text = match.group(1).strip(), match.group(2)
        words = info.split()
        file = next((w.split("=", 1)[1] for w in words if w.startswith("file=")), "")
        if file:
            out.append(Block("file", info, text, file))
        elif words[1:] == ["run"] and words[0] == "python":
            out.append(Block("run", info, text))
        elif words == ["sh"]:
            out.append(Block("sh", info, text))
        elif words == ["text", "output"]:
            out.append(Block("output", info, text))
        else:
            out.append(Block("unknown", info, text))
    return out


def commands(page: list[Block]) -> list[str]:
    """Every command of the page's ``sh`` blocks, in order."""
    return [line.strip() for b in page if b.kind == "sh" for line in b.text.splitlines() if line.strip()]


def outputs(page: list[Block]) -> dict[str, str]:
    """Each ``text output`` block by the command it shows the output of (an output block must
    follow an ``sh`` block of one command)."""
    out = {}
    for before, block in zip(page, page[1:]):
        if block.kind == "output":
            lines = [line for line in before.text.splitlines() if line.strip()] if before.kind == "sh" else []
            if len(lines) != 1:
                raise ValueError(f"output block {block.text!r} does not follow a one-command sh block")
            out[lines[0].strip()] = block.text
    return out


def write_files(page: list[Block], root: str) -> list[str]:
    """Write the page's file blocks under ``root``; returns their paths relative to it."""
    written = []
    for block in page:
        if block.kind == "file":
            path = os.path.join(root, block.path)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as fh:
                fh.write(block.text)
            written.append(block.path)
    return written


def pip_install_target(source: str, target: str) -> None:
    """Install the package in ``source`` into the directory ``target`` (not into the venv, so the
    other tests never see it); put ``target`` on PYTHONPATH to use it."""
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--target", target, source], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def env_with(path: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": path}


def run_pytest(cwd: str, path: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """pytest in ``cwd`` (a package directory) with ``path`` on PYTHONPATH."""
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=cwd,
                          env=env_with(path), capture_output=True, text=True, timeout=timeout)


def unit_tests_pass(pkg: str, target: str) -> str:
    """Run the package's ``tests/test_unit.py`` (installed in ``target``); assert they pass; their output."""
    proc = run_pytest(pkg, target, "tests/test_unit.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def kit_passes(pkg: str, target: str) -> str:
    """Run all the package's tests, its conformance kit included; assert they pass; their output."""
    proc = run_pytest(pkg, target, "-rs")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc.stdout
