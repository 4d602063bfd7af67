"""Every libpq secret is masked, in every form a DSN takes (issue 19.4): key=value, URIs with
a password in the userinfo or in query parameters, and free text that quotes either."""

from __future__ import annotations

import pytest

from viewstore.dsn import SECRET_KEYS, redact, redact_text, secrets_of

# (DSN, its secrets, what must survive redaction)
FORMS = [
    ("host=h user=u password=Pw1 sslpassword=SslPw2 dbname=d", ["Pw1", "SslPw2"], ["host=h", "user=u"]),
    ("host=h password='Pw1 with spaces' sslpassword = SslPw2", ["Pw1", "with spaces", "SslPw2"], ["host=h"]),
    ("postgresql://u:Pw1@h:5432/d?sslpassword=SslPw2&application_name=x", ["Pw1", "SslPw2"], ["host=h", "application_name=x"]),
    ("postgres://u:Pw1%40x@h/d", ["Pw1", "Pw1@x", "Pw1%40x"], ["host=h", "user=u"]),
    ("postgresql://u@h/d?password=Pw1&sslpassword=SslPw2&connect_timeout=3", ["Pw1", "SslPw2"], ["connect_timeout=3"]),
    ("postgresql://u:Pw1@h/d?password=Pw3", ["Pw1", "Pw3"], ["dbname=d"]),
    ("host=h oauth_client_secret=OauthS3cret", ["OauthS3cret"], ["host=h"]),
]  # fmt: skip


def _clean(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, (secret, text)


@pytest.mark.parametrize(("dsn", "secrets", "kept"), FORMS)
def test_every_secret_is_masked(dsn: str, secrets: list[str], kept: list[str]) -> None:
    masked = redact(dsn)
    _clean(masked, secrets)
    assert "***" in masked
    for part in kept:
        assert part in masked, (part, masked)
    # Free text quoting the DSN (a libpq error, a repr), without and with the known secrets.
    text = f'connection to server failed: invalid dsn "{dsn}" (retrying)'
    _clean(redact_text(text), secrets)
    _clean(redact_text(text, *secrets_of(dsn)), secrets)
    assert redact_text(text).startswith("connection to server failed")
    # A message that quotes a secret on its own is scrubbed only by value.
    for secret in secrets_of(dsn):
        assert redact_text(f"server said: {secret}!", *secrets_of(dsn)) == "server said: ***!"


def test_secret_keys_are_libpqs() -> None:
    assert {"password", "sslpassword", "oauth_client_secret"} <= SECRET_KEYS
    # sslpassword is not taken for password and back: each is masked under its own name.
    assert redact_text("sslpassword=a password=b") == "sslpassword=*** password=***"
    assert redact_text("host=h dbname=mypassword") == "host=h dbname=mypassword"
