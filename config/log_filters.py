"""Logging filters: no credential in any log line.

A webhook's path holds its connection's token (`/hooks/<token>/`), and Django's request logger
writes the path of every 4xx/5xx ("Bad Request: /hooks/..."). `RedactWebhookTokens` replaces the
token with `<token>` in the message and its arguments before any handler sees the record.
"""

from __future__ import annotations

import logging
import re

TOKEN_IN_PATH = re.compile(r"(/hooks/)[^/\s?\"']+")


def redact(text: str) -> str:
    return TOKEN_IN_PATH.sub(r"\1<token>", text)


class RedactWebhookTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "/hooks/" in record.msg:
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        request = getattr(record, "request", None)
        if request is not None and "/hooks/" in getattr(request, "path", ""):
            record.request = None  # handlers that render the request would print the path
        return True
