"""Keep secrets out of every message, log line and file the LLM client produces.

Servers echo credentials back in error bodies ("Incorrect API key provided: sk-ab***yz"), and URLs can
carry them (``https://user:token@host/v1?api-key=...``). Everything that leaves the client as text goes
through a :class:`Redactor` first.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# A fragment of the key this long is enough to identify it; shorter overlaps ("sk-") are common words.
MIN_FRAGMENT = 6


class Redactor:
    """Replaces a secret, and any fragment of it of ``MIN_FRAGMENT`` or more characters, by ``***``."""

    def __init__(self, *secrets: str | None) -> None:
        self.secrets = [s for s in secrets if s and len(s) >= MIN_FRAGMENT]

    def __call__(self, text: object) -> str:
        result = str(text)
        for secret in self.secrets:
            result = _mask_fragments(result, secret)
        return result


def _mask_fragments(text: str, secret: str) -> str:
    """Mask every maximal run of ``text`` that is a substring of ``secret`` and at least MIN_FRAGMENT long."""
    if secret in text:
        text = text.replace(secret, MASK)
    # Index the secret's fragments of the minimum length; extend matches greedily from there.
    fragments = {secret[i : i + MIN_FRAGMENT] for i in range(len(secret) - MIN_FRAGMENT + 1)}
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i : i + MIN_FRAGMENT] in fragments:
            j = i + MIN_FRAGMENT
            while j < len(text) and text[i : j + 1] in secret:
                j += 1
            out.append(MASK)
            i = j
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def public_url(url: str) -> str:
    """``scheme://host[:port]/path`` of a URL: no user, password, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def url_has_credentials(url: str) -> bool:
    """Whether a URL carries a user, a password or a query string (where keys hide)."""
    parts = urlsplit(url)
    return bool(parts.username or parts.password or parts.query or re.search(r"key|token|secret", parts.fragment, re.I))
