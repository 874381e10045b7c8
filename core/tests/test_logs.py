"""``--log-format json``: one JSON object per line with time, level, logger and message."""

import json
import logging
import subprocess
import sys

from overlay_core.logs import JsonFormatter
from overlay_core.services import Secret


def test_json_lines_carry_time_level_logger_and_the_masked_message():
    args = (Secret("hunter2"), "eth0")
    record = logging.LogRecord("overlay.agent", logging.WARNING, __file__, 1, "psk %s on %s", args, None)
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry.keys() == {"time", "level", "logger", "message"} and "\n" not in line
    assert (entry["level"], entry["logger"], entry["message"]) == ("warning", "overlay.agent", "psk *** on eth0")
    assert entry["time"].endswith("Z") and entry["time"][10] == "T"


def test_a_traceback_stays_inside_its_one_line():
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord("overlay", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line and "ValueError: bad\nthing" in json.loads(line)["exception"]


def test_unknown_log_format_is_one_line():
    out = subprocess.run([sys.executable, "-m", "overlay_core", "run", "--log-format", "xml",
                          "--subnet-file", "/tmp/overlay-test-unused/subnet.env"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stderr.strip() == \
        "overlay-core: error: --log-format 'xml': use one of text, json"
