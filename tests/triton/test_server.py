"""A real ``tritonserver`` (the one bundled with nvidia-pytriton, from ``.venv-triton``) on a CPU repository,
driven through ``tritonclient`` over HTTP and gRPC on loopback; answers compared with the in-process runtime.

One server for the module (exported, started and stopped here). Skipped, with the reason, when the Triton
environment is absent: ``make test`` creates it (``make triton-setup``).
"""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
import torch

from speechtrt.errors import InputError
from speechtrt.triton.repository import RepositoryConfig, export_repository
from speechtrt.triton.server import ServerConfig, TritonServer, find_triton_env

from tests.triton.conftest import CHECKPOINTS, MODELS

pytest.importorskip("tritonclient.grpc", reason="tritonclient[http,grpc] is not installed in this environment")
try:
    TRITON_ENV = find_triton_env()
except InputError as exc:
    pytest.skip(f"no Triton server environment ({exc})", allow_module_level=True)

pytestmark = pytest.mark.slow

from speechtrt.triton.client import (  # noqa: E402  (after the skip: needs tritonclient)
    StreamingASRSession, TritonClient, TritonRequestError, TTSSession, greedy_text, pad_features, split_chunks,
)

SENTENCES = ("the quick brown fox", "hello world", "triton serves speech")
TTS_TEXT = "Hello from Triton."
ATOL = 1e-4


@pytest.fixture(scope="module")
def repository(tmp_path_factory, triton_artifacts):
    out = tmp_path_factory.mktemp("triton") / "model_repository"
    return export_repository(RepositoryConfig(out=out, models=MODELS, kind="cpu", artifacts=triton_artifacts,
                                              checkpoint_dir=CHECKPOINTS, max_queue_delay_us=20_000,
                                              tts_chunk_ms=10))


@pytest.fixture(scope="module")
def server(repository):
    with TritonServer(ServerConfig(repository=repository.out, http_port=0, grpc_port=0, metrics_port=0,
                                   startup_timeout_s=600), TRITON_ENV) as running:
        yield running
    assert running.process.returncode == 0, running.log_tail()


@pytest.fixture(scope="module")
def clients(server):
    http, grpc = TritonClient(server.http_url, "http", concurrency=2), TritonClient(server.grpc_url, "grpc")
    yield {"http": http, "grpc": grpc}
    http.close()
    grpc.close()


@pytest.fixture(scope="module")
def utterances():
    """Log-mel features of spoken sentences (espeak-ng), or of noise where it is missing: [T_i, 80] each."""
    from speechtrt.models.audio import espeak_available, espeak_speech, log_mel

    rng = np.random.default_rng(0)
    if espeak_available():
        return [log_mel(espeak_speech(s)).numpy() for s in SENTENCES]
    return [rng.standard_normal((n, 80)).astype(np.float32) for n in (150, 93, 121)]


def _runner(artifacts_root, name, component):
    from speechtrt.pipeline import model_artifacts
    from speechtrt.runtime.open import open_runner
    from speechtrt.triton.repository import load_models

    model = load_models(RepositoryConfig(models=(name,), checkpoint_dir=CHECKPOINTS))[name][0]
    return open_runner(component, "ort", "fp32", "cpu", model_artifacts(model, artifacts_root), threads=1), model


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_offline_asr_batch_equals_in_process(protocol, clients, utterances, triton_artifacts):
    features, lengths = pad_features(utterances)
    got = clients[protocol].asr_batch(features, lengths, model="asr_small")
    runner, _ = _runner(triton_artifacts, "asr-small", "asr_small")
    want = runner.infer({"features": torch.from_numpy(features), "feature_lengths": torch.from_numpy(lengths)})
    np.testing.assert_array_equal(got.output_lengths, want["output_lengths"].numpy())
    for i, n in enumerate(got.output_lengths):
        np.testing.assert_allclose(got.log_probs[i, :n], want["log_probs"].numpy()[i, :n], atol=ATOL, rtol=0)
    assert got.texts == [greedy_text(want["log_probs"].numpy()[i], n) for i, n in enumerate(got.output_lengths)]


def test_two_interleaved_sequences_over_grpc_streams_finals_equal_offline(server, utterances, triton_artifacts):
    runner, model = _runner(triton_artifacts, "asr-stream", "asr_stream_step")
    offline = []
    for f in utterances[:2]:
        state = {k: v for k, v in model.initial_state(1).items()}
        offline.append(runner.infer({"features": torch.from_numpy(f[None]), **state})["log_probs"][0].numpy().copy())
    sessions = [StreamingASRSession(server.grpc_url, sequence_id=101 + i) for i in range(2)]
    chunks = [split_chunks(f) for f in utterances[:2]]
    try:
        for step in range(max(len(c) for c in chunks)):  # interleave: a chunk of one, then of the other
            for session, cs in zip(sessions, chunks):
                if step < len(cs):
                    session.send(cs[step], end=step == len(cs) - 1)
        for session, want in zip(sessions, offline):
            got = np.concatenate([r.log_probs for r in session.results()])
            np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
            assert session.finish() == greedy_text(want)
    finally:
        for session in sessions:
            session.close()


def test_a_sequence_over_http_unary_calls_equals_offline(clients, utterances, triton_artifacts):
    runner, model = _runner(triton_artifacts, "asr-stream", "asr_stream_step")
    f = utterances[2]
    want = runner.infer({"features": torch.from_numpy(f[None]), **model.initial_state(1)})["log_probs"][0].numpy()
    assert clients["http"].transcribe_stream(7, f) == greedy_text(want)


def test_tts_streams_audio_equal_to_the_in_process_service(server, triton_artifacts):
    from speechtrt.pipeline import model_artifacts
    from speechtrt.triton.repository import load_models
    from speechtrt.tts.service import ServiceConfig, TTSService

    with TTSSession(server.grpc_url) as session:
        got = session.synthesize(TTS_TEXT)
    model = load_models(RepositoryConfig(models=("tts",)))["tts"][0]
    service = TTSService(model, ServiceConfig(backend="ort", onnx_dir=str(model_artifacts(model, triton_artifacts).onnx_dir),
                                              threads=1, overlap_vocoder=False))
    try:
        want = service.synthesize(TTS_TEXT).audio
    finally:
        service.close()
    assert got.chunks >= 2 and got.first_chunk_s <= got.latency_s
    assert got.audio.shape == want.shape
    np.testing.assert_allclose(got.audio, want, atol=ATOL, rtol=0)


def test_malformed_requests_get_triton_errors_and_the_server_keeps_serving(server, clients, utterances):
    import tritonclient.grpc as grpcclient

    grpc = clients["grpc"]
    features, lengths = pad_features(utterances[:1])
    bad_dtype = grpcclient.InferInput("features", list(features.shape), "FP64")
    bad_dtype.set_data_from_numpy(features.astype(np.float64))
    n = grpcclient.InferInput("feature_lengths", [1, 1], "INT64")
    n.set_data_from_numpy(lengths.reshape(1, 1))
    with pytest.raises(TritonRequestError, match="data-type is .FP64."):
        grpc._infer("asr_small", [bad_dtype, n], ["log_probs"])
    with pytest.raises(TritonRequestError, match="(?i)shape"):
        grpc.asr_batch(features[:, :, :40], lengths)
    chunk = utterances[0][:16]
    with pytest.raises(TritonRequestError, match="(?i)correlation id|sequence"):  # no sequence id: no controls
        grpc.stream_step(0, chunk, start=True)
    with pytest.raises(TritonRequestError, match="(?i)start"):  # a sequence id never started
        grpc.stream_step(987654, chunk)
    with TTSSession(server.grpc_url) as session:
        with pytest.raises(TritonRequestError, match="empty"):
            session.synthesize("   ")
    assert server.running and grpc.ready()
    assert grpc.asr_batch(features, lengths).texts  # still serving
    metrics = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    assert 'nv_inference_request_success{model="asr_small"' in metrics
    assert 'nv_inference_request_failure{model="asr_small"' in metrics


def test_the_load_test_target_drives_every_workload(server, triton_artifacts):
    """``speechtrt loadtest --target triton``'s client: speech, an upload and a real-time stream whose final equals
    the offline transcript of the same audio (features computed chunk by chunk on the client side)."""
    import asyncio

    from speechtrt.bench.triton_target import TritonTarget
    from speechtrt.models.audio import encode_audio, espeak_available, espeak_speech, log_mel

    if not espeak_available():
        pytest.skip("needs espeak-ng speech")
    audio = espeak_speech(SENTENCES[0])
    runner, model = _runner(triton_artifacts, "asr-stream", "asr_stream_step")
    feats = log_mel(audio)[None]
    want = greedy_text(runner.infer({"features": feats, **model.initial_state(1)})["log_probs"][0].numpy())

    async def drive():
        target = TritonTarget(server.grpc_url)
        try:
            speech = await target.speech(TTS_TEXT)
            upload = await target.transcribe(encode_audio(audio, 16000, "wav"), None)
            stream = await target.open_stream(None)
            rng = np.random.default_rng(0)
            pos = 0
            while pos < len(audio):  # irregular chunks, as real-time clients send
                n = int(rng.integers(800, 4000))
                await stream.send(audio[pos:pos + n])
                pos += n
            final, seconds = await stream.finish()
            return speech, upload, final, seconds, stream.partial_latencies()
        finally:
            await target.aclose()

    speech, upload, final, seconds, latencies = asyncio.run(drive())
    assert speech.ok and speech.audio_s > 0 and speech.ttfa_s <= speech.latency_s
    assert upload.ok and upload.text
    assert final == want and seconds == pytest.approx(len(audio) / 16000)
    assert len(latencies) >= 3 and all(x > 0 for x in latencies)
