"""``overlay-core new-backend``: names, rendering and refusals (the generated package's own tests
run in tests/test_new_backend.py)."""

import ast

import pytest
from overlay_core.cli import build_parser
from overlay_core.errors import OverlayError
from overlay_lab import newbackend
from overlay_lab.newbackend import Names, render, write


def test_the_command_line_finds_new_backend_through_its_entry_point():
    ns = build_parser().parse_args(["new-backend", "mynet", "--dir", "/tmp/x"])
    assert ns.func is newbackend.cmd_new_backend and (ns.backend_name, ns.dir) == ("mynet", "/tmp/x")


def test_every_spelling_of_a_name():
    assert Names.of("my-net") == Names("my-net", "overlay-my-net", "overlay_my_net", "MyNet")
    assert Names.of("geneve2") == Names("geneve2", "overlay-geneve2", "overlay_geneve2", "Geneve2")
    for bad in ("MyNet", "my_net", "2net", "net-", "-net", "my--net", ""):
        with pytest.raises(OverlayError, match="use lower-case letters and digits"):
            Names.of(bad)


def test_the_rendered_files_are_complete_and_valid_python():
    files = render(Names.of("my-net"))
    assert sorted(files) == ["README.md", "pyproject.toml", "src/overlay_my_net/__init__.py",
                             "tests/test_conformance.py", "tests/test_unit.py"]
    for path, text in files.items():
        assert "$" not in text and "hostroutes" not in text, path
        if path.endswith(".py"):
            ast.parse(text)
    assert 'my-net = "overlay_my_net:MyNetBackend"' in files["pyproject.toml"]
    assert 'backend = "my-net"' in files["tests/test_conformance.py"]


def test_it_refuses_a_directory_with_files(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(OverlayError, match="already exists and is not an empty directory"):
        write(Names.of("mynet"), str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    written = write(Names.of("mynet"), str(tmp_path / "new"))
    assert (tmp_path / "new" / written[0]).is_file()


def test_it_refuses_the_name_of_an_installed_backend():
    with pytest.raises(OverlayError, match="a backend named 'host-gw' is already installed"):
        newbackend.cmd_new_backend(build_parser().parse_args(["new-backend", "host-gw"]))
