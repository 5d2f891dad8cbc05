"""`speechtrt stream` end to end: real espeak-ng utterances, real-time clients, the report it writes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from speechtrt.cli import app

REQUIRED = ("device", "versions", "commit", "streams", "chunk_ms", "latency_ms", "batch_utilization",
            "dropped_chunks", "final_matches_offline", "peak_mem_mb")


def test_stream_command_writes_a_report_with_no_drops(tmp_path, speech, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no checkpoints/asr-stream.pt here: the deterministic seeded model
    out = tmp_path / "reports"
    result = CliRunner().invoke(app, [
        "stream", "--streams", "8", "--seconds", "3", "--threads", "1", "--utterances", "3",
        "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "stream.json").read_text())
    for key in REQUIRED:
        assert key in report, key
    assert set(report["latency_ms"]) >= {"p50", "p95", "p99"}
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p95"] <= report["latency_ms"]["p99"]
    assert report["streams"] == 8 and report["chunk_ms"] == 160
    assert report["dropped_chunks"] == 0
    assert report["final_matches_offline"] == 1.0 and report["offline_checked_streams"] >= 8
    assert 0 < report["batch_utilization"] <= 1
    assert report["active_streams"]["max"] <= 8 and report["streams_failed"] == 0
    assert "seeded init" in report["model"]
    assert (out / "stream.md").read_text().startswith("# Streaming ASR")
    assert (out / "stream_latency_cdf.png").stat().st_size > 1000
    assert (out / "stream_active.png").stat().st_size > 1000


def test_stream_command_rejects_a_chunk_the_model_cannot_take(tmp_path):
    result = CliRunner().invoke(app, ["stream", "--chunk-ms", "100", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "multiple of 40" in str(result.exception)


def test_find_capacity_reports_trials_and_plots(tmp_path, speech, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "reports"
    result = CliRunner().invoke(app, [
        "stream", "--streams", "4", "--seconds", "1.5", "--threads", "1", "--utterances", "2", "--find-capacity",
        "--capacity-max", "8", "--target-p95-ms", "10000", "--out", str(out), "--cache-dir", str(tmp_path / "c"),
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "stream.json").read_text())
    cap = report["capacity"]
    assert cap["capacity"] == 4 and [t["streams"] for t in cap["trials"]] == [4] and cap["trials"][0]["holds"]
    assert (out / "stream_capacity.png").stat().st_size > 1000
    assert "Capacity search" in (out / "stream.md").read_text()


def test_manifest_with_bad_rows_skips_and_lists_them_and_the_run_goes_on(tmp_path, speech, monkeypatch):
    from speechtrt.models.audio import write_wav

    monkeypatch.chdir(tmp_path)
    rows = []
    for i, audio in enumerate(speech[:2]):
        write_wav(tmp_path / f"u{i}.wav", audio, 16000)
        rows.append(json.dumps({"audio_filepath": f"u{i}.wav", "text": "x", "dialect": "en-us", "speaker": f"s{i}"}))
    rows[1:1] = ["{broken", json.dumps({"audio_filepath": "gone.wav", "text": "y"})]
    (tmp_path / "m.jsonl").write_text("\n".join(rows) + "\n")
    out = tmp_path / "reports"
    result = CliRunner().invoke(app, [
        "stream", "--streams", "2", "--seconds", "1", "--threads", "1", "--manifest", str(tmp_path / "m.jsonl"),
        "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
    ])
    assert result.exit_code == 0, result.output
    assert "skipped line 2: not JSON" in result.output and "skipped gone.wav" in result.output
    report = json.loads((out / "stream.json").read_text())
    assert [s["where"] for s in report["skipped_inputs"]] == ["line 2", "gone.wav"]
    assert report["dropped_chunks"] == 0 and report["final_matches_offline"] == 1.0
    assert "Skipped inputs (2)" in (out / "stream.md").read_text()
