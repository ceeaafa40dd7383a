"""ASGI middlewares that refuse a request before the app sees any of it, each answering with a JSON
``{"detail": reason}`` and closing the connection (the body may be left unread).

    HostGuard(BodyLimit(app, max_bytes), allowed_hosts)

- :class:`HostGuard`: a ``Host`` header naming another host is 421 (Misdirected Request). A web page that
  re-points its own domain name at 127.0.0.1 (DNS rebinding) is same-origin with this server in the browser's
  eyes, so the browser's same-origin policy does not stop it from reading /search or /images/N; the name in
  ``Host`` is what gives it away. And a request that changes something (POST, ...) sent by another site's page
  is 403: a page may post a form to any address (the browser sends it, only the answer stays hidden), so the
  ``Origin`` and ``Sec-Fetch-Site`` headers browsers add are checked. Clients without an ``Origin`` (curl,
  scripts) are not browsers led by a stranger's page, and pass.
- :class:`BodyLimit`: a body over the limit is 413, counted while it streams in.

The host check runs first: a stranger's body is never even read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")  # answered to by every server
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # methods that change nothing (RFC 9110, 9.2.1)


def host_name(value: str) -> str:
    """The host of a ``Host`` header or an ``--allow-host`` value, comparable: lower case, without the port,
    the brackets of an IPv6 address, or a final dot (``[::1]:8000`` -> ``::1``, ``Box.:80`` -> ``box``)."""
    value = value.strip().lower()
    if value.startswith("["):
        value = value[1:].split("]", 1)[0]
    elif value.count(":") == 1:  # name:port (a bare IPv6 address has several colons and no port)
        value = value.split(":", 1)[0]
    return value.rstrip(".")


class HostGuard:
    """ASGI middleware: 421 for a ``Host`` outside ``allowed`` (any port), 403 for a cross-site request with
    an unsafe method (see the module docstring).

    Args:
        app: the ASGI app it guards.
        allowed: host names or addresses besides :data:`LOOPBACK_NAMES` (the address the server listens on,
            names of ``--allow-host``).
    """

    def __init__(self, app: Any, allowed: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = frozenset(host_name(h) for h in (*LOOPBACK_NAMES, *allowed))

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get(b"host")
        if host is not None and (name := host_name(host)) not in self.allowed:
            answers = ", ".join(sorted(self.allowed))
            await refuse(
                send,
                421,
                f"this server does not answer to the name {name!r} (only to {answers}); a web page may be "
                f"reaching it through DNS rebinding. If {name!r} is really this server's name, start it with "
                f"--allow-host {name}",
            )
            return
        if scope["method"] not in SAFE_METHODS and (why := self._cross_site(headers)):
            await refuse(
                send,
                403,
                f"cross-site {scope['method']} refused: {why}. Use this server's own page, or a client that "
                "sends no Origin (curl, scripts); if that site's name is really this server's, start it with "
                "--allow-host NAME",
            )
            return
        await self.app(scope, receive, send)

    def _cross_site(self, headers: dict[bytes, str]) -> str | None:
        """Why the request comes from another site's page; None when it does not, or no browser sent it."""
        if headers.get(b"sec-fetch-site", "").strip().lower() == "cross-site":
            return "the browser says another site's page sent it (Sec-Fetch-Site: cross-site)"
        origin = headers.get(b"origin")
        if origin is None:
            return None
        try:  # "null" (a sandboxed frame, a file:// page) and non-URLs have no hostname
            name = urlsplit(origin.strip()).hostname
        except ValueError:
            name = None
        if name is None or host_name(name) not in self.allowed:
            return f"it comes from the page of {origin.strip()[:100]!r}, another site"
        return None


class BodyLimit:
    """ASGI middleware: reads the request body up to ``max_bytes`` before the app sees any of it, and
    answers 413 beyond that, whether the client declared a Content-Length or streamed chunks."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send, f"the request body is {int(declared):,} bytes")
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._too_large(send, "the request body is larger")
                return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # the app waits for a disconnect after the body: pass it on

        await self.app(scope, replay, send)

    async def _too_large(self, send: Any, what: str) -> None:
        await refuse(send, 413, f"{what}; this server takes at most {self.max_bytes:,} bytes per request")


async def refuse(send: Any, status: int, detail: str) -> None:
    """Answer ``status`` with ``{"detail": detail}`` and close the connection (the body may be unread)."""
    payload = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
