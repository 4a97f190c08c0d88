"""Refuse request bodies over a size, before they are read whole: a declared ``Content-Length`` over
the limit is answered at once, and a body sent in chunks is cut off as soon as it passes the limit.
Either way the client gets 413 with a JSON error."""

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
        received, started = 0, False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def watched_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send) -> None:
        body = json.dumps(dict(error=dict(message=f"the request body is larger than this server's limit of "
                                                  f"{self.max_bytes} bytes", type="invalid_request_error",
                                          code=413))).encode()
        await send(dict(type="http.response.start", status=413,
                        headers=[(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]))
        await send(dict(type="http.response.body", body=body))
