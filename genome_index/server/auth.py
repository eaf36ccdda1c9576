"""Who may ask: the server listens on this machine unless told otherwise, and then wants a token."""

from __future__ import annotations

import hmac
from pathlib import Path

from genome_index.errors import GenomeIndexError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
PUBLIC = ("/", "/favicon.ico", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")  # no token needed
PUBLIC_PREFIXES = ("/static/", "/static-docs/")


def check_host(host: str, token: str | None, insecure: bool) -> None:
    """Refuse to listen beyond this machine without a token, unless told it is fine."""
    if host not in LOCAL_HOSTS and token is None and not insecure:
        raise GenomeIndexError(
            f"--host {host} makes the store reachable from other machines: give --token-file FILE "
            "(clients send `Authorization: Bearer TOKEN`), or --insecure if the network is yours"
        )


def read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise GenomeIndexError(f"{path}: cannot read the token ({exc.strerror})") from None
    if len(token) < 16:
        raise GenomeIndexError(f"{path}: the token must be at least 16 characters")
    return token


def allowed(path: str, authorization: str, token: str | None) -> bool:
    """Whether a request for `path` may be answered: a public page, no token set, or the
    bearer token sent (compared in constant time)."""
    if token is None or path in PUBLIC or path.startswith(PUBLIC_PREFIXES):
        return True
    return hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode())
