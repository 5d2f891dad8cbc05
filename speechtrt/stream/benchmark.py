"""The ``speechtrt stream`` measurement as one library call: model → recordings → trial(s) → report files.

A trial opens the step (:meth:`StepModel.open`: the one runner path), an engine sized for its stream count, warms
it up, plays :func:`~speechtrt.stream.loadgen.run_load` under a :class:`~speechtrt.reporting.UsageSampler` (the
run's real memory peak), then checks every final transcript against the offline pass of the same backend. With
``find_capacity`` the trials are chosen by :func:`~speechtrt.stream.capacity.find_capacity`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from speechtrt.errors import InputError
from speechtrt.stream.core import StreamConfig
from speechtrt.stream.step import StepConfig, StepModel

DEFAULT_CHECKPOINT = Path("checkpoints/asr-stream.pt")


@dataclass(frozen=True)
class BenchConfig:
    """One ``speechtrt stream`` run. ``max_batch`` 0: ``min(streams, 1024)`` per trial; ``target_p95_ms`` 0: 100 ms
    on a CPU, 50 ms on a GPU; ``manifest`` None: ``utterances`` espeak-ng recordings cached under ``cache_dir``."""

    step: StepConfig = field(default_factory=StepConfig)
    streams: int = 64
    chunk_ms: int = 160
    seconds: float = 20.0
    max_batch: int = 0
    max_wait_ms: float = 10.0
    max_buffer_ms: float = 2000.0
    idle_timeout_s: float = 30.0
    jitter_ms: float = 20.0
    seed: int = 0
    manifest: Path | None = None
    utterances: int = 8
    checkpoint: Path | None = None
    out: Path = Path("reports")
    cache_dir: Path = Path("tmp/cache/stream")
    find_capacity: bool = False
    capacity_max: int = 4096
    target_p95_ms: float = 0.0
    command: str = "speechtrt stream"

    @property
    def target(self) -> float:
        gpu = str(self.step.device).startswith("cuda") or self.step.backend == "trt"
        return self.target_p95_ms or (50.0 if gpu else 100.0)


@dataclass
class Trial:
    """One load run: its numbers, every chunk latency (ms) and what ran."""

    summary: dict
    latencies_ms: list[float]
    step: dict


@dataclass
class BenchResult:
    report: dict
    paths: list[Path]
    skipped: list  # SkippedInput rows of the manifest


def load_stream_model(checkpoint: Path | None):
    """The trained streaming checkpoint when there is one (explicit, or ``checkpoints/asr-stream.pt``), else the
    seeded init model. Returns ``(model, description)``."""
    from speechtrt.models import StreamingASRModel, build_model, load_checkpoint

    path = checkpoint or (DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else None)
    if path is None:
        return build_model("asr-stream"), "asr-stream, seeded init (no checkpoint: transcripts are not words)"
    model, _ = load_checkpoint(path)
    if not isinstance(model, StreamingASRModel):
        raise InputError(f"checkpoint {path} holds a {type(model).__name__}; `speechtrt stream` needs an asr-stream "
                         "checkpoint (--checkpoint)")
    return model, f"asr-stream from {path}"


def run_trial(cfg: BenchConfig, model: torch.nn.Module, streams: int, recordings,
              progress: Callable[[float], None] | None = None) -> Trial:
    """``streams`` concurrent real-time clients for ``cfg.seconds`` against a fresh engine; see the module doc."""
    from speechtrt.reporting import UsageSampler
    from speechtrt.stream.engine import StreamingEngine
    from speechtrt.stream.loadgen import LoadConfig, check_against_offline, run_load
    from speechtrt.stream.report import summarize

    chunk_frames = int(round(cfg.chunk_ms / 10))
    max_batch = cfg.max_batch or min(streams, 1024)
    step = StepModel.open(replace(cfg.step, max_batch=max_batch), model)
    config = StreamConfig(max_streams=streams, max_batch=max_batch, max_wait_ms=cfg.max_wait_ms,
                          chunk_frames=chunk_frames, max_buffer_ms=cfg.max_buffer_ms,
                          idle_timeout_s=cfg.idle_timeout_s)
    load_cfg = LoadConfig(streams=streams, seconds=cfg.seconds, chunk_ms=cfg.chunk_ms, jitter_ms=cfg.jitter_ms,
                          seed=cfg.seed)
    engine = StreamingEngine(step, config)
    engine.warmup()
    with UsageSampler(str(step.device)) as usage, engine:
        result = run_load(engine, recordings, load_cfg, progress=progress)
    check_against_offline(result, recordings, step, chunk_frames)
    summary = summarize(engine, result, load_cfg, usage.result())
    trial = Trial(summary, [x * 1000 for x in engine.metrics.latencies_s], step.describe())
    step.close()
    return trial


def run_benchmark(cfg: BenchConfig, progress: Callable[[int, float], None] | None = None,
                  log: Callable[[str], None] = lambda msg: None) -> BenchResult:
    """Load the model and recordings, run one trial (or the capacity search), write the report files.

    ``progress(streams, elapsed_s)`` is called about every 0.25 s of a trial; ``log`` hears one line per event
    worth telling (skipped inputs, capacity trials).
    """
    from speechtrt.stream.capacity import find_capacity
    from speechtrt.stream.loadgen import load_recordings, synth_recordings
    from speechtrt.stream.report import build_report, write_reports

    if cfg.step.threads:
        torch.set_num_threads(cfg.step.threads)
    model, model_desc = load_stream_model(cfg.checkpoint)
    if cfg.manifest is not None:
        recordings, skipped = load_recordings(cfg.manifest, limit=cfg.utterances)
        for s in skipped:
            log(f"skipped {s.where}: {s.reason}")
    else:
        recordings, skipped = synth_recordings(cfg.cache_dir / "utterances", cfg.utterances), []
    step_cfg = cfg.step if cfg.step.onnx_dir is not None else replace(cfg.step, cache_dir=cfg.cache_dir / "onnx")
    cfg = replace(cfg, step=step_cfg)

    def trial(n: int) -> Trial:
        return run_trial(cfg, model, n, recordings, progress=(lambda t: progress(n, t)) if progress else None)

    capacity = None
    if cfg.find_capacity:
        search = find_capacity(trial, lambda t: t.summary, cfg.streams, max(cfg.capacity_max, cfg.streams),
                               cfg.target, log)
        run, capacity = search.report_trial, search.to_json()
    else:
        run = trial(cfg.streams)
    report = build_report(run.summary, run.step, model_desc, cfg.command, str(cfg.step.device), cfg.step.threads,
                          capacity, [asdict(s) for s in skipped])
    paths = write_reports(report, run.latencies_ms, cfg.out, cfg.target)
    return BenchResult(report, paths, skipped)
