"""Request-size limits as a small ASGI middleware: URL length (414) and body size (413), both as JSON errors.

uvicorn/h11 already refuse malformed requests, headers over ``h11_max_incomplete_event_size`` and bad framing;
this adds the limits they do not have. A declared ``Content-Length`` over the limit is refused before any of the
body is read; a chunked body is counted as it arrives and refused once it passes the limit.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import APIError


class BodyTooLarge(APIError):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is over the limit of {limit} bytes")


class RequestLimits:
    """Wraps the app: refuses long URLs and large bodies with OpenAI-shaped JSON errors."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_url_bytes: int):
        self.app, self.max_body, self.max_url = app, max_body_bytes, max_url_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        url = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if url > self.max_url:
            return await APIError(414, f"the URL is over {self.max_url} bytes").response()(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return await BodyTooLarge(self.max_body).response()(scope, receive, send)

        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        await self.app(scope, counted, send)
