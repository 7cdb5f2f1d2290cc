"""Structured logs to stderr, as text (logfmt, like containerd's default) or JSON lines."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
           "warning": logging.WARNING, "error": logging.ERROR, "fatal": logging.CRITICAL,
           "panic": logging.CRITICAL}
_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning",
          logging.ERROR: "error", logging.CRITICAL: "fatal"}
# attributes every LogRecord has; anything else came in through extra={...}
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _timestamp(record: logging.LogRecord) -> str:
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{base}.{int((record.created % 1) * 1_000_000):06d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = {"time": _timestamp(record), "level": _NAMES.get(record.levelno, "info"),
                 "msg": record.getMessage(), **_fields(record)}
        if record.exc_info and record.levelno >= logging.ERROR:
            parts["error"] = self.formatException(record.exc_info)
        return " ".join(f"{k}={_quote(v)}" for k, v in parts.items())


def _quote(value: Any) -> str:
    text = str(value)
    if text and all(c.isalnum() or c in "-._:/@+" for c in text):
        return text
    return json.dumps(text)


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": _timestamp(record), "level": _NAMES.get(record.levelno, "info"),
               "msg": record.getMessage()}
        out.update({k: v if isinstance(v, (int, float, bool, type(None))) else str(v)
                    for k, v in _fields(record).items()})
        if record.exc_info and record.levelno >= logging.ERROR:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("boltimages")
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS.get(level, logging.INFO))
    root.propagate = False
