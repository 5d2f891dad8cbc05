"""``speechtrt loadtest`` end to end on a tiny configuration: real network clients against a server on loopback,
the same build in-process, a report with percentiles, finals equal to offline, and its files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speechtrt.bench.load_clients import make_target, partial_latencies
from speechtrt.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
SELECTION = ROOT / "tests" / "serve" / "data" / "selection.json"  # fixed routing (the committed report is regenerated)


def test_partial_latency_is_measured_from_the_frame_that_completed_the_chunk():
    sent = [(1600, 10.0), (3200, 10.1), (4800, 10.2)]  # cumulative 16 kHz samples, send time
    # a partial up to 0.16 s needed 2560 + 240 samples: the second frame (sent at 10.1)
    assert partial_latencies(sent, [(10.15, 0.16)]) == pytest.approx([0.05])
    # the last (padded) chunk needs no more than was sent
    assert partial_latencies(sent, [(10.5, 0.32)]) == pytest.approx([0.3])


def test_an_unknown_target_is_refused_with_the_choices():
    with pytest.raises(InputError, match="unknown target 'grpc': choose one of serve, triton"):
        make_target("grpc", "http://127.0.0.1:1")


def test_an_external_url_that_does_not_answer_is_refused_before_any_work(tmp_path):
    """`loadtest --url` first asks the server's GET /health (loopback): a closed port and a server that is not
    speechtrt's are refused in one line, before recordings or models load."""
    import functools
    import http.server
    import socket
    import threading

    from speechtrt.bench.server_url import check_server_url
    from tests.test_cli import run_cli

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    res = run_cli("loadtest", "--url", closed, "--out", str(tmp_path / "reports"), "--cache-dir", str(tmp_path / "c"))
    assert res.returncode == 1 and f"--url {closed}: no server answers there" in res.stderr, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "c").exists()
    with pytest.raises(InputError, match="give the server's base URL"):
        check_server_url("127.0.0.1:8000")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(InputError, match="GET /health answered 404, not 200"):
            check_server_url(f"http://127.0.0.1:{other.server_address[1]}", timeout_s=5)
    finally:
        other.shutdown()
        other.server_close()


def test_loadtest_report_network_beside_in_process(tmp_path):
    from speechtrt.bench.loadtest import LoadtestConfig, run_loadtest
    from speechtrt.models.audio import espeak_available
    from speechtrt.serve import ASRServeConfig, Limits, ServeConfig, StreamServeConfig, TTSServeConfig, running_server

    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    serve_config = ServeConfig(
        port=0, threads=1, checkpoints=ROOT / "checkpoints", select=SELECTION,
        limits=Limits(admission_wait_s=30.0),
        tts=TTSServeConfig(max_slots=2, max_concurrent=4, max_frames=60, max_text=32, lead_chars=0),
        asr=ASRServeConfig(models=("asr-small",)), stream=StreamServeConfig(max_streams=2, max_batch=2))
    cfg = LoadtestConfig(tts_text="Hi.", long_text="Hi. Yes. Bye.", tts_single_repeats=2,
                         tts_concurrency=2, tts_requests=2, tts_rate=2.0, tts_seconds=1.0, long_repeats=1, streams=2,
                         stream_seconds=1.0, utterances=2, uploads=2, upload_concurrency=2, out_dir=str(tmp_path),
                         cache_dir=str(tmp_path / "cache"))
    with running_server(serve_config) as srv:
        report = run_loadtest(LoadtestConfig(**{**cfg.__dict__, "url": srv.url}), serve_config, log=lambda m: None,
                              command="test")
    saved = json.loads((tmp_path / "loadtest.json").read_text())
    assert saved["network"] and saved["in_process"]
    for key in ("device", "versions", "commit"):
        assert key in saved
    for side in ("network", "in_process"):
        r = saved[side]
        assert r["tts_single"]["ok"] == 2 and set(r["tts_single"]["latency_ms"]) >= {"p50", "p95", "p99"}
        assert r["tts_closed_loop"]["ok"] == 2 and r["tts_closed_loop"]["audio_s_per_s"] > 0
        assert r["tts_long_text"]["ttfa_ms"]["p50"] <= r["tts_long_text"]["latency_ms"]["p50"]
        assert r["tts_long_text"]["errors"] == 0 and r["tts_open_loop"]["errors"] == 0
        assert r["streams"]["ok"] >= 2 and r["streams"]["errors"] == 0
        assert r["streams"]["finals_equal_offline"] == 1.0 and r["streams"]["dropped_audio_s"] == 0
        assert r["streams"]["partial_latency_ms"]["p50"] > 0
        assert r["transcriptions"]["ok"] == 2 and r["transcriptions"]["errors"] == 0
    assert saved["in_process"]["tts_long_text"]["unstreamed_ms"]["n"] == 1
    targets = saved["comparison"]["targets"]
    assert set(targets) >= {"stream_partial_p95_ms", "tts_throughput_vs_in_process", "single_request_overhead",
                            "long_text_ttfa_vs_streamed_total", "long_text_ttfa_vs_unstreamed_synthesis"}
    assert all(t["value"] is not None for t in targets.values())
    md = (tmp_path / "loadtest.md").read_text()
    assert md.startswith("# Load test") and "finals == offline" in md and "## Targets" in md
    assert (tmp_path / "loadtest_tts_cdf.png").stat().st_size > 1000
    assert (tmp_path / "loadtest_stream_cdf.png").stat().st_size > 1000
    assert report["files"]


def test_with_the_triton_target_the_network_side_is_still_the_fastapi_server():
    from speechtrt.bench.load_clients import ServeTarget
    from speechtrt.bench.loadtest import LoadtestConfig, side_targets
    from speechtrt.bench.triton_target import TritonTarget

    targets = side_targets(LoadtestConfig(target="triton", in_process=False), "http://127.0.0.1:1", None, None,
                           "127.0.0.1:2")
    assert set(targets) == {"network", "triton"}
    assert isinstance(targets["network"], ServeTarget) and targets["network"].url == "http://127.0.0.1:1"
    assert isinstance(targets["triton"], TritonTarget) and targets["triton"].grpc_url == "127.0.0.1:2"
