"""A backend's ``Backend`` options, declared once as a frozen dataclass and read with Flannel's errors.

What: ``option("ListenPort", 51820, between=(1, 65535))`` declares one key of the network
config's ``Backend`` object (its Flannel name, default, kind and limits) as a dataclass field;
``read_options(WgOptions, config, backend="wireguard")`` reads every such field and returns the
dataclass, or raises one ``ConfigError`` line such as
``wireguard: ListenPort must be a whole number from 1 to 65535, got 'x'``.
Why: every backend otherwise hand-writes the same type and range checks with its own wording.
Keys are matched case-insensitively (``NetworkConfig.backend_option``); values are compared as
given (Flannel compares ``Mode`` case-sensitively). A JSON ``null`` counts as absent. Unknown keys
are not this module's business (``Backend.option_names`` is: core refuses them with a suggestion).
A value can be turned into what the backend keeps (``parse=``: a URL normalised, base64 decoded)
and kept out of every message (``secret=True``); steps that need more than one key (credentials
from the environment when the config has none) follow ``read_options`` in the backend.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from .config import NetworkConfig
from .errors import ConfigError
from .services.secret import Secret

T = TypeVar("T")
_META = "overlay_option"
KINDS = (int, bool, str, float, Secret)


@dataclasses.dataclass(frozen=True)
class _Spec:
    name: str
    kind: type
    between: tuple[float, float] | None
    choices: tuple[Any, ...] | None
    min_len: int | None
    check: Callable[[Any], None] | None
    parse: Callable[[Any], Any] | None
    secret: bool


def option(name: str, default: Any, *, kind: type | None = None, between: tuple[float, float] | None = None,
           choices: Sequence[Any] | None = None, min_len: int | None = None,
           check: Callable[[Any], None] | None = None, parse: Callable[[Any], Any] | None = None,
           secret: bool = False) -> Any:
    """A dataclass field read from the ``Backend`` key ``name`` (its spelling in messages).

    ``kind`` defaults to the type of ``default`` (give it when the default is None); one of int
    (a JSON true/false is refused), bool, str, float (whole numbers accepted) and ``Secret``
    (from a string; never shown in a message). ``between=(low, high)`` is inclusive, for int and
    float; ``choices`` lists the allowed values; ``min_len`` is a minimum length for str and
    Secret. ``check(value)`` runs after those and raises ``ValueError("must be …")``: its message
    completes the sentence "<backend>: <name> …". ``parse(value)`` runs last and returns what the
    field holds (it may raise ``ValueError`` the same way). ``secret=True`` keeps the value out of
    every message (implied by the ``Secret`` kind).
    """
    kind = kind if kind is not None else type(default)
    if kind not in KINDS:
        raise TypeError(f"option {name}: kind must be one of int, bool, str, float, Secret, not {kind.__name__}")
    if between is not None and kind not in (int, float):
        raise TypeError(f"option {name}: between= applies to int and float options")
    if min_len is not None and kind not in (str, Secret):
        raise TypeError(f"option {name}: min_len= applies to str and Secret options")
    spec = _Spec(name, kind, between, tuple(choices) if choices is not None else None, min_len, check, parse,
                 secret or kind is Secret)
    return dataclasses.field(default=default, metadata={_META: spec})


def option_names(cls: type) -> tuple[str, ...]:
    """The ``Backend`` keys the ``option`` fields of dataclass ``cls`` read, in field order: what a
    backend declares as ``Backend.option_names``."""
    specs = (field.metadata.get(_META) for field in dataclasses.fields(cls))
    return tuple(spec.name for spec in specs if spec is not None)


def read_options(cls: type[T], config: NetworkConfig | Mapping[str, Any], backend: str) -> T:
    """An instance of the dataclass ``cls`` with each ``option`` field read from ``config``'s ``Backend``
    (or from a ``Backend`` object given as a mapping; its keys match in any case).

    Absent keys keep their default (the default is not checked). Raises ``ConfigError`` for the
    first invalid value, in field order.
    """
    if isinstance(config, NetworkConfig):
        lookup = config.backend_option
    else:
        lowered = {key.lower(): value for key, value in config.items()}
        lookup = lambda name: lowered.get(name.lower())  # noqa: E731
    values = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        spec = field.metadata.get(_META)
        if spec is None:
            continue
        raw = lookup(spec.name)
        if raw is not None:
            values[field.name] = _convert(spec, raw, backend)
    return cls(**values)


def _convert(spec: _Spec, raw: Any, backend: str) -> Any:
    def fail(reason: str, show: bool = True) -> ConfigError:
        got = f", got {raw!r}" if show and not spec.secret else ""
        return ConfigError(f"{backend}: {spec.name} {reason}{got}")

    kind = spec.kind
    if kind is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise fail(f"must be a whole number{_range(spec)}")
        value: Any = raw
    elif kind is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise fail(f"must be a number{_range(spec)}")
        value = float(raw)
    elif kind is bool:
        if not isinstance(raw, bool):
            raise fail("must be true or false")
        value = raw
    else:
        if not isinstance(raw, str):
            raise fail(f"must be a string, got a JSON {_json_type(raw)}" if spec.secret else "must be a string")
        if spec.min_len is not None and len(raw) < spec.min_len:
            got = f", got {len(raw)}" if spec.secret else ""
            raise fail(f"must be at least {spec.min_len} characters long{got}")
        value = raw if kind is str else Secret(raw)
    if spec.between is not None and not spec.between[0] <= value <= spec.between[1]:
        raise fail(f"must be a {'whole number' if kind is int else 'number'}{_range(spec)}")
    if spec.choices is not None and value not in spec.choices:
        raise fail(f"must be one of {', '.join(repr(c) for c in spec.choices)}")
    try:
        if spec.check is not None:
            spec.check(value)
        return value if spec.parse is None else spec.parse(value)
    except ValueError as exc:
        raise fail(str(exc)) from None


def _range(spec: _Spec) -> str:
    return f" from {spec.between[0]} to {spec.between[1]}" if spec.between else ""


def _json_type(raw: Any) -> str:
    names = {bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}
    return names.get(type(raw), type(raw).__name__)
