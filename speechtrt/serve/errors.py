"""One error shape for every 4xx/5xx the server sends (OpenAI's), and the exceptions routes raise to send it.

Body: ``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}``. ``type`` is OpenAI's category
(``invalid_request_error``, ``authentication_error``, ``rate_limit_error``, ...); ``code`` names what was hit —
for a limit, the limit's name (``max_text_chars``), and the message states its value. WebSocket errors carry the
same ``error`` object in a ``{"type": "error", ...}`` message before the close.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi.responses import JSONResponse

# HTTP status -> OpenAI error type
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_overloaded",
}

# WebSocket close codes (RFC 6455 / IANA)
WS_NORMAL = 1000
WS_GOING_AWAY = 1001
WS_UNSUPPORTED_DATA = 1003  # text where binary audio was expected
WS_INVALID_PAYLOAD = 1007  # audio that cannot be decoded (odd bytes, NaN)
WS_POLICY = 1008  # protocol or limit violation, authentication
WS_TOO_BIG = 1009
WS_INTERNAL = 1011
WS_TRY_AGAIN_LATER = 1013


@dataclass
class APIError(Exception):
    """An error a route answers with: HTTP ``status`` (and the WebSocket ``close_code`` when it ends a stream)."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    close_code: int = WS_POLICY

    def __str__(self) -> str:
        return self.message

    @property
    def type(self) -> str:
        return ERROR_TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None, code: str | None = "invalid_value") -> APIError:
    return APIError(400, message, param, code, close_code=WS_POLICY)


def limit_exceeded(limit: str, value, message: str, status: int = 400, param: str | None = None) -> APIError:
    """A request over one of :class:`~speechtrt.serve.config.Limits`: the message ends with ``(limit=value)``."""
    return APIError(status, f"{message} (limit {limit}={value})", param, limit,
                    close_code=WS_TOO_BIG if status == 413 else WS_POLICY)
