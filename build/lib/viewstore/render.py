"""How values are printed: as Postgres prints them, and as JSON (CLI output and HTTP payloads)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any


def text(value: Any) -> str:
    """A value as Postgres prints it (NULL as the empty string)."""
    if value is None:
        return ""
    if value is True or value is False:
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    return str(value)


def json_value(value: Any) -> Any:
    """A value for json.dumps: numeric as exact decimal text (a JSON number goes through float
    in most readers), NaN and ±Infinity as text, json/jsonb values as themselves."""
    if value is None or isinstance(value, (bool, int, str, dict, list)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return text(value)
