"""Every failure as OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}`` with its status.

FastAPI's own errors (unknown route, wrong method, validation) and any unexpected exception are turned into
that shape here; a 5xx body never carries the exception's text (it is logged instead).
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

logger = logging.getLogger("bmojo.serve")

# OpenAI's "code" for the statuses that have one.
_CODES = {404: "not_found", 405: "method_not_allowed", 408: "request_timeout", 413: "request_too_large"}
_CODES |= {414: "uri_too_long", 415: "unsupported_media_type", 503: "server_busy", 504: "timeout"}


class APIError(Exception):
    """An error reported to the client as ``{"error": {...}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.code = code or _CODES.get(status)
        self.type = "server_error" if status >= 500 else "invalid_request_error"

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self, headers: dict | None = None) -> JSONResponse:
        if self.status in (408, 413):  # the rest of the body may still come: it must not be read as a request
            headers = {**(headers or {}), "Connection": "close"}
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def validation_error(err: ValidationError | RequestValidationError) -> APIError:
    """pydantic's errors -> one 400 naming each field (never the rejected value: it may be huge)."""
    parts, param, code = [], None, None
    for e in err.errors()[:5]:
        code = code or (e["type"] if e["type"] == "context_length_exceeded" else None)
        loc = ".".join(str(x) for x in e["loc"] if x != "body")
        param = param or (loc.split(".")[0] or None)
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return APIError(400, "; ".join(parts) or "invalid request", param, code)


def install(app: FastAPI) -> None:
    """Register the handlers that give every error OpenAI's shape."""

    @app.exception_handler(APIError)
    async def _api(request: Request, err: APIError):
        return err.response()

    @app.exception_handler(HTTPException)
    async def _http(request: Request, err: HTTPException):
        status = err.status_code
        if status == 404:
            message = f"no route {request.url.path}"
        elif status == 405:
            allowed = (err.headers or {}).get("Allow", "")
            message = f"{request.method} is not allowed on {request.url.path}" + (f"; use {allowed}" if allowed else "")
        elif isinstance(err.detail, str) and err.detail and status < 500:
            message = err.detail
        else:
            message = HTTPStatus(status).phrase
        return APIError(status, message).response(err.headers)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, err: RequestValidationError):
        return validation_error(err).response()

    @app.exception_handler(ValidationError)
    async def _validation(request: Request, err: ValidationError):
        return validation_error(err).response()

    @app.exception_handler(Exception)
    async def _internal(request: Request, err: Exception):
        logger.error("internal error on %s %s", request.method, request.url.path, exc_info=err)
        return APIError(500, "internal server error; see the server log").response()
