"""Keep patient identifiers out of request logs.

A patient search (``/patients/?q=KER-103044``, ``/api/patients/?q=...``) puts an
identifier in the query string, and Django's development server, ``django.request``
and an access log would write it to disk. ``RedactQueryStrings`` replaces every query
string in a log record's message with ``?[redacted]``; it sits on every handler of
``LOGGING``. Gunicorn's access log is configured without the query string
(``docker/gunicorn.conf.py``), and so is nginx's (``docker/nginx.conf``).
"""
from __future__ import annotations

import logging
import re

# A path followed by a query string, up to the next space or quote ("GET /a/?q=x HTTP/1.1").
_QUERY = re.compile(r"(?P<path>/[^\s?\"']*)\?[^\s\"']*")
REDACTED = "?[redacted]"


def redact_query_strings(text: str) -> str:
    return _QUERY.sub(lambda m: m.group("path") + REDACTED, text)


class RedactQueryStrings(logging.Filter):
    """Rewrite the record's message without query strings (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is logging's problem, not ours
            return True
        redacted = redact_query_strings(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
