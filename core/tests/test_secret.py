import copy
import logging
import pickle
from dataclasses import dataclass

import pytest
from overlay_core.services.secret import Secret


@dataclass(frozen=True)
class Opts:
    psk: Secret


@pytest.mark.parametrize("value", ["hunter2-long-psk", b"\x01raw-key-bytes"])
def test_secret_never_prints_its_value(value, caplog):
    s = Secret(value)
    text = value if isinstance(value, str) else repr(value)
    shown = [str(s), repr(s), f"{s}", f"{s!r}", f"{s:>8}", "%s %r" % (s, s), repr(Opts(s)), str([s]), repr({"k": s})]
    for out in shown:
        assert text not in out and "***" in out
    assert f"{s:>5}" == "  ***"
    caplog.set_level(logging.INFO)
    logging.getLogger("overlay.test").info("psk=%s %r", s, s)
    assert value not in caplog.text if isinstance(value, str) else True
    assert s.reveal() == value
    assert not isinstance(s, (str, bytes))


def test_secret_equality_hash_and_copies():
    a, b, c = Secret("x" * 40), Secret("x" * 40), Secret("y" * 40)
    assert a == b and a != c and hash(a) == hash(b)
    assert a != "x" * 40 and Secret(b"x") != Secret("x")
    assert len({a, b, c}) == 2
    assert Secret(a) == a
    assert copy.deepcopy(Opts(a)) == Opts(a)
    assert pickle.loads(pickle.dumps(a)) == a
    assert bool(Secret("")) is False and bool(a)


def test_secret_holds_only_text_or_bytes():
    with pytest.raises(TypeError, match="not int"):
        Secret(42)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        Secret("v").extra = 1  # no __dict__ where a value could be copied to
