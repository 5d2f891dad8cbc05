"""Simulated real-time clients: many streams playing real utterances into a :class:`StreamingEngine`.

Each client plays one utterance at real-time pace: a chunk of about ``chunk_ms`` (irregular: ±``chunk_spread``) is
pushed once its audio has been "spoken", plus network jitter. When the utterance ends the client finalizes, pauses
briefly and joins again with the next utterance as a new stream, so streams join and leave throughout the run. At
the end of ``seconds`` clients stop joining and finalize their current stream at its next chunk (the audio pushed
so far is the stream's audio). A push refused for backpressure is retried with the same samples, and an open
refused for capacity is retried: audio is never skipped.

All clients run on one thread driven by a time-ordered event queue, so a thousand clients cost no thousand threads.
Every final transcript is then checked against the offline transcript of the same backend on exactly the audio the
stream pushed.
"""

from __future__ import annotations

import heapq
import math
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speechtrt.asr.data import Utterance, read_manifest, write_manifest
from speechtrt.asr.decode import greedy_path
from speechtrt.errors import CapacityError, InputError
from speechtrt.models.audio import FEATURES, espeak_speech, log_mel, read_wav, resample, write_wav
from speechtrt.models.text import asr_decode
from speechtrt.stream.engine import BackpressureError, FinalTranscript, StreamingEngine
from speechtrt.stream.step import StepModel

# The seed's sample texts (short and medium) spoken in several espeak-ng accents.
DEFAULT_TEXTS = (
    "Hello world!",
    "Good morning, how are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "Artificial intelligence is transforming the way we interact with technology.",
    "In a hole in the ground there lived a hobbit.",
    "To be or not to be, that is the question.",
    "Four score and seven years ago our fathers brought forth on this continent a new nation.",
    "Call me Ishmael. Some years ago I thought I would sail about a little and see the watery part of the world.",
)
DEFAULT_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-us-nyc", "en-gb-x-rp", "en-gb-x-gbclan", "en-us+f3",
                  "en-gb-scotland+m3")


@dataclass(frozen=True)
class Recording:
    """One utterance's audio, loaded and ready to play: the load generator's unit (a manifest row is
    :class:`speechtrt.asr.data.Utterance`; this is its decoded audio)."""

    utt_id: str
    samples: np.ndarray  # float32 [N] at 16 kHz, mono
    text: str
    dialect: str
    speaker: str

    @property
    def duration_s(self) -> float:
        return self.samples.shape[0] / FEATURES.sample_rate


@dataclass(frozen=True)
class SkippedInput:
    """A manifest line or utterance that was not played: where it is (line number or audio path) and why."""

    where: str
    reason: str


def synth_recordings(cache_dir: str | Path, count: int = 8) -> list[Recording]:
    """``count`` espeak-ng utterances (seed texts × accents), cached as WAV + manifest under ``cache_dir``."""
    cache = Path(cache_dir)
    manifest = cache / "manifest.jsonl"
    if manifest.is_file():
        recordings, skipped = load_recordings(manifest)
        if len(recordings) >= count and not skipped:
            return recordings[:count]
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        text, voice = DEFAULT_TEXTS[i % len(DEFAULT_TEXTS)], DEFAULT_VOICES[i % len(DEFAULT_VOICES)]
        rate = 150 + 15 * (i % 4)
        audio = espeak_speech(text, voice=voice, rate=rate)
        path = write_wav(cache / f"utt{i:03d}.wav", audio, FEATURES.sample_rate)
        rows.append(Utterance(str(path.resolve()), text, round(len(audio) / FEATURES.sample_rate, 3),
                              voice.split("+")[0], f"{voice}-r{rate}"))
    write_manifest(manifest, rows)
    return load_recordings(manifest)[0]


def load_recordings(manifest: str | Path, limit: int | None = None) -> tuple[list[Recording], list[SkippedInput]]:
    """Audio of the rows of a JSONL manifest (read by :func:`speechtrt.asr.data.read_manifest`), mixed to mono and
    resampled to 16 kHz, and every line or file skipped with why: a bad line or unreadable audio is listed, as
    evaluation does, and the rest still plays. Raises :class:`InputError` when the manifest is missing or nothing in
    it is playable."""
    rows, problems = read_manifest(manifest)
    root = Path(manifest).parent
    skipped = [SkippedInput(f"line {p.line}", p.reason) for p in problems]
    recordings = []
    for row in rows:
        if limit and len(recordings) >= limit:
            break
        path = row.path(root)
        try:
            samples, rate = read_wav(path)
        except InputError as exc:
            skipped.append(SkippedInput(row.audio_filepath, str(exc)))
            continue
        if samples.ndim == 2:
            samples = samples.mean(axis=1)
        samples = resample(samples, rate, FEATURES.sample_rate)
        if samples.shape[0] == 0:
            skipped.append(SkippedInput(row.audio_filepath, "no samples"))
            continue
        recordings.append(Recording(path.stem, samples.astype(np.float32), row.text, row.dialect, row.speaker))
    if not recordings:
        raise InputError(f"manifest {manifest} has no playable utterance ({len(skipped)} skipped: "
                         + "; ".join(f"{s.where}: {s.reason}" for s in skipped[:3]) + ")")
    return recordings, skipped


@dataclass(frozen=True)
class LoadConfig:
    """Client behaviour. ``streams`` clients are active at once (each joins, streams, leaves, joins again)."""

    streams: int = 64
    seconds: float = 20.0
    chunk_ms: float = 160.0  # mean client chunk
    chunk_spread: float = 0.5  # chunk sizes uniform in chunk_ms × [1 - spread, 1 + spread]
    jitter_ms: float = 20.0  # each push is late by uniform [0, jitter_ms]
    join_spread_s: float = 1.0  # first joins spread over this window
    gap_s: float = 0.3  # pause between a client's streams: uniform [0, gap_s]
    retry_ms: float = 5.0  # wait before retrying a push refused for backpressure
    seed: int = 0


@dataclass
class StreamRecord:
    stream_id: str
    utt_id: str
    samples_pushed: int
    chunks_pushed: int
    future: Future
    final: FinalTranscript | None = None
    error: str | None = None


@dataclass
class LoadResult:
    records: list[StreamRecord]
    active_over_time: list[tuple[float, int]]  # (seconds since start, open streams)
    wall_s: float
    cpu_s: float  # process CPU time over the run (all threads)
    unaccepted_chunks: int  # client chunks still not accepted at the end (would be drops)
    backpressure_retries: int
    refused_opens: int
    partial_observations: int
    partial_revisions: int  # partial that did not extend the previous partial of the same stream
    offline_checked: int = 0
    final_matches_offline: float = float("nan")  # token ids equal
    final_text_matches_offline: float = float("nan")
    dropped_chunks: int = 0
    mismatches: list[dict] = field(default_factory=list)


class _Client:
    __slots__ = ("idx", "utt", "stream_id", "pos", "t0", "pending", "chunks", "partial")

    def __init__(self, idx: int):
        self.idx = idx
        self.utt: Recording | None = None
        self.stream_id: str | None = None
        self.pos = 0
        self.t0 = 0.0
        self.pending = 0  # size of the chunk being pushed (samples)
        self.chunks = 0
        self.partial = ""


class _Players:
    """Every client's next move, on one time-ordered event queue: join (open a stream), push the next chunk, leave
    (finalize). Each move returns when the client acts next (None: it waits for no event)."""

    def __init__(self, engine: StreamingEngine, recordings: list[Recording], cfg: LoadConfig, start: float):
        self.engine, self.recordings, self.cfg = engine, recordings, cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.mean_chunk = cfg.chunk_ms / 1000 * FEATURES.sample_rate  # samples
        self.end = start + cfg.seconds
        self.clients = [_Client(i) for i in range(cfg.streams)]
        self.records: list[StreamRecord] = []
        self.events: list[tuple[float, int, int]] = []  # (due, seq, client)
        self.seq = 0
        self.next_utt = int(self.rng.integers(len(recordings)))
        self.retries = self.refused = self.observations = self.revisions = 0
        for c in self.clients:
            self.schedule(c, start + self.rng.uniform(0, cfg.join_spread_s))

    def schedule(self, c: _Client, due: float) -> None:
        heapq.heappush(self.events, (due, self.seq, c.idx))
        self.seq += 1

    def chunk_size(self) -> int:
        spread = self.cfg.chunk_spread
        return max(1, int(self.mean_chunk * self.rng.uniform(1 - spread, 1 + spread)))

    def due(self, c: _Client) -> float:
        """When the chunk after ``c.pos`` has been spoken, plus network jitter."""
        return c.t0 + (c.pos + c.pending) / FEATURES.sample_rate + self.rng.uniform(0, self.cfg.jitter_ms / 1000)

    def join(self, c: _Client, now: float) -> float | None:
        if now >= self.end:
            return None
        try:
            c.stream_id = self.engine.open()
        except CapacityError:
            self.refused += 1
            return now + 0.05
        c.utt = self.recordings[self.next_utt % len(self.recordings)]
        self.next_utt += 1
        c.pos, c.chunks, c.partial, c.t0 = 0, 0, "", now
        c.pending = self.chunk_size()
        return self.due(c)

    def send(self, c: _Client, now: float) -> float | None:
        n = c.utt.samples.shape[0]
        if now >= self.end or c.pos >= n:
            return self.leave(c, now)
        piece = c.utt.samples[c.pos: c.pos + c.pending]
        try:
            self.engine.push(c.stream_id, piece, block=False)
        except BackpressureError:  # retried with the same samples: audio is never skipped
            self.retries += 1
            return now + self.cfg.retry_ms / 1000
        c.pos += piece.shape[0]
        c.chunks += 1
        text = self.engine.partial(c.stream_id)
        self.observations += 1
        self.revisions += not text.startswith(c.partial)
        c.partial = text
        if c.pos >= n:
            return self.leave(c, now)
        c.pending = self.chunk_size()
        return self.due(c)

    def leave(self, c: _Client, now: float) -> float | None:
        future = self.engine.finalize_async(c.stream_id)
        self.records.append(StreamRecord(c.stream_id, c.utt.utt_id, c.pos, c.chunks, future))
        c.stream_id, c.utt = None, None
        return now + self.rng.uniform(0, self.cfg.gap_s) if now < self.end else None


def run_load(engine: StreamingEngine, utterances: list[Recording], cfg: LoadConfig, progress=None) -> LoadResult:
    """Drive ``cfg.streams`` concurrent clients for ``cfg.seconds`` against a started engine; wait for every final
    transcript. ``progress(elapsed_s)`` is called about every 0.25 s."""
    if not utterances:
        raise InputError("the load generator needs at least one utterance")
    start = time.monotonic()
    cpu0 = time.process_time()
    players = _Players(engine, utterances, cfg, start)
    active: list[tuple[float, int]] = []
    next_sample = start
    while players.events:
        due, _, idx = heapq.heappop(players.events)
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
            now = time.monotonic()
        if now >= next_sample:
            active.append((now - start, engine.open_streams))
            if progress:
                progress(min(now - start, cfg.seconds))
            next_sample = now + 0.25
        c = players.clients[idx]
        again = players.join(c, now) if c.stream_id is None else players.send(c, now)
        if again is not None:
            players.schedule(c, again)
    unaccepted = sum(1 for c in players.clients if c.stream_id is not None)  # cannot happen: every client left
    for r in players.records:
        try:
            r.final = r.future.result(timeout=120)
        except Exception as exc:  # a failed or cancelled stream: its chunks count as dropped below
            r.error = f"{exc.__class__.__name__}: {exc}"
    active.append((time.monotonic() - start, engine.open_streams))
    return LoadResult(players.records, active, time.monotonic() - start, time.process_time() - cpu0, unaccepted,
                      players.retries, players.refused, players.observations, players.revisions)


def check_against_offline(result: LoadResult, utterances: list[Recording], model: StepModel,
                          chunk_frames: int) -> None:
    """Fill ``dropped_chunks`` and ``final_matches_offline`` of ``result``.

    A stream drops audio if it decoded fewer frames than its pushed samples make; its final transcript matches if
    its CTC token ids equal the offline decode (one pass over the whole audio) of the same backend.
    """
    by_id = {u.utt_id: u for u in utterances}
    cache: dict[tuple[str, int], tuple[tuple[int, ...], str]] = {}
    dropped, matches, text_matches, checked = result.unaccepted_chunks, 0, 0, 0
    for r in result.records:
        expected_frames = FEATURES.frames_for(r.samples_pushed)
        if r.final is None:
            dropped += max(r.chunks_pushed, 1)
            continue
        if r.final.frames != expected_frames:
            dropped += math.ceil(abs(expected_frames - r.final.frames) / chunk_frames)
        key = (r.utt_id, r.samples_pushed)
        if key not in cache:
            feats = log_mel(by_id[r.utt_id].samples[: r.samples_pushed])
            if feats.shape[0] == 0:
                cache[key] = ((), "")
            else:
                tokens = tuple(greedy_path(model.offline(feats[None]).argmax(dim=-1)[0].cpu())[0])
                cache[key] = (tokens, asr_decode(tokens))
        tokens, text = cache[key]
        checked += 1
        matches += r.final.token_ids == tokens
        text_matches += r.final.text == text
        if r.final.token_ids != tokens and len(result.mismatches) < 20:
            result.mismatches.append({"stream": r.stream_id, "utt": r.utt_id, "samples": r.samples_pushed,
                                      "streamed": r.final.text, "offline": text})
    result.dropped_chunks = dropped
    result.offline_checked = checked
    result.final_matches_offline = matches / checked if checked else float("nan")
    result.final_text_matches_offline = text_matches / checked if checked else float("nan")
