"""Logging set-up of `teleconsult serve`: text or JSON lines (python-json-logger), an access log
without query strings (join links carry tokens there), and quiet third-party loggers at INFO."""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from pythonjsonlogger.json import JsonFormatter

ACCESS_LOGGER = "teleconsult.access"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# chatter that says nothing an operator acts on, silenced unless log_level is debug:
# ICE check states per candidate pair, DICOM encoding notes, MediaPipe/absl start-up, Alembic
QUIET = ("aioice", "highdicom", "absl", "mediapipe", "alembic")
# probes and metrics scrapes arrive every few seconds: their access lines go at DEBUG
PROBES = ("/healthz", "/readyz", "/metrics")


def configure(level: str, fmt: Literal["text", "json"] = "text") -> None:
    """Set the root handler (stderr: journald keeps it) and the quiet defaults."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                json_ensure_ascii=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if level != "debug":
        for name in QUIET:
            logging.getLogger(name).setLevel(logging.WARNING)
        # MediaPipe's C++ side logs through glog/TensorFlow before Python logging sees it
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class AccessLogger(AbstractAccessLogger):
    """One line per HTTP request: client, method, path (never the query), status, size, time."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        path = request.path
        level = logging.DEBUG if path in PROBES else logging.INFO
        if not self.logger.isEnabledFor(level):
            return
        self.logger.log(
            level,
            '%s "%s %s" %d %d %.1f ms',
            request.remote,
            request.method,
            path,
            response.status,
            response.body_length,
            time * 1000,
            extra={
                "remote": request.remote,
                "method": request.method,
                "path": path,
                "status": response.status,
                "bytes": response.body_length,
                "duration_ms": round(time * 1000, 1),
            },
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.DEBUG) or self.logger.isEnabledFor(logging.INFO)
