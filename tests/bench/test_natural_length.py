"""The natural-length workload: requests that stop at their own step, served in-flight and as static batches."""

from __future__ import annotations

import json
import sys

import pytest

FACTORY = "tests.models.test_own_model:tiny_tts"


@pytest.fixture(scope="module")
def tiny():
    from speechtrt.models.loading import resolve_model

    return resolve_model(FACTORY)


def test_arrivals_are_a_backlog_or_a_seeded_poisson_stream():
    from speechtrt.bench.natural import arrival_times

    assert arrival_times(4, 0.0, 0) == [0.0] * 4
    times = arrival_times(50, 20.0, 3)
    assert times == arrival_times(50, 20.0, 3) and times[0] == 0.0
    assert all(b > a for a, b in zip(times, times[1:])) and 1.0 < times[-1] < 5.0


def test_in_flight_serves_the_same_frames_in_fewer_steps(tiny):
    from speechtrt.bench.natural import NaturalConfig, natural_length

    texts = ["a much longer sentence to say", "ok", "hi", "yes", "a medium one", "no", "another long sentence"]
    out = natural_length(tiny.model, NaturalConfig(batch=2, threads=1), texts=texts)
    v = out["variants"]["torch-fp32"]
    inflight, static = v["in_flight"], v["static"]
    assert v["same_frames_per_request"] and v["finish_reasons"] == {"stop_token": 7}
    assert inflight["frames"] == static["frames"] == sum(out["lengths"]["frames_per_request"])
    # static: each pair waits for its longer member; in-flight refills the freed slot at once
    lengths = out["lengths"]["frames_per_request"]
    assert static["steps"] == sum(max(lengths[i:i + 2]) for i in range(0, 7, 2))
    assert inflight["steps"] < static["steps"] and inflight["mean_active"] > static["mean_active"]
    assert v["step_ratio"] == pytest.approx(static["steps"] / inflight["steps"])
    assert v["ms_per_step"]["in_flight"] == pytest.approx(1000 * inflight["seconds"] / inflight["steps"])
    assert out["target"]["variant"] == "torch-fp32" and out["target"]["all_requests_stopped"]


def test_bench_workload_natural_merges_into_an_existing_report(tmp_path, capsys):
    from speechtrt.cli import main

    (tmp_path / "tts_bench.json").write_text(json.dumps({"benchmark": "tts", "variants": {"kept": 1}}))
    argv = sys.argv
    sys.argv = ["speechtrt", "bench", "--workload", "natural", "--model", FACTORY, "--backend", "torch",
                "--precision", "fp32", "--natural-batch", "2", "--natural-requests", "4", "--natural-repeats", "2",
                "--out", str(tmp_path),
                "--onnx-dir", str(tmp_path / "onnx")]
    try:
        main()
    finally:
        sys.argv = argv
    report = json.loads((tmp_path / "tts_bench.json").read_text())
    assert report["variants"] == {"kept": 1}
    block = report["natural_length"]
    assert block["model"] == "tiny-tts" and block["requests"] == 4 and block["batch"] == 2
    assert block["source"] == {"factory": FACTORY} and "torch-fp32" in block["variants"]
    runs = block["variants"]["torch-fp32"]["runs"]
    assert len(runs["in_flight"]) == len(runs["static"]) == 2  # --natural-repeats, alternating
    md = (tmp_path / "tts_bench.md").read_text()
    assert "## Natural lengths: in-flight vs static batching" in md and "fewer decoder steps than static" in md
    assert "Each policy ran 2 times, alternating; the table keeps its fastest." in md
    assert "natural lengths torch-fp32 (batch 2)" in capsys.readouterr().out


def test_the_seeded_model_is_refused_for_natural_lengths(tmp_path):
    from speechtrt.bench.tts_bench import BenchConfig, run_tts_bench
    from speechtrt.errors import InputError

    with pytest.raises(InputError, match="decodes to its stop token"):
        run_tts_bench(BenchConfig(model="tts", workload="natural", out_dir=str(tmp_path)))


def test_the_natural_section_names_a_variant_where_in_flight_is_slower():
    """A "faster" policy that is slower is said in the report, with the row cost that made it so."""
    from speechtrt.bench.tts_report import natural_markdown

    def variant(speedup, ms_in, ms_static):
        return {"in_flight": {"frames_per_s": 100.0 * speedup, "mean_active": 7.5, "steps": 100,
                              "latency_ms": {"p50": 10.0}},
                "static": {"frames_per_s": 100.0, "mean_active": 5.6, "steps": 135, "latency_ms": {"p50": 9.0}},
                "speedup": speedup, "step_ratio": 1.35, "same_frames_per_request": True,
                "ms_per_step": {"in_flight": ms_in, "static": ms_static}}

    block = {"model": "m", "requests": 8, "lengths": {"min": 1, "median": 2, "max": 3}, "batch": 8,
             "arrivals": "backlog", "vocoder": "left out", "static_policy": "p",
             "variants": {"a-fp32": variant(1.10, 10.0, 8.1), "b-int8": variant(0.96, 16.9, 12.1)}}
    text = "\n".join(natural_markdown(block))
    assert "takes 1.35x fewer decoder steps" in text
    assert "In-flight slower than static here: b-int8 0.96x (a step of 7.5 rows costs 1.40x one of 5.6" in text
    assert "a-fp32 1.10x" not in text
