"""Secrets never reach a log line, an error message or the database.

Blocks register each credential they use (``register_secret``); ``redact`` masks every
registered value in a text, and ``install_log_redaction`` puts a filter on the log
handlers that masks them in every record — the backstop behind messages that are
built not to contain secrets in the first place.
"""

from __future__ import annotations

import logging
import threading

MASK = "***"
_MIN_SECRET_LENGTH = 6
_secrets: set[str] = set()
_lock = threading.Lock()
# The loggers whose handlers see run logs: the root (console), and Prefect's run
# loggers, which send to the Prefect API without propagating there first.
_RUN_LOGGERS = ("", "prefect", "prefect.flow_runs", "prefect.task_runs")


def register_secret(*values: str) -> None:
    """Mask these values from now on (too-short values would mask ordinary text)."""
    with _lock:
        _secrets.update(v for v in values if v and len(v) >= _MIN_SECRET_LENGTH)
    install_log_redaction()


def registered_secrets() -> list[str]:
    """The values registered so far (for the secret scan, which looks for them)."""
    with _lock:
        return sorted(_secrets)


def redact(text: str) -> str:
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Masks registered secrets in a record's message and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_FILTER = RedactingFilter()


def install_log_redaction() -> None:
    """Attach the filter to every handler of the run loggers (idempotent)."""
    for name in _RUN_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
