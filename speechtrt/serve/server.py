"""Running the app: uvicorn with a draining shutdown, in the foreground (the CLI) or on a thread (tests, loadtest).

SIGTERM (or SIGINT) starts a drain: admission refuses every new request (503 + Retry-After, WebSocket 1013) while
admitted requests and open streams finish; when none is left — or ``drain_timeout_s`` passed — uvicorn shuts down
and the process exits 0. A second signal exits at once.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from speechtrt.errors import SpeechTRTError
from speechtrt.serve.app import create_app
from speechtrt.serve.config import ServeConfig
from speechtrt.serve.state import ServerState

log = logging.getLogger("speechtrt.serve")


class DrainingServer(uvicorn.Server):
    """uvicorn's server with the drain described in the module docstring."""

    def __init__(self, config: uvicorn.Config, drain_timeout_s: float = 30.0):
        super().__init__(config)
        self.drain_timeout_s = drain_timeout_s
        self.draining_since: float | None = None
        self.loop = None  # the event loop it serves on, once started

    async def startup(self, sockets=None) -> None:
        import asyncio

        self.loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)

    @property
    def state(self) -> ServerState | None:
        return getattr(self.config.app.state, "speechtrt", None)

    def drain(self) -> None:
        """Refuse new work from now on; exit once the admitted work is done (safe from any thread)."""
        if self.draining_since is None:
            self.draining_since = time.monotonic()
            if self.state is not None:
                self.state.admission.start_drain()
            log.info("draining: new requests are refused; waiting for %s in flight",
                     self.state.admission.in_flight if self.state else 0)

    def handle_exit(self, sig, frame) -> None:
        if self.draining_since is None and self.started:
            self.drain()
        else:  # a second signal, or a signal before start-up finished: stop now
            super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if await super().on_tick(counter):
            return True
        if self.draining_since is not None:
            left = self.state.admission.in_flight if self.state else 0
            if left == 0:
                return True
            if time.monotonic() - self.draining_since > self.drain_timeout_s:
                log.warning("drain timeout (%.0f s) with %d request(s) in flight; shutting down", self.drain_timeout_s,
                            left)
                return True
        return False


def uvicorn_config(app, config: ServeConfig, log_level: str = "info") -> uvicorn.Config:
    # no per-message deflate: PCM hardly compresses, and zlib on every frame costs the CPU the models need
    return uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level, lifespan="on",
                          ws_max_size=4 * config.limits.max_frame_bytes, ws_per_message_deflate=False,
                          timeout_graceful_shutdown=5, access_log=log_level == "debug")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one), or an InputError-like failure that says why."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SpeechTRTError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port or --host") \
            from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve_forever(config: ServeConfig, state: ServerState, log_level: str = "info",
                  sock: socket.socket | None = None) -> None:
    """Serve in the foreground until SIGTERM/SIGINT drains the server."""
    sock = sock or bind(config.host, config.port)
    app = create_app(config, state)
    server = DrainingServer(uvicorn_config(app, config, log_level), config.drain_timeout_s)
    server.run(sockets=[sock])


@dataclass
class RunningServer:
    url: str  # http://127.0.0.1:PORT
    server: DrainingServer
    thread: threading.Thread

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + "/v1/stream"

    @property
    def state(self) -> ServerState:
        return self.server.state

    def drain(self) -> None:
        self.server.drain()

    def call(self, fn, timeout: float = 30.0):
        """Run ``fn()`` on the server's event loop (where admission state lives) and return its result."""
        import asyncio

        async def run():
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.server.loop).result(timeout)

    def wait_stopped(self, timeout: float = 60.0) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()


@contextmanager
def running_server(config: ServeConfig, state: ServerState | None = None, log_level: str = "warning",
                   start_timeout_s: float = 300.0):
    """A server on a background thread for the ``with`` block (``config.port`` 0 picks a free port); yields a
    :class:`RunningServer` once it is ready, stops it (drained) after."""
    sock = bind(config.host, config.port)
    app = create_app(config, state)
    server = DrainingServer(uvicorn_config(app, config, log_level), config.drain_timeout_s)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="speechtrt-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise SpeechTRTError(f"the server did not start within {start_timeout_s:.0f} s (see its log above)")
        time.sleep(0.02)
    host, port = sock.getsockname()[:2]
    running = RunningServer(f"http://{host}:{port}", server, thread)
    try:
        yield running
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
