"""Logging: structlog, JSON lines by default (journald friendly), with bound context.

The standard library's loggers (aiokafka, aiohttp, asyncio...) go through the same renderer
(structlog's ProcessorFormatter), so that in the JSON format every line is one JSON object,
whatever newlines, quotes or tracebacks a library message holds.

Every line, ours or a library's, passes `redact_secrets` just before it is rendered (after the
traceback became text): secret values the process has loaded, fields named like a secret and
`password=...`-like text are written `***`.
"""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.typing import EventDict, WrappedLogger

from pipeline.secret import redact


class _Stderr:
    """sys.stderr as it is when a line is written, not when logging was configured (a command
    run inside a test, or embedded, writes where stderr is at that moment)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def redact_secrets(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: the event with every secret masked (see `pipeline.secret.redact`)."""
    return {k: redact(v, k) for k, v in event_dict.items()}


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure(level: str = "info", fmt: str = "json") -> None:
    """Set up structlog (and the stdlib loggers of the libraries) for the daemon, on stderr.

    Can be called again on reload to change the level or format.
    """
    lvl = _LEVELS.get(level, logging.INFO)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamper,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
    )
    handler = logging.StreamHandler(_Stderr())
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Library chatter stays at warning unless debugging.
    root.setLevel(logging.WARNING if lvl > logging.DEBUG else logging.DEBUG)
