"""Cross-site request refusal: is this request one a page of another site made a browser send?

The session cookie is `SameSite=Lax`, which alone still lets a page of another *site* (a
sibling subdomain, or any site for top-level navigations) reach us with it. So every
state-changing request (any method but GET/HEAD/OPTIONS) and every WebSocket handshake is
refused when the browser says it comes from another origin:

- `Origin` present: it must be this server's own (`scheme://host[:port]` whose host:port is the
  request's `Host`), or one listed in `ALLOWED_ORIGINS`. `Origin: null` (sandboxed frames,
  `file:` pages) is refused.
- no `Origin` (older browsers on some requests): `Sec-Fetch-Site: cross-site|same-site` is
  refused; else a `Referer` of another host is refused.
- none of these headers: a program, not a browser (curl, a gate, a sensor, a test): allowed.
  Their API keys travel in a header that a browser never adds by itself, so no page of
  another site can borrow them.

Pure functions of the headers: the middleware (`auth.middleware`) calls `refusal`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def origin_of(url: str) -> tuple[str, str] | None:
    """(scheme, host[:port]) of a URL, lower-case, default port dropped; None if not a URL."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme.lower()):
        host = f"{host}:{port}"
    return parts.scheme.lower(), host


def _host_key(host: str) -> str:
    """The `Host` header as `origin_of` spells a host: lower-case, default ports dropped."""
    h = host.strip().lower()
    for port in (":80", ":443"):
        if h.endswith(port):
            return h[: -len(port)]
    return h


def parse_allowed(value: str) -> frozenset[tuple[str, str]]:
    """`ALLOWED_ORIGINS` (comma-separated `https://host[:port]`) as `origin_of` pairs."""
    out = set()
    for item in value.split(","):
        if item.strip():
            o = origin_of(item)
            if o is None:
                raise ValueError(f"ALLOWED_ORIGINS: {item.strip()!r} is not scheme://host[:port]")
            out.add(o)
    return frozenset(out)


def refusal(
    method: str,
    headers: Mapping[str, str],
    allowed: Iterable[tuple[str, str]] = (),
) -> str | None:
    """Why this request is refused as cross-site (None: it is not). `method` is `WS` for a
    WebSocket handshake; `headers` has lower-case names."""
    if method.upper() in SAFE_METHODS:
        return None
    host = _host_key(headers.get("host", ""))
    allowed = frozenset(allowed)
    origin = headers.get("origin")
    if origin is not None:
        if origin.strip().lower() == "null":
            return "a request from an opaque origin (Origin: null) is refused"
        o = origin_of(origin)
        if o is not None and (o[1] == host or o in allowed):
            return None
        return f"a cross-site request from {origin[:100]!r} is refused (Origin is not this site)"
    site = (headers.get("sec-fetch-site") or "").strip().lower()
    if site in ("cross-site", "same-site"):
        return f"a {site} request is refused (Sec-Fetch-Site)"
    referer = headers.get("referer")
    if referer:
        r = origin_of(referer)
        if r is None or not (r[1] == host or r in allowed):
            return "a request referred by another site is refused (Referer is not this site)"
    return None
