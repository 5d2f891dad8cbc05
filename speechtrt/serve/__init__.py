"""Serving (layer 7): ``speechtrt serve`` — OpenAI-compatible speech and transcription routes, WebSocket streaming
ASR, Prometheus metrics and admission over the same TTS service and streaming engine as everything else.

``create_app(config)`` builds the FastAPI app; ``running_server(config)`` runs it on a thread (tests, loadtest, the
README's example); ``serve_forever`` runs it in the foreground with a draining SIGTERM.
"""

from typing import TYPE_CHECKING

from speechtrt.lazy import lazy_exports

if TYPE_CHECKING:
    from speechtrt.serve.app import create_app
    from speechtrt.serve.config import ASRServeConfig, Limits, ServeConfig, StreamServeConfig, TTSServeConfig
    from speechtrt.serve.server import RunningServer, running_server, serve_forever
    from speechtrt.serve.state import ServerState

__getattr__, __dir__ = lazy_exports(__name__, {
    "app": ("create_app",),
    "config": ("ASRServeConfig", "Limits", "ServeConfig", "StreamServeConfig", "TTSServeConfig"),
    "server": ("RunningServer", "running_server", "serve_forever"),
    "state": ("ServerState",),
})

__all__ = [
    "ASRServeConfig", "Limits", "RunningServer", "ServeConfig", "ServerState", "StreamServeConfig", "TTSServeConfig",
    "create_app", "running_server", "serve_forever",
]
