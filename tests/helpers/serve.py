"""Helpers of the server tests: serve a model in-process on a free port, talk raw HTTP to it."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from contextlib import contextmanager
from urllib.parse import urlsplit

from inference.engine import Engine
from inference.server.app import Settings, create_app
from inference.server.run import ServerOptions, running

MAX_CONTEXT = 64
NAME = "tiny"


@contextmanager
def serving(model, tokenizer, max_queue: int = 32, settings: Settings | None = None, **options):
    """Yields the base URL of a uvicorn server (on a thread) for ``model``; closes it and its engine after."""
    engine = Engine(model, tokenizer, max_context=MAX_CONTEXT, max_queue=max_queue)
    app = create_app(engine, NAME, settings or Settings(request_timeout=60))
    with running(app, options=ServerOptions(log_level="warning", **options)) as (_, url):
        yield url


def request(url: str, method: str, path: str, body: bytes | None = None, headers=None, timeout: float = 30):
    """(status, headers, parsed JSON body) of one request."""
    req = urllib.request.Request(url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, err.headers, json.loads(err.read())


def post_json(url: str, path: str, payload, timeout: float = 30):
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, _, body = request(url, "POST", path, data, {"Content-Type": "application/json"}, timeout)
    return status, body


def exchange(url: str, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes on one connection and read until the server closes it (or the timeout)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)
