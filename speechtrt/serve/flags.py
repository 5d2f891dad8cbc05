"""The server's flags as a configuration and back: ``speechtrt serve`` builds its :class:`ServeConfig` here, and
``speechtrt loadtest`` turns a configuration back into the arguments that start the same server."""

from __future__ import annotations

from pathlib import Path

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
