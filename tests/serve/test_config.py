"""Pure pieces of the server, no sockets: routing by the evaluation report, the flag <-> config round trip, gates."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from speechtrt.serve.flags import argv_for, config_from_flags
from speechtrt.errors import InputError
from speechtrt.serve.admission import Admission
from speechtrt.serve.config import Limits
from speechtrt.serve.errors import APIError
from speechtrt.serve.metrics import ServerMetrics
from speechtrt.serve.routing import Router, Selection

REPORT = Path(__file__).resolve().parent / "data" / "selection.json"  # fixed; reports/asr_eval.json is regenerated


def test_selection_routes_each_dialect_to_its_recommended_model():
    sel = Selection.from_report(REPORT)
    router = Router(("asr-small", "asr-medium"), ("asr-stream",), sel)
    assert router.transcription("whisper-1", "en-gb").model == "asr-small"
    assert router.transcription("whisper-1", "en-gb-scotland").model == "asr-medium"
    r = router.transcription(None, None)
    assert (r.model, r.reason) == ("asr-medium", "default")  # the report's overall pick
    pinned = router.transcription("asr-small", "en-us")
    assert (pinned.model, pinned.reason, pinned.auto) == ("asr-small", "requested", False)
    assert router.faster("asr-medium") == "asr-small" and router.faster("asr-small") is None
    assert router.stream(None, "en-gb").model == "asr-stream"  # offline picks do not stream
    assert router.dialect_label("en-gb") == "en-gb" and router.dialect_label("xx") == "other"
    with pytest.raises(LookupError):
        router.transcription("asr-large", None)


def test_a_report_without_a_selection_is_refused_with_the_reason(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text('{"models": {}}')
    with pytest.raises(InputError, match="selection.per_dialect"):
        Selection.from_report(bad)
    with pytest.raises(InputError, match="no such file"):
        Selection.from_report(tmp_path / "missing.json")


def test_flags_and_config_round_trip():
    config = config_from_flags(port=8123, threads=2, tts_slots=4, asr_models="asr-small", streams=16, chunk_ms=320,
                               select=str(REPORT), max_text_chars=100, idle_s=3.0)

    args = argv_for(config)
    flags = dict(zip(args[::2], args[1::2]))
    rebuilt = config_from_flags(
        host=flags["--host"], port=int(flags["--port"]), threads=int(flags["--threads"]),
        select=flags["--select"], tts_models=flags["--tts-model"], tts_slots=int(flags["--tts-slots"]),
        tts_concurrency=int(flags["--tts-concurrency"]), tts_max_frames=int(flags["--tts-max-frames"]),
        tts_lead_chars=int(flags["--tts-lead-chars"]), asr_models=flags["--asr-models"],
        streams=int(flags["--streams"]), chunk_ms=int(flags["--chunk-ms"]),
        max_text_chars=int(flags["--max-text-chars"]), max_audio_s=float(flags["--max-audio-s"]),
        max_body_mb=float(flags["--max-body-mb"]), idle_s=float(flags["--idle-s"]),
        admission_wait_s=float(flags["--admission-wait-s"]), drain_timeout_s=float(flags["--drain-timeout-s"]),
        asr_batch=int(flags["--asr-batch"]), asr_wait_ms=float(flags["--asr-wait-ms"]),
        asr_concurrency=int(flags["--asr-concurrency"]), degrade_after_s=float(flags["--degrade-after-s"]),
        stream_wait_ms=float(flags["--stream-wait-ms"]))
    assert rebuilt == config
    with pytest.raises(InputError, match="--tts-model"):
        config_from_flags(tts_models="tts,bogus")


def test_a_gate_admits_capacity_then_refuses_after_the_bounded_wait_and_drains_with_503():
    async def run():
        admission = Admission(Limits(admission_wait_s=0.01), ServerMetrics())
        gate = admission.gate("tts:x", 1)
        await gate.acquire()
        with pytest.raises(APIError) as full:
            await gate.acquire()
        waiter = asyncio.create_task(gate.acquire(wait_s=5))
        await asyncio.sleep(0.01)
        gate.release()  # handed to the waiter, FIFO
        await waiter
        assert gate.in_flight == 1 and gate.saturated_for() > 0
        gate.release()
        admission.start_drain()
        with pytest.raises(APIError) as draining:
            await gate.acquire()
        return full.value, draining.value, gate

    full, draining, gate = asyncio.run(run())
    assert full.status == 429 and full.headers["Retry-After"] == "1" and full.code == "capacity"
    assert "capacity=1" in full.message and full.close_code == 1013
    assert draining.status == 503 and draining.code == "draining"
    assert gate.in_flight == 0 and gate.saturated_for() == 0


@pytest.mark.parametrize("sentence, parts", [
    ("in the beginning was the word, and the word was god.",
     ["in the beginning", "was the word, and the word was god."]),
    ("well, i think so, really.", ["well, i think so,", "really."]),
    ("hello world.", ["hello world."]),
    ("one two three.", ["one two three."]),
])
def test_a_streamed_request_leads_with_its_first_words(sentence, parts):
    from speechtrt.tts.service import lead_split

    assert lead_split(sentence, 12) == parts
