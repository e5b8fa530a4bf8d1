"""The API's JSON parser: a body is one JSON object, or a 400 that says so.

DRF's ``JSONParser`` lets any JSON value through (so ``request.data.get`` fails on
``[]``) and lets ``RecursionError`` from a deeply nested body escape as a 500. Every
endpoint here takes an object, so the rule is kept once, at the edge.
"""
from __future__ import annotations

import io

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Far deeper than any real request body; checked before decoding, without recursion.
MAX_JSON_DEPTH = 32


def _depth_exceeds(text: str, limit: int) -> bool:
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


class JSONObjectParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        encoding = (parser_context or {}).get("encoding", "utf-8")
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            raise ParseError("JSON parse error: the body is not valid UTF-8.") from None
        if _depth_exceeds(text, MAX_JSON_DEPTH):
            raise ParseError(f"JSON parse error: nested deeper than {MAX_JSON_DEPTH} levels.")
        try:
            data = super().parse(io.BytesIO(text.encode("utf-8")), media_type,
                                 {**(parser_context or {}), "encoding": "utf-8"})
        except RecursionError:  # pragma: no cover - the depth check comes first
            raise ParseError("JSON parse error: nested too deeply.") from None
        if not isinstance(data, dict):
            raise ParseError("JSON parse error: the body must be a JSON object.")
        return data
