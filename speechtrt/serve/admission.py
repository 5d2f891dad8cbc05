"""Admission: the one place where the server decides whether a request may start, and says why not.

Each service (and each model of a service) has a :class:`Gate` of ``capacity`` concurrent requests. A request waits
for a permit up to ``Limits.admission_wait_s`` (FIFO), then is refused: HTTP 429 with ``Retry-After`` when the gate
is full, 503 with ``Retry-After`` while the server drains for shutdown; on a WebSocket the same error message is
followed by close code 1013 (try again later). Admitted work is never dropped. Input limits (body size, text
length, audio duration) and the optional API key are checked here too; every refusal names the limit and its value.

Gates live on the event loop's thread (no locks): ``acquire`` is awaited by route handlers, ``release`` is called by
them when the response is done or the client went away.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections import deque
from contextlib import asynccontextmanager

from starlette.exceptions import HTTPException as StarletteHTTPException

from speechtrt.serve.config import Limits
from speechtrt.serve.errors import WS_TRY_AGAIN_LATER, APIError, limit_exceeded
from speechtrt.serve.metrics import ServerMetrics


class Gate:
    """``capacity`` concurrent requests of one service/model, a bounded FIFO wait for the rest."""

    def __init__(self, admission: "Admission", service: str, capacity: int):
        if capacity < 1:
            raise ValueError(f"gate {service}: capacity must be >= 1, got {capacity}")
        self.admission = admission
        self.service = service
        self.capacity = capacity
        self.in_flight = 0
        self._waiters: deque[asyncio.Future] = deque()
        self._full_since: float | None = None

    @property
    def waiting(self) -> int:
        return sum(not w.done() for w in self._waiters)

    @property
    def free(self) -> bool:
        return self.in_flight < self.capacity and not self.waiting

    def saturated_for(self, now: float | None = None) -> float:
        """Seconds this gate has been full without a break (0 when a permit is free)."""
        if self._full_since is None:
            return 0.0
        return (now or time.monotonic()) - self._full_since

    def try_acquire(self) -> bool:
        """Take a permit now if one is free (and nobody queues ahead)."""
        self.admission.refuse_if_draining(self.service)
        if not self.free:
            return False
        self._take()
        return True

    async def acquire(self, wait_s: float | None = None) -> None:
        """Take a permit, waiting up to ``wait_s`` (default ``Limits.admission_wait_s``); else raise 429/503."""
        if self.try_acquire():
            return
        wait_s = self.admission.limits.admission_wait_s if wait_s is None else wait_s
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), wait_s)
        except asyncio.TimeoutError:
            if waiter.done() and not waiter.cancelled():  # granted just as the wait ran out: keep it
                return
            waiter.cancel()
            raise self.admission.refusal(self.service, "capacity", self.capacity,
                                         f"{self.service}: all {self.capacity} slots are busy and none freed within "
                                         f"{wait_s:g} s") from None
        except asyncio.CancelledError:  # the client went away while waiting
            if waiter.done() and not waiter.cancelled():
                self.release()  # it was granted; hand it on
            else:
                waiter.cancel()
            raise
        finally:
            self._prune()
        if self.admission.draining:  # granted while a drain started: give it back, refuse
            self.release()
            self.admission.refuse_if_draining(self.service)

    def _take(self) -> None:
        self.in_flight += 1
        if self.in_flight >= self.capacity and self._full_since is None:
            self._full_since = time.monotonic()

    def release(self) -> None:
        self.in_flight -= 1
        while self._waiters:  # hand the permit to the first live waiter
            w = self._waiters.popleft()
            if not w.done():
                self._take()
                w.set_result(None)
                return
        if self.in_flight < self.capacity:
            self._full_since = None

    def _prune(self) -> None:
        while self._waiters and self._waiters[0].done():
            self._waiters.popleft()

    @asynccontextmanager
    async def permit(self, wait_s: float | None = None):
        await self.acquire(wait_s)
        try:
            yield self
        finally:
            self.release()


class Admission:
    """The server's admission state: gates, the drain flag, the API key, the input limits."""

    def __init__(self, limits: Limits, metrics: ServerMetrics, api_key: str | None = None):
        self.limits = limits
        self.metrics = metrics
        self.api_key = api_key
        self.draining = False
        self.gates: dict[str, Gate] = {}

    def gate(self, service: str, capacity: int) -> Gate:
        self.gates[service] = Gate(self, service, capacity)
        return self.gates[service]

    @property
    def in_flight(self) -> int:
        return sum(g.in_flight for g in self.gates.values())

    def start_drain(self) -> None:
        """Refuse every new request from now on (503, WebSocket 1013); admitted ones finish."""
        self.draining = True
        self.metrics.draining.set(1)

    # ---- refusals

    def refusal(self, service: str, limit: str, value, message: str) -> APIError:
        """429 (a gate is full) or 503 (draining, not ready), with Retry-After, counted per service and limit."""
        self.metrics.refused.labels(service, limit).inc()
        status = 503 if limit in ("draining", "not_ready") else 429
        return APIError(status, f"{message}; retry after {self.limits.retry_after_s} s (limit {limit}={value})",
                        None, limit, {"Retry-After": str(self.limits.retry_after_s)}, close_code=WS_TRY_AGAIN_LATER)

    def refuse_if_draining(self, service: str) -> None:
        if self.draining:
            raise self.refusal(service, "draining", True, "the server is shutting down and takes no new requests")

    # ---- authentication

    def check_key(self, authorization: str | None, query_key: str | None = None) -> None:
        """401 unless the request carries the key (``Authorization: Bearer KEY``, or ``?api_key=`` on WebSockets,
        whose browser clients cannot set headers). No key configured: everything passes."""
        if self.api_key is None:
            return
        given = None
        if authorization and authorization.lower().startswith("bearer "):
            given = authorization[7:].strip()
        given = given or query_key
        if not given or not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise APIError(401, "missing or wrong API key: send `Authorization: Bearer <key>` (the key given to "
                           "`speechtrt serve --api-key` or SPEECHTRT_API_KEY)", None, "invalid_api_key",
                           {"WWW-Authenticate": "Bearer"})

    # ---- input limits

    def check_text(self, text: str, param: str = "input") -> None:
        n = len(text)
        if n > self.limits.max_text_chars:
            self.metrics.refused.labels("speech", "max_text_chars").inc()
            raise limit_exceeded("max_text_chars", self.limits.max_text_chars,
                                 f"{param} has {n} characters, more than the server accepts", param=param)

    def check_audio_seconds(self, seconds: float, service: str, param: str | None = "file") -> None:
        if seconds > self.limits.max_audio_s:
            self.metrics.refused.labels(service, "max_audio_s").inc()
            raise limit_exceeded("max_audio_s", self.limits.max_audio_s,
                                 f"audio of {seconds:.1f} s is longer than the server accepts", 413, param)


class BodyLimit:
    """ASGI middleware: an HTTP body over ``max_bytes`` is answered 413 in the error shape before the route reads it
    (by ``Content-Length``, or while a chunked body streams in)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _error(self, scope) -> APIError:
        state = getattr(getattr(scope.get("app"), "state", None), "speechtrt", None)
        if state is not None:
            state.metrics.refused.labels("http", "max_body_bytes").inc()
        return limit_exceeded("max_body_bytes", self.max_bytes, "request body is larger than the server accepts",
                              413)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._error(scope).response()(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self._error(scope))
            return message

        await self.app(scope, limited_receive, send)


class BodyTooLarge(StarletteHTTPException):
    """A body that grew past the limit while streaming in (an HTTPException: FastAPI re-raises those from body
    parsing, so the app's handler answers with ``error``)."""

    def __init__(self, error: APIError):
        super().__init__(error.status, error.message)
        self.error = error


class RequireKey:
    """ASGI middleware: with an API key set, an HTTP request to ``/v1/...`` without it is answered 401 before its
    body is read (WebSockets check the key in their handler, where the error can be sent before the close)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("path", "").startswith("/v1/"):
            state = getattr(getattr(scope.get("app"), "state", None), "speechtrt", None)
            if state is not None and state.admission.api_key is not None:
                headers = dict(scope.get("headers") or [])
                auth = headers.get(b"authorization", b"").decode("latin-1") or None
                try:
                    state.admission.check_key(auth)
                except APIError as err:
                    return await err.response()(scope, receive, send)
        await self.app(scope, receive, send)
