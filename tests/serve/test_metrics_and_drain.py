"""``/metrics`` parsed with prometheus_client's own parser; SIGTERM-style drain: in-flight work finishes, new
requests get 503, then the server stops."""

from __future__ import annotations

import threading
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.serve.conftest import small_config


def scrape(url: str) -> dict[str, list]:
    text = httpx.get(url + "/metrics").text
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(samples, name, **labels) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_count_requests_latencies_batches_and_refusals(server):
    httpx.post(server.url + "/v1/audio/speech", json={"model": "tts", "input": "Metrics."}, timeout=60)
    httpx.post(server.url + "/v1/audio/speech", json={"model": "tts", "input": ""}, timeout=60)
    m = scrape(server.url)
    req = m["speechtrt_requests"]
    assert value(req, "speechtrt_requests_total", route="/v1/audio/speech", status="200") >= 1
    assert value(req, "speechtrt_requests_total", route="/v1/audio/speech", status="400") >= 1
    assert value(m["speechtrt_time_to_first_audio_seconds"], "speechtrt_time_to_first_audio_seconds_count",
                 model="tts") >= 1
    assert value(m["speechtrt_request_latency_seconds"], "speechtrt_request_latency_seconds_count",
                 route="/v1/audio/speech") >= 2
    assert value(m["speechtrt_batch_size"], "speechtrt_batch_size_count", service="tts:tts") >= 1
    for family in ("speechtrt_queue_depth", "speechtrt_active_slots", "speechtrt_active_streams",
                   "speechtrt_chunk_latency_seconds", "speechtrt_routed", "speechtrt_degraded", "speechtrt_refused",
                   "speechtrt_draining"):
        assert family in m, family
    assert value(m["speechtrt_active_slots"], "speechtrt_active_slots", service="tts:tts") == 0
    assert value(m["speechtrt_refused"], "speechtrt_refused_total", limit="max_text_chars") >= 0


def test_drain_finishes_in_flight_refuses_new_then_stops():
    from speechtrt.serve import running_server

    config = small_config(asr=None, stream=None, select=None, drain_timeout_s=30.0)
    with running_server(config) as srv:
        results = {}

        def long_request():
            results["in_flight"] = httpx.post(srv.url + "/v1/audio/speech", timeout=60, json={
                "model": "tts", "input": "First part. Second part. Third part.", "response_format": "pcm"})

        t = threading.Thread(target=long_request)
        t.start()
        while srv.state.admission.in_flight == 0 and t.is_alive():
            time.sleep(0.005)
        srv.drain()
        refused = httpx.post(srv.url + "/v1/audio/speech", json={"model": "tts", "input": "Too late."}, timeout=30)
        ready = httpx.get(srv.url + "/ready")
        t.join(60)
        assert srv.wait_stopped(30), "the server did not stop after draining"
    assert results["in_flight"].status_code == 200 and len(results["in_flight"].content) > 0
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
    assert refused.headers["retry-after"] == "1"
    assert ready.status_code == 503
