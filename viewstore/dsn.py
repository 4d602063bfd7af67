"""DSN handling: secrets never leave this module in printable form.

A secret is any libpq parameter libpq itself marks as one (`dispchar` "*": password,
sslpassword, oauth_client_secret), the SCRAM keys, and the password of a URI's
`user:password@`. They are masked in both DSN forms, key=value and URI (query parameters
included), and in free text that quotes a DSN (issue 19.4).
"""

from __future__ import annotations

import re
from contextlib import suppress
from urllib.parse import quote, unquote

from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo


def _secret_keys() -> frozenset[str]:
    keys = {"password", "sslpassword", "oauth_client_secret"}
    keys |= {"scram_client_key", "scram_server_key"}  # libpq shows these as debug options only
    with suppress(Exception):  # a newer libpq may add secrets, and marks them itself
        keys |= {o.keyword.decode() for o in pq.Conninfo.get_defaults() if o.dispchar == b"*"}
    return frozenset(keys)


SECRET_KEYS = _secret_keys()
MASK = "***"

_KEYS = "|".join(sorted(SECRET_KEYS, key=len, reverse=True))
# Fallbacks for text that is not a parseable DSN (for example a libpq error message that
# echoes one). The URI's userinfo may contain anything up to its last '@' before a space.
_URI_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)([^@\s]*)@")
_URI_PARAM = re.compile(rf"([?&](?:{_KEYS})=)[^&\s#]*", re.IGNORECASE)
# Not after a word character, so `sslpassword` is not taken for `password`, and not after
# ?/& (a URI's query, done above).
_KV_PARAM = re.compile(rf"((?<![\w?&])(?:{_KEYS})\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact(dsn: str) -> str:
    """Return the DSN with every secret replaced by `***`, in key=value form."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return redact_text(dsn)
    for key in params:
        if key in SECRET_KEYS:
            params[key] = MASK
    return make_conninfo(**params)


def redact_text(text: str, *secrets: str) -> str:
    """Scrub secrets from free text such as an error message from libpq: DSN secrets in
    key=value and URI form, and each of `secrets` wherever it appears."""
    text = _URI_PASSWORD.sub(rf"\1{MASK}@", text)
    text = _URI_PARAM.sub(rf"\1{MASK}", text)
    text = _KV_PARAM.sub(rf"\1{MASK}", text)
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, MASK)
    return text


def secrets_of(dsn: str) -> list[str]:
    """The secrets a DSN carries (each also percent-encoded, as a URI spells it), so callers
    can scrub them from messages they relay."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return []
    found = [str(v) for k, v in params.items() if k in SECRET_KEYS and v]
    # A URI's query may override its userinfo's password, which still stands in the text.
    userinfo = _URI_PASSWORD.match(dsn.strip())
    if userinfo:
        found += [p for p in (unquote(userinfo.group(2)),) if p and p not in found]
    return found + [q for q in (quote(s, safe="") for s in found) if q not in found]


def params(dsn: str) -> dict[str, str]:
    """The parameters of a Postgres connection string (URI or key=value), as libpq reads it;
    ValueError if it is not one. For connecting through another client (the Iceberg export's
    SQLAlchemy catalog), never for printing: secrets are in it."""
    try:
        return {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    except Exception:
        raise ValueError("not a Postgres connection string") from None
