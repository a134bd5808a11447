"""Serving the app with uvicorn on a socket we bound ourselves (so a taken port is known before the model loads).

uvicorn/h11 bring the HTTP parsing, keep-alive and its timeout, the listen backlog, a connection limit, and the
graceful shutdown on SIGTERM/SIGINT: stop accepting, let the in-flight requests finish, then run the app's
shutdown (which closes the engine).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


class JSONErrorH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, whose reply to a malformed request (bad framing, a bad Content-Length, headers
    over the size limit) is OpenAI's JSON error instead of plain text."""

    def send_400_response(self, msg: str) -> None:
        error = {"message": f"malformed HTTP request: {msg}", "type": "invalid_request_error", "param": None}
        body = json.dumps({"error": error | {"code": "bad_request"}}).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers), h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


@dataclass(frozen=True)
class ServerOptions:
    """uvicorn's connection handling."""

    backlog: int = 2048  # pending connections the kernel keeps; a 64-client burst must not be dropped here
    max_connections: int = 1024  # uvicorn's limit_concurrency: beyond it uvicorn itself answers 503
    keep_alive: int = 5  # seconds an idle keep-alive connection stays open
    graceful_timeout: float | None = None  # seconds shutdown waits for in-flight requests (None: until done)
    max_header_bytes: int = 64 * 1024  # request line + headers; past it h11 answers 400
    log_level: str = "info"


def bind(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket; raises OSError (e.g. EADDRINUSE) with nothing else started."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=backlog)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def make_server(app, options: ServerOptions) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        http=JSONErrorH11Protocol,  # h11: pure Python and always installed with uvicorn
        lifespan="on",
        backlog=options.backlog,
        limit_concurrency=options.max_connections,
        timeout_keep_alive=options.keep_alive,
        timeout_graceful_shutdown=options.graceful_timeout,
        h11_max_incomplete_event_size=options.max_header_bytes,
        log_level=options.log_level,
        server_header=False,
    )
    return uvicorn.Server(config)


@contextmanager
def running(app, host: str = "127.0.0.1", port: int = 0, options: ServerOptions | None = None):
    """Serve ``app`` on a background thread (no signal handling there); yields ``(server, url)``."""
    sock = bind(host, port, (options or ServerOptions()).backlog)
    server = make_server(app, options or ServerOptions())
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise RuntimeError("the server did not start")
    try:
        yield server, url_of(sock)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
