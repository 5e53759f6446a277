"""The server's log output: text for people, or one JSON object per line for collectors.

``--log-format json`` (``TREADLE_LOG_FORMAT=json``) writes each record as ``{"ts", "level",
"logger", "message"}`` plus, where known, ``tenant``, ``instance_id`` and ``trace_id`` (the work
the line is about, from :func:`engine.log_context`) and ``exception`` (a traceback). uvicorn's
own loggers write through the same handler.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

from engine import log_context

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(log_context())
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(level: str, fmt: str) -> None:
    """Send every log record to stderr at ``level`` and above, as text or JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
