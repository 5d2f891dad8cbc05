"""``--url`` of a load test: a running ``speechtrt serve`` answers there (checked before any work; httpx only)."""

from __future__ import annotations

from speechtrt.errors import InputError


def check_server_url(url: str, timeout_s: float = 5.0) -> None:
    """``--url`` answers ``GET /health`` (a running ``speechtrt serve``); InputError naming what failed otherwise, so
    an unreachable server is refused before recordings are made and models loaded."""
    import httpx

    if not url.startswith(("http://", "https://")):
        raise InputError(f"--url {url!r}: give the server's base URL, e.g. http://127.0.0.1:8000")
    try:
        status = httpx.get(url.rstrip("/") + "/health", timeout=timeout_s).status_code
    except httpx.HTTPError as exc:
        raise InputError(f"--url {url}: no server answers there ({type(exc).__name__}: {exc}); start `speechtrt "
                         "serve` at that address, or leave --url out and the load test starts one") from None
    if status != 200:
        raise InputError(f"--url {url}: GET /health answered {status}, not 200: is it a speechtrt server?")
