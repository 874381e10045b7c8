"""The agent's log lines: readable text by default, or one JSON object per line (``--log-format json``)
for a log pipeline (journald's JSON output, Kubernetes' log collectors) that indexes fields.

Secrets are masked before a message is formatted (``Secret`` prints ``***``, the CLI masks the etcd
password), so both formats carry the same, already masked, text.
"""

from __future__ import annotations

import json
import logging
import sys
import time

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """``{"time": RFC 3339 UTC with milliseconds, "level", "logger", "message"}``, plus
    ``"exception"`` (the formatted traceback) when the record carries one."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry = {"time": f"{stamp}.{int(record.msecs):03d}Z", "level": record.levelname.lower(),
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(verbosity: int, log_format: str = "text") -> None:
    """Log to stderr at INFO (DEBUG from verbosity 2) in ``log_format``; chatty libraries at WARNING."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbosity >= 2 else logging.INFO, handlers=[handler])
    for noisy in ("pyroute2", "grpc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
