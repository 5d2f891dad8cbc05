"""``speechtrt serve``: the OpenAI-compatible HTTP + WebSocket server over the TTS service and streaming engine.

The flags map onto :class:`~speechtrt.serve.config.ServeConfig` (:func:`config_from_flags`); :func:`argv_for` is the
inverse, so ``speechtrt loadtest`` can start a server with exactly the configuration it measures in-process.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console

from speechtrt.errors import InputError


def config_from_flags(*, host="127.0.0.1", port=8000, api_key=None, device="cpu", threads=0, checkpoints="checkpoints",
                      onnx_dir="out/onnx", engine_dir="engines", select=None, tts_models="tts", tts_backend="torch",
                      tts_precision="fp32", tts_slots=8, tts_concurrency=16, tts_max_frames=1000, tts_lead_chars=12,
                      asr_models="asr-small,asr-medium", asr_default=None, asr_backend="torch",
                      asr_precision="fp32", decoder="greedy", asr_batch=8, asr_wait_ms=20.0,
                      asr_concurrency=32, degrade_after_s=0.5, stream_model="asr-stream",
                      stream_backend="torch", streams=64, chunk_ms=160, stream_wait_ms=10.0,
                      max_text_chars=4096, max_audio_s=120.0, max_body_mb=25.0, idle_s=15.0,
                      admission_wait_s=1.0, drain_timeout_s=30.0):
    """A :class:`ServeConfig` from the command's flag values (an empty model list turns that service off)."""
    from speechtrt.serve.config import (ASRServeConfig, Limits, ServeConfig, StreamServeConfig, TTSServeConfig)
    from speechtrt.serve.models import ASR_MODELS, STREAM_MODELS, TTS_MODELS
    from speechtrt.vocab import parse_list

    tts = asr = stream = None
    if tts_models:
        names = parse_list(tts_models, TTS_MODELS, "--tts-model", "TTS model")
        tts = TTSServeConfig(names, tts_backend, tts_precision, tts_slots, tts_concurrency, tts_max_frames,
                             lead_chars=tts_lead_chars)
    if asr_models:
        names = parse_list(asr_models, ASR_MODELS, "--asr-models", "ASR model")
        if asr_default is not None and asr_default not in names:
            raise InputError(f"--asr-default {asr_default!r} is not among --asr-models {','.join(names)}")
        asr = ASRServeConfig(names, asr_default, asr_backend, asr_precision, decoder, asr_batch, asr_wait_ms,
                             max_concurrent=asr_concurrency, degrade_after_s=degrade_after_s)
    if stream_model:
        if stream_model not in STREAM_MODELS:
            raise InputError(f"unknown streaming model {stream_model!r} (--stream-model): choose "
                             f"{', '.join(STREAM_MODELS)}")
        stream = StreamServeConfig(stream_model, stream_backend, streams, min(streams, 1024), stream_wait_ms, chunk_ms)
    limits = Limits(max_body_bytes=int(max_body_mb * 2**20), max_text_chars=max_text_chars, max_audio_s=max_audio_s,
                    stream_idle_s=idle_s, admission_wait_s=admission_wait_s)
    return ServeConfig(host=host, port=port, api_key=api_key or None, device=device, threads=threads or None,
                       checkpoints=Path(checkpoints), onnx_dir=Path(onnx_dir), engine_dir=Path(engine_dir),
                       select=Path(select) if select else None, drain_timeout_s=drain_timeout_s, limits=limits,
                       tts=tts, asr=asr, stream=stream)


def argv_for(config) -> list[str]:
    """The ``speechtrt serve`` arguments that rebuild ``config`` (the API key travels in the environment)."""
    lim = config.limits
    args = ["--host", config.host, "--port", str(config.port), "--device", config.device,
            "--threads", str(config.threads or 0), "--checkpoints", str(config.checkpoints),
            "--onnx-dir", str(config.onnx_dir), "--engine-dir", str(config.engine_dir),
            "--max-text-chars", str(lim.max_text_chars), "--max-audio-s", str(lim.max_audio_s),
            "--max-body-mb", str(lim.max_body_bytes / 2**20), "--idle-s", str(lim.stream_idle_s),
            "--admission-wait-s", str(lim.admission_wait_s), "--drain-timeout-s", str(config.drain_timeout_s)]
    if config.select:
        args += ["--select", str(config.select)]
    t, a, s = config.tts, config.asr, config.stream
    args += ["--tts-model", ",".join(t.models) if t else ""]
    if t:
        args += ["--tts-backend", t.backend, "--tts-precision", t.precision, "--tts-slots", str(t.max_slots),
                 "--tts-concurrency", str(t.max_concurrent), "--tts-max-frames", str(t.max_frames),
                 "--tts-lead-chars", str(t.lead_chars)]
    args += ["--asr-models", ",".join(a.models) if a else ""]
    if a:
        args += ["--asr-backend", a.backend, "--asr-precision", a.precision, "--decoder", a.decoder,
                 "--asr-batch", str(a.max_batch), "--asr-wait-ms", str(a.max_wait_ms),
                 "--asr-concurrency", str(a.max_concurrent), "--degrade-after-s", str(a.degrade_after_s)]
        if a.default:
            args += ["--asr-default", a.default]
    args += ["--stream-model", s.model if s else ""]
    if s:
        args += ["--stream-backend", s.backend, "--streams", str(s.max_streams), "--chunk-ms", str(s.chunk_ms),
                 "--stream-wait-ms", str(s.max_wait_ms)]
    return args


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
        tts_model: str = typer.Option("tts", "--tts-model", help="Comma list of TTS models ('' turns TTS off)."),
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
        logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
        console = Console(stderr=True)
        sock = bind(config.host, config.port)  # a taken port fails before minutes of loading
        state = ServerState.load(config, log_fn=lambda m: console.print(m, highlight=False))
        url = f"http://{config.host}:{sock.getsockname()[1]}"
        console.print(f"serving on {url} (OpenAI base_url {url}/v1, streams at ws{url[4:]}/v1/stream, metrics at "
                      f"{url}/metrics); SIGTERM drains", highlight=False)
        serve_forever(config, state, log_level, sock=sock)
