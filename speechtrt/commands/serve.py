"""``speechtrt serve``: the OpenAI-compatible HTTP + WebSocket server over the TTS service and streaming engine.

The flags map onto :class:`~speechtrt.serve.config.ServeConfig` (:func:`speechtrt.serve.flags.config_from_flags`);
:func:`~speechtrt.serve.flags.argv_for` is the inverse, so ``speechtrt loadtest`` can start a server with exactly the
configuration it measures in-process.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console

from speechtrt.errors import InputError
from speechtrt.serve.flags import config_from_flags


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0 exposes the server)."),
        port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0: a free one)."),
        api_key: str | None = typer.Option(None, "--api-key", envvar="SPEECHTRT_API_KEY", show_envvar=True,
                                           help="Require `Authorization: Bearer KEY` on /v1 routes."),
        device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
        threads: int = typer.Option(0, "--threads", min=0, help="torch / ONNX Runtime threads (0: default)."),
        checkpoints: Path = typer.Option(Path("checkpoints"), "--checkpoints", help="Folder of model checkpoints."),
        onnx_dir: Path = typer.Option(Path("out/onnx"), "--onnx-dir", help="ONNX graphs (non-torch TTS backends)."),
        engine_dir: Path = typer.Option(Path("engines"), "--engine-dir", help="TensorRT plans (--*-backend trt)."),
        select: Path | None = typer.Option(None, "--select", help="reports/asr_eval.json: route each "
                                           "transcription/stream to the model recommended for its dialect."),
        tts_model: str = typer.Option("tts", "--tts-model", help="Comma list of TTS models: tts (seeded, "
                                       "fixed-length, noise), voice-en (the trained voice, to its stop token); '' "
                                       "turns TTS off."),
        tts_backend: str = typer.Option("torch", "--tts-backend", help="torch | ort | trt"),
        tts_precision: str = typer.Option("fp32", "--tts-precision", help="fp32 | fp16 | bf16 | int8"),
        tts_slots: int = typer.Option(8, "--tts-slots", min=1, help="Decode slots (KV-cache rows) per TTS model."),
        tts_concurrency: int = typer.Option(16, "--tts-concurrency", min=1, help="Speech requests admitted at "
                                            "once per model (more wait --admission-wait-s, then 429)."),
        tts_max_frames: int = typer.Option(1000, "--tts-max-frames", min=1, help="Frames one slot holds."),
        tts_lead_chars: int = typer.Option(12, "--tts-lead-chars", min=0, help="Speech is streamed per sentence, "
                                           "and the first sentence's first words (at least this many characters, "
                                           "or its first clause) first (0: whole sentences)."),
        asr_models: str = typer.Option("asr-small,asr-medium", "--asr-models", help="Comma list of offline ASR "
                                       "models for /v1/audio/transcriptions ('' turns it off)."),
        asr_default: str | None = typer.Option(None, "--asr-default", help="Model for uploads without a dialect "
                                               "(default: the selection's overall pick, else the first)."),
        asr_backend: str = typer.Option("torch", "--asr-backend", help="torch | ort | trt"),
        asr_precision: str = typer.Option("fp32", "--asr-precision", help="fp32 | fp16 | int8"),
        decoder: str = typer.Option("greedy", "--decoder", help="greedy | lexicon | lm (n-gram beam search)."),
        asr_batch: int = typer.Option(8, "--asr-batch", min=1, help="Uploads per model call."),
        asr_wait_ms: float = typer.Option(20.0, "--asr-wait-ms", min=0.0, help="Longest an upload waits for a "
                                          "fuller batch."),
        asr_concurrency: int = typer.Option(32, "--asr-concurrency", min=1, help="Uploads admitted at once per "
                                            "model."),
        degrade_after_s: float = typer.Option(0.5, "--degrade-after-s", min=0.0, help="A model saturated this long "
                                              "hands auto-routed uploads to the faster model."),
        stream_model: str = typer.Option("asr-stream", "--stream-model", help="Streaming model ('' turns "
                                         "WebSocket streaming off)."),
        stream_backend: str = typer.Option("torch", "--stream-backend", help="torch | ort | trt"),
        streams: int = typer.Option(64, "--streams", min=1, help="Concurrent streams (state slots)."),
        chunk_ms: int = typer.Option(160, "--chunk-ms", min=40, help="Model chunk, a multiple of 40 ms."),
        stream_wait_ms: float = typer.Option(10.0, "--stream-wait-ms", min=0.0, help="Longest a ready chunk "
                                             "waits for a fuller batch."),
        max_text_chars: int = typer.Option(4096, "--max-text-chars", min=1, help="Longest speech input."),
        max_audio_s: float = typer.Option(120.0, "--max-audio-s", min=0.1, help="Longest upload or stream."),
        max_body_mb: float = typer.Option(25.0, "--max-body-mb", min=0.001, help="Largest request body."),
        idle_s: float = typer.Option(15.0, "--idle-s", min=0.1, help="A stream silent this long is closed."),
        admission_wait_s: float = typer.Option(1.0, "--admission-wait-s", min=0.0, help="How long a request "
                                               "waits for a slot before 429."),
        drain_timeout_s: float = typer.Option(30.0, "--drain-timeout-s", min=0.0, help="SIGTERM: longest wait "
                                              "for in-flight work."),
        log_level: str = typer.Option("info", "--log-level", help="debug | info | warning | error"),
        engine: str = typer.Option("fastapi", "--engine", help="fastapi (this process) | triton (export a CPU "
                                   "model repository of the same models and run the bundled tritonserver on it: "
                                   "KServe v2 HTTP on --port, gRPC on --port+1, metrics on --port+2)."),
        repository: Path = typer.Option(Path("model_repository"), "--repository", help="--engine triton: where "
                                        "the repository is written (replaced) and served from."),
    ) -> None:
        """Serve TTS and ASR over HTTP and WebSocket: OpenAI-compatible /v1/audio/speech and
        /v1/audio/transcriptions, WS /v1/stream, /v1/models, /health, /ready, /metrics."""
        from speechtrt.serve.server import bind, serve_forever
        from speechtrt.serve.state import ServerState

        config = config_from_flags(
            host=host, port=port, api_key=api_key, device=device, threads=threads, checkpoints=checkpoints,
            onnx_dir=onnx_dir, engine_dir=engine_dir, select=select, tts_models=tts_model, tts_backend=tts_backend,
            tts_precision=tts_precision, tts_slots=tts_slots, tts_concurrency=tts_concurrency,
            tts_max_frames=tts_max_frames, tts_lead_chars=tts_lead_chars, asr_models=asr_models,
            asr_default=asr_default, asr_backend=asr_backend, asr_precision=asr_precision, decoder=decoder,
            asr_batch=asr_batch, asr_wait_ms=asr_wait_ms, asr_concurrency=asr_concurrency,
            degrade_after_s=degrade_after_s, stream_model=stream_model, stream_backend=stream_backend,
            streams=streams, chunk_ms=chunk_ms, stream_wait_ms=stream_wait_ms, max_text_chars=max_text_chars,
            max_audio_s=max_audio_s, max_body_mb=max_body_mb, idle_s=idle_s, admission_wait_s=admission_wait_s,
            drain_timeout_s=drain_timeout_s)
        if log_level not in ("debug", "info", "warning", "error"):
            raise InputError(f"--log-level {log_level!r}: choose debug, info, warning or error")
        if engine not in ("fastapi", "triton"):
            raise InputError(f"--engine {engine!r}: choose fastapi or triton")
        if engine == "triton":
            raise typer.Exit(_serve_on_triton(config, repository))
        logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
        console = Console(stderr=True)
        sock = bind(config.host, config.port)  # a taken port fails before minutes of loading
        state = ServerState.load(config, log_fn=lambda m: console.print(m, highlight=False))
        url = f"http://{config.host}:{sock.getsockname()[1]}"
        console.print(f"serving on {url} (OpenAI base_url {url}/v1, streams at ws{url[4:]}/v1/stream, metrics at "
                      f"{url}/metrics); SIGTERM drains", highlight=False)
        serve_forever(config, state, log_level, sock=sock)


def _serve_on_triton(config, repository: Path) -> int:
    """Export a CPU repository of ``config``'s models and serve it with the bundled tritonserver until SIGTERM."""
    from speechtrt.files import check_writable
    from speechtrt.triton.repository import RepositoryConfig, export_repository
    from speechtrt.triton.server import ServerConfig, serve

    console = Console(stderr=True)
    check_writable(repository.parent if str(repository.parent) else Path("."), "--repository")
    models = [*(("tts",) if config.tts else ()), *(config.asr.models if config.asr else ()),
              *((config.stream.model,) if config.stream else ())]
    repo = export_repository(RepositoryConfig(out=repository, models=tuple(models), checkpoint_dir=config.checkpoints,
                                              threads=config.threads or 1),
                             log=lambda m: console.print(m, highlight=False))
    ports = dict(http_port=config.port, grpc_port=config.port + 1, metrics_port=config.port + 2)

    def ready(server) -> None:
        console.print(f"tritonserver ready: HTTP {server.http_url}, gRPC {server.grpc_url}, metrics "
                      f"{server.metrics_url}; SIGTERM stops it", highlight=False)

    return serve(ServerConfig(repository=repo.out, host=config.host, **ports), on_ready=ready)
