"""``speechtrt loadtest``: real network clients against a running server, beside the same build driven in-process.

Workloads (each is a coroutine over a :class:`Target`, so the network client and the in-process client run the very
same code):

* **TTS single** — one request at a time (the server's overhead on a single request);
* **TTS closed loop** — ``concurrency`` clients, each sending its next request when the last one finished;
* **TTS open loop** — Poisson arrivals at ``rate`` requests/s for ``seconds`` (queueing shows, refusals count);
* **TTS long text** — a ~300-character text: time to first audio against the whole synthesis;
* **streams** — ``streams`` real-time WebSocket clients playing espeak-ng utterances in several accents, with
  irregular chunk sizes and network jitter, joining and leaving; partial latency, finals against the offline
  transcript of the same audio, audio the server did not account for;
* **transcriptions** — uploads of the same utterances at ``upload_concurrency``, routed by their dialect.

Targets (:mod:`speechtrt.bench.load_clients`): ``serve`` (httpx + websockets against ``speechtrt serve``, started
here as a subprocess unless ``url`` is given) and ``in-process`` (the same TTS workers, batchers and stream engine
built from the same :class:`~speechtrt.serve.config.ServeConfig`, no HTTP). Each workload runs on the network and
then in-process, back to back, so both see the machine in the same state; the load average around each run is
recorded, because numbers taken while other processes compete for the CPU do not compare with a quiet run. ``triton`` is the seam for a KServe
client (another :class:`~speechtrt.bench.load_clients.Target`). Percentiles are p50/p95/p99 in milliseconds; the report records environment, versions and
commit, and writes ``loadtest.json``, ``loadtest.md`` and two PNGs (:mod:`speechtrt.bench.loadtest_report`, which
also defines each measure).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from speechtrt.bench.load_clients import (TARGETS, Refused, SpeechSample, StreamSample, Target, UploadSample,
                                          make_target)
from speechtrt.errors import InputError, SpeechTRTError
from speechtrt.models.audio import FEATURES, encode_audio
from speechtrt.stream.loadgen import Recording, synth_recordings
from speechtrt.bench.loadtest_report import compare, write_report
from speechtrt.bench.server_url import check_server_url
from speechtrt.reporting import environment

LONG_TEXT = ("In the beginning was the Word, and the Word was with God, and the Word was God. The same was in the "
             "beginning with God. All things were made by him; and without him was not any thing made that was made. "
             "In him was life; and the life was the light of men. And the light shineth in the darkness still.")
"""About 300 characters in six sentences (the long-text time-to-first-audio target)."""




@dataclass(frozen=True)
class LoadtestConfig:
    target: str = "serve"
    url: str | None = None  # a running server; None: start `speechtrt serve` with ``serve``'s configuration
    in_process: bool = True
    tts_text: str = "Storm warning issued for the coast as winds build."  # the bench headline (50 characters)
    tts_single_repeats: int = 5
    tts_concurrency: int = 8
    tts_requests: int = 24  # closed loop, in total
    tts_rate: float = 1.0  # open loop, requests/s
    tts_seconds: float = 10.0  # open loop duration
    long_text: str = LONG_TEXT
    long_repeats: int = 3
    streams: int = 64
    stream_seconds: float = 10.0
    chunk_ms: float = 160.0  # mean client chunk (irregular: 0.5x .. 1.5x), as `speechtrt stream` sends
    jitter_ms: float = 20.0
    utterances: int = 12
    uploads: int = 16
    upload_concurrency: int = 4
    out_dir: str = "reports"
    cache_dir: str = "tmp/cache/loadtest"
    seed: int = 0
    quick: bool = False

    def __post_init__(self):
        if self.target not in TARGETS:
            raise InputError(f"unknown --target {self.target!r}: choose one of {', '.join(TARGETS)}")
        for name in ("tts_concurrency", "tts_requests", "streams", "utterances", "uploads", "upload_concurrency"):
            if getattr(self, name) < 0:
                raise InputError(f"{name}={getattr(self, name)} must be >= 0")


def quick(cfg: LoadtestConfig) -> LoadtestConfig:
    """A smoke-test sized run (seconds, not minutes): short texts, few requests and streams."""
    return replace(cfg, tts_text="Storm warning issued.", long_text=LONG_TEXT[:LONG_TEXT.index("The same")].strip(),
                   tts_single_repeats=2, tts_concurrency=min(cfg.tts_concurrency, 4), tts_requests=4,
                   tts_rate=1.0, tts_seconds=2.0, long_repeats=1, streams=min(cfg.streams, 4), stream_seconds=2.0,
                   utterances=min(cfg.utterances, 4), uploads=4, upload_concurrency=2, quick=True)


# ---------------------------------------------------------------- statistics


def percentiles_ms(seconds) -> dict | None:
    x = np.asarray([s for s in seconds if s is not None], dtype=np.float64) * 1e3
    if x.size == 0:
        return None
    return {"n": int(x.size), "p50": float(np.percentile(x, 50)), "p95": float(np.percentile(x, 95)),
            "p99": float(np.percentile(x, 99)), "mean": float(x.mean()), "max": float(x.max())}


# ---------------------------------------------------------------- workloads


async def tts_single(target: Target, text: str, repeats: int) -> list[SpeechSample]:
    await target.speech(text)  # warm-up (connection, first request)
    return [await target.speech(text) for _ in range(repeats)]


async def tts_closed_loop(target: Target, text: str, concurrency: int, requests: int):
    """``concurrency`` clients share ``requests``; returns (samples, wall seconds)."""
    left = [requests]
    samples: list[SpeechSample] = []

    async def client():
        while left[0] > 0:
            left[0] -= 1
            samples.append(await target.speech(text))

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(max(1, concurrency))))
    return samples, time.perf_counter() - t0


async def tts_open_loop(target: Target, text: str, rate: float, seconds: float, rng: random.Random):
    """Poisson arrivals at ``rate``/s for ``seconds`` (each request on its own task); returns (samples, wall s)."""
    tasks = []
    t0 = time.perf_counter()
    t = rng.expovariate(rate)
    while t < seconds:
        await asyncio.sleep(max(0.0, t0 + t - time.perf_counter()))
        tasks.append(asyncio.create_task(target.speech(text)))
        t += rng.expovariate(rate)
    samples = list(await asyncio.gather(*tasks))
    return samples, time.perf_counter() - t0


async def stream_load(target: Target, utts: list[Recording], streams: int, seconds: float, chunk_ms: float,
                      jitter_ms: float, rng: random.Random):
    """``streams`` real-time clients for ``seconds``; returns (samples, refusals, wall seconds)."""
    samples: list[StreamSample] = []
    refusals: list[str] = []
    t_end = time.perf_counter() + seconds
    chunk = chunk_ms / 1000 * FEATURES.sample_rate

    async def client(c: int):
        local = random.Random(rng.random())
        await asyncio.sleep(local.uniform(0, min(1.0, seconds / 4)))  # stagger the joins
        k = c
        while time.perf_counter() < t_end:
            utt_i = k % len(utts)
            utt = utts[utt_i]
            k += streams
            try:
                s = await target.open_stream(utt.dialect)
            except Refused as exc:
                refusals.append(str(exc.status))
                await asyncio.sleep(0.2)
                continue
            except Exception as exc:
                samples.append(StreamSample(False, "error", utt_i, error=f"{type(exc).__name__}: {exc}"))
                await asyncio.sleep(0.2)
                continue
            t0, pos, x = time.perf_counter(), 0, utt.samples
            try:
                while pos < len(x):
                    n = max(160, int(chunk * local.uniform(0.5, 1.5)))
                    piece = x[pos: pos + n]
                    pos += len(piece)
                    due = t0 + pos / FEATURES.sample_rate + local.uniform(0, jitter_ms / 1000)
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    await s.send(piece)
                final, server_s = await s.finish()
                samples.append(StreamSample(True, "ok", utt_i, final, s.partial_latencies(), utt.duration_s, server_s))
            except Exception as exc:
                samples.append(StreamSample(False, "error", utt_i, error=f"{type(exc).__name__}: {exc}"))
                await s.abort()
            await asyncio.sleep(local.uniform(0.05, 0.3))

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(streams)))
    return samples, refusals, time.perf_counter() - t0


async def upload_load(target: Target, utts: list[Recording], count: int, concurrency: int):
    """``count`` uploads (16-bit WAVs of the utterances) by ``concurrency`` clients; returns (samples, wall s)."""
    wavs = [encode_audio(u.samples, FEATURES.sample_rate, "wav") for u in utts]
    left = list(range(count))
    samples: list[UploadSample] = []

    async def client():
        while left:
            i = left.pop() % len(utts)
            s = await target.transcribe(wavs[i], utts[i].dialect)
            s.audio_s = utts[i].duration_s
            samples.append(s)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(max(1, concurrency))))
    return samples, time.perf_counter() - t0


# ---------------------------------------------------------------- one target, every workload


def _speech_stats(samples: list[SpeechSample], wall_s: float | None = None) -> dict:
    ok = [s for s in samples if s.ok]
    out = {"requests": len(samples), "ok": len(ok),
           "refused": sum(1 for s in samples if s.status in (429, 503, "capacity")),
           "errors": sum(1 for s in samples if not s.ok and s.status not in (429, 503, "capacity")),
           "latency_ms": percentiles_ms([s.latency_s for s in ok]),
           "ttfa_ms": percentiles_ms([s.ttfa_s for s in ok]),
           "inter_chunk_gap_ms": percentiles_ms([g for s in ok for g in s.gaps_s])}
    if wall_s:
        out.update(wall_s=wall_s, requests_per_s=len(ok) / wall_s,
                   audio_s_per_s=sum(s.audio_s for s in ok) / wall_s)
    first_error = next((s.error for s in samples if s.error), None)
    if first_error:
        out["first_error"] = first_error
    return out


async def workload_tts_single(target: Target, cfg: LoadtestConfig, utts, rng, raw: dict) -> dict:
    return _speech_stats(await tts_single(target, cfg.tts_text, cfg.tts_single_repeats))


async def workload_tts_closed(target: Target, cfg: LoadtestConfig, utts, rng, raw: dict) -> dict:
    closed, wall = await tts_closed_loop(target, cfg.tts_text, cfg.tts_concurrency, cfg.tts_requests)
    raw["tts_latency_s"] = [s.latency_s for s in closed if s.ok]
    raw["tts_ttfa_s"] = [s.ttfa_s for s in closed if s.ok]
    return {"concurrency": cfg.tts_concurrency, **_speech_stats(closed, wall)}


async def workload_tts_open(target: Target, cfg: LoadtestConfig, utts, rng, raw: dict) -> dict:
    opened, wall = await tts_open_loop(target, cfg.tts_text, cfg.tts_rate, cfg.tts_seconds, rng)
    return {"rate_per_s": cfg.tts_rate, "seconds": cfg.tts_seconds, **_speech_stats(opened, wall)}


async def workload_tts_long(target: Target, cfg: LoadtestConfig, utts, rng, raw: dict) -> dict:
    stats = _speech_stats([await target.speech(cfg.long_text) for _ in range(cfg.long_repeats)])
    if stats["ttfa_ms"] and stats["latency_ms"]:
        stats["ttfa_over_synthesis_p50"] = stats["ttfa_ms"]["p50"] / stats["latency_ms"]["p50"]
    return {"characters": len(cfg.long_text), **stats}


async def workload_streams(target: Target, cfg: LoadtestConfig, utts, rng, raw: dict) -> dict:
    streams, refusals, wall = await stream_load(target, utts, cfg.streams, cfg.stream_seconds, cfg.chunk_ms,
                                                cfg.jitter_ms, rng)
    raw["partial_latency_s"] = [x for s in streams if s.ok for x in s.partial_latencies_s]
    raw["stream_samples"] = streams
    ok = [s for s in streams if s.ok]
    return {"clients": cfg.streams, "seconds": cfg.stream_seconds, "wall_s": wall, "streams": len(streams),
            "ok": len(ok), "errors": len(streams) - len(ok), "refused": len(refusals),
            "partial_latency_ms": percentiles_ms(raw["partial_latency_s"]), "audio_s": sum(s.audio_s for s in ok),
            "dropped_audio_s": sum(abs(s.audio_s - s.server_audio_s) for s in ok if s.server_audio_s is not None),
            "first_error": next((s.error for s in streams if s.error), None)}


async def workload_uploads(target: Target, cfg: LoadtestConfig, utts, rng, raw: dict) -> dict:
    uploads, wall = await upload_load(target, utts, cfg.uploads, cfg.upload_concurrency)
    ok = [s for s in uploads if s.ok]
    models: dict[str, int] = {}
    for s in ok:
        models[f"{s.model} ({s.route})"] = models.get(f"{s.model} ({s.route})", 0) + 1
    return {"uploads": len(uploads), "ok": len(ok), "concurrency": cfg.upload_concurrency,
            "refused": sum(1 for s in uploads if s.status in (429, 503)),
            "errors": sum(1 for s in uploads if not s.ok and s.status not in (429, 503)),
            "latency_ms": percentiles_ms([s.latency_s for s in ok]), "wall_s": wall,
            "uploads_per_s": len(ok) / wall, "audio_s_per_s": sum(s.audio_s for s in ok) / wall, "models": models,
            "first_error": next((s.error for s in uploads if s.error), None)}


def workloads(cfg: LoadtestConfig) -> list[tuple[str, str, Callable]]:
    """(report key, what, coroutine) of every workload this configuration runs, in order."""
    out = [("tts_single", "TTS single requests", workload_tts_single),
           ("tts_closed_loop", f"TTS closed loop, concurrency {cfg.tts_concurrency}", workload_tts_closed),
           ("tts_open_loop", f"TTS open loop, {cfg.tts_rate}/s for {cfg.tts_seconds} s", workload_tts_open)]
    if cfg.long_repeats:
        out.append(("tts_long_text", f"TTS long text ({len(cfg.long_text)} characters)", workload_tts_long))
    if cfg.streams:
        out.append(("streams", f"{cfg.streams} real-time streams for {cfg.stream_seconds} s", workload_streams))
    if cfg.uploads:
        out.append(("transcriptions", f"{cfg.uploads} transcription uploads, concurrency {cfg.upload_concurrency}",
                    workload_uploads))
    return out


async def run_side_by_side(targets: dict[str, Target], cfg: LoadtestConfig, utts: list[Recording],
                           log: Callable[[str], None]) -> tuple[dict, dict]:
    """Each workload on every target, one target after the other (so both see the machine in the same state);
    returns ({side: results}, {side: raw samples}). The 1-minute load average before and after each run is kept:
    numbers measured while other processes compete for the CPU are not comparable with a quiet run."""
    results = {side: {} for side in targets}
    raw = {side: {} for side in targets}
    try:
        for key, what, workload in workloads(cfg):
            for side, target in targets.items():
                log(f"({side}) {what}")
                before = os.getloadavg()[0]
                results[side][key] = await workload(target, cfg, utts, random.Random(cfg.seed), raw[side])
                results[side][key]["load_average"] = [round(before, 2), round(os.getloadavg()[0], 2)]
    finally:
        for target in targets.values():
            await target.aclose()
    return results, raw


# ---------------------------------------------------------------- the server process


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    """``speechtrt serve`` in a subprocess with the given configuration; SIGTERM (drain) to stop."""

    def __init__(self, serve_config, log_path: Path, ready_timeout_s: float = 600.0):
        from speechtrt.serve.flags import argv_for

        self.config = replace(serve_config, port=serve_config.port or free_port(serve_config.host))
        self.url = f"http://{self.config.host}:{self.config.port}"
        self.argv = [sys.executable, "-m", "speechtrt.cli", "serve", *argv_for(self.config), "--log-level",
                     "warning"]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = open(log_path, "w")
        env = dict(os.environ)
        if self.config.api_key:
            env["SPEECHTRT_API_KEY"] = self.config.api_key
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self._wait_ready(ready_timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SpeechTRTError(f"the server exited with {self.proc.returncode} before it was ready; its log: "
                                     f"{self.log_path}: {self.log_path.read_text()[-600:]}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.proc.kill()
        raise SpeechTRTError(f"the server was not ready within {timeout_s:.0f} s; its log: {self.log_path}")

    def peak_rss_mb(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def stop(self, timeout_s: float = 60.0) -> dict:
        """SIGTERM, wait for the drain; returns exit code and seconds to exit."""
        t0 = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return {"exit_code": code, "drain_and_exit_s": time.perf_counter() - t0}


# ---------------------------------------------------------------- the run


def run_loadtest(cfg: LoadtestConfig, serve_config, log: Callable[[str], None] = print, command: str = "") -> dict:
    """Run every workload over the network and in-process; write the report into ``cfg.out_dir``."""
    from speechtrt.files import check_writable

    if cfg.quick:
        cfg = quick(cfg)
    out = check_writable(cfg.out_dir, "--out")
    if cfg.url is not None:
        check_server_url(cfg.url)
    utts = synth_recordings(Path(cfg.cache_dir) / "recordings", cfg.utterances) if (cfg.streams or cfg.uploads) else []
    report: dict = {"format": "speechtrt-loadtest/1", "command": command, **environment(serve_config.device,
                                                                                         serve_config.threads),
                    "config": asdict(cfg), "server": {}, "network": {}, "in_process": {}}
    report["config"]["long_text_characters"] = len(cfg.long_text)
    server = state = triton = None
    try:
        if cfg.url is None:
            log("starting `speechtrt serve` (models load once)")
            server = ServerProcess(serve_config, Path(cfg.cache_dir) / "server.log")
            url = server.url
            report["server"] = {"url": url, "started_by_loadtest": True, "argv": server.argv[3:]}
        else:
            url = cfg.url
            report["server"] = {"url": url, "started_by_loadtest": False, "note": "external server: its "
                                "configuration is assumed to match the in-process build"}
        if cfg.in_process or cfg.streams:
            from speechtrt.serve.state import ServerState

            log("loading the same build in-process")
            state = ServerState.load(serve_config, log_fn=lambda m: None)
            state.start()
        if cfg.target == "triton":
            triton = _start_triton(serve_config, cfg, log)
            report["triton_server"] = {"grpc_url": triton.grpc_url, "http_url": triton.http_url,
                                       "repository": str(triton.config.repository)}
        targets = side_targets(cfg, url, serve_config.effective_api_key, state,
                               triton.grpc_url if triton is not None else None)
        results, raw = asyncio.run(run_side_by_side(targets, cfg, utts, log))
        report.update(results)
        if server is not None:
            report["server"]["peak_rss_mb"] = server.peak_rss_mb()
            report["server"]["metrics_sample"] = _metrics_summary(url)
        if cfg.in_process and state.tts and cfg.long_repeats:
            log("(in_process) TTS long text without streaming")
            report["in_process"]["tts_long_text"]["unstreamed_ms"] = percentiles_ms(
                unstreamed_synthesis(state, cfg.long_text, cfg.long_repeats))
        if cfg.streams and state is not None and state.streams:
            _check_finals(report, raw, utts, state, log)
    finally:
        if server is not None:
            report["server"].update(server.stop())
        if triton is not None:
            triton.stop()
        if state is not None:
            state.stop()
    report["comparison"] = compare(report)
    paths = write_report(report, raw, out)
    report["files"] = [str(p) for p in paths]
    return report


def _start_triton(serve_config, cfg: LoadtestConfig, log):
    """Export a CPU model repository of the models ``serve_config`` serves (cached) and start Triton on it."""
    from speechtrt.triton.repository import RepositoryConfig, export_repository
    from speechtrt.triton.server import ServerConfig, launch

    cache = Path(cfg.cache_dir) / "triton"
    models = []
    if serve_config.tts:
        models.append("tts")
    if serve_config.asr:
        models.append("asr-small")
    if serve_config.stream:
        models.append("asr-stream")
    log(f"exporting a CPU Triton repository ({', '.join(models)})")
    repo = export_repository(RepositoryConfig(out=cache / "model_repository", models=tuple(models),
                                              artifacts=cache / "artifacts", checkpoint_dir=serve_config.checkpoints,
                                              threads=serve_config.threads or 1), log=log)
    log("starting tritonserver")
    return launch(ServerConfig(repository=repo.out, http_port=0, grpc_port=0, metrics_port=0,
                               log_file=cache / "tritonserver.log"))


def unstreamed_synthesis(state, text: str, repeats: int) -> list[float]:
    """Seconds to synthesize ``text`` whole (parts packed to fill slots, no streaming), as a non-streaming server
    would before its first byte."""
    worker = next(iter(state.tts.values()))
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        worker.submit(text).result(600)
        out.append(time.perf_counter() - t0)
    return out


def side_targets(cfg: LoadtestConfig, url: str, api_key: str | None, state, triton_grpc_url: str | None) -> dict:
    """The clients driven side by side: ``network`` is always the FastAPI server at ``url``; ``triton`` (with
    ``--target triton``) Triton's gRPC endpoint; ``in_process`` the same build in this process."""
    targets = {"network": make_target("serve", url, api_key=api_key,
                                      connections=max(cfg.tts_concurrency, cfg.upload_concurrency) * 2 + 16)}
    if triton_grpc_url is not None:
        targets["triton"] = make_target("triton", triton_grpc_url)
    if cfg.in_process:
        targets["in_process"] = make_target("in-process", state=state)
    return targets


def _check_finals(report: dict, raw: dict, utts: list[Recording], state, log) -> None:
    """Each stream's final against the offline transcript of the same model on the same audio."""
    asr = next(iter(state.streams.values()))
    reference = {i: asr.offline_text(u.samples) for i, u in enumerate(utts)}
    for side in ("network", "triton", "in_process"):
        samples = raw.get(side, {}).get("stream_samples")
        if not samples or "streams" not in report[side]:
            continue
        ok = [s for s in samples if s.ok]
        same = sum(s.final == reference[s.utterance] for s in ok)
        report[side]["streams"]["finals_equal_offline"] = same / len(ok) if ok else None
        report[side]["streams"]["finals_checked"] = len(ok)
        log(f"({side}) finals equal to offline: {same}/{len(ok)}")


def _metrics_summary(url: str) -> dict:
    """A few counters from the server's own /metrics after the run (what Prometheus would have seen)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(url + "/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    out: dict = {}
    for fam in text_string_to_metric_families(text):
        if fam.name in ("speechtrt_requests", "speechtrt_refused", "speechtrt_degraded", "speechtrt_routed"):
            for s in fam.samples:
                if s.name.endswith("_total"):
                    key = fam.name.removeprefix("speechtrt_") + "{" + ",".join(f"{k}={v}" for k, v in
                                                                               sorted(s.labels.items())) + "}"
                    out[key] = s.value
        if fam.name == "speechtrt_batch_size":
            for s in fam.samples:
                if s.name.endswith(("_sum", "_count")):
                    out[f"batch_size{s.name.removeprefix('speechtrt_batch_size')}{{{s.labels['service']}}}"] = s.value
    return out
