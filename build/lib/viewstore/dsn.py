"""DSN handling: passwords never leave this module in printable form."""

from __future__ import annotations

import re

from psycopg.conninfo import conninfo_to_dict, make_conninfo

# The one regex in viewstore, used only as a fallback on text that is not a parseable DSN
# (for example a libpq error message that echoes a URI).
_URI_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact(dsn: str) -> str:
    """Return the DSN with any password replaced by `***`, in key=value form."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return redact_text(dsn)
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**params)


def redact_text(text: str, *secrets: str) -> str:
    """Scrub passwords from free text such as an error message from libpq."""
    text = _URI_PASSWORD.sub(r"\1***@", text)
    text = _KV_PASSWORD.sub(r"\1***", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def password_of(dsn: str) -> str | None:
    """The password a DSN carries, so callers can scrub it from messages they relay."""
    try:
        return conninfo_to_dict(dsn).get("password")  # type: ignore[return-value]
    except Exception:
        return None
