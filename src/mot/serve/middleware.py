"""Two ASGI middlewares of the server.

:class:`BodyLimit` refuses request bodies over a size before they are read whole: a declared
``Content-Length`` over the limit is answered at once, and a body sent in chunks is cut off as soon
as it passes the limit. Either way the client gets 413 with a JSON error.

:class:`UnexpectedErrors` answers an exception no handler knows with a JSON 500 and keeps the
connection (Starlette's own last-resort handler re-raises, and the server then drops the client's
keep-alive connection)."""

from __future__ import annotations

import json


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: bodies of at most ``max_bytes``."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._refuse(send)
        received, watched = 0, WatchedSend(send)

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, counted_receive, watched)
        except BodyTooLarge:
            if not watched.started:
                await self._refuse(send)

    async def _refuse(self, send) -> None:
        await send_error(send, 413, f"the request body is larger than this server's limit of {self.max_bytes} bytes",
                         "invalid_request_error")


class UnexpectedErrors:
    """ASGI middleware: an unexpected exception becomes a JSON 500 (counted in ``metrics``)."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        watched = WatchedSend(send)
        try:
            await self.app(scope, receive, watched)
        except Exception as error:  # noqa: BLE001 - the last resort: answer, keep serving
            self.metrics.failed(scope["path"], 500)
            if not watched.started:
                await send_error(send, 500, f"the server failed: {type(error).__name__}: {error}", "server_error")


class WatchedSend:
    """An ASGI ``send`` that remembers whether the response has started (after that, an error can
    no longer be answered with a status of its own)."""

    def __init__(self, send):
        self.send, self.started = send, False

    async def __call__(self, message) -> None:
        self.started = self.started or message["type"] == "http.response.start"
        await self.send(message)


async def send_error(send, status: int, message: str, kind: str) -> None:
    """Answer with ``status`` and the server's JSON error body."""
    body = json.dumps(dict(error=dict(message=message, type=kind, code=status))).encode()
    await send(dict(type="http.response.start", status=status,
                    headers=[(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]))
    await send(dict(type="http.response.body", body=body))
