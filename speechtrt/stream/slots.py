"""Preallocated per-stream storage, the batched front end, and the check every chunk of audio passes on its way in.

A :class:`StreamSlotPool` is sized once for ``capacity`` streams. Each slot owns one row of every state tensor
(``ctx1``, ``ctx2``, ``h``, ``c`` of the streaming model) and a bounded buffer of raw samples that starts on a frame
boundary, so it carries the ``n_fft - hop`` samples of overlap the next frame needs. Producers only copy samples in;
the scheduler cuts one chunk's sample window per stream and :class:`ChunkFeaturizer` turns the whole batch into
log-mel frames at once, on the backend's device, with the offline front end's framing. Opening and closing streams
moves slot indices only: no tensor is allocated per stream, so thousands of streams opened and closed leave memory
where it started.
"""

from __future__ import annotations

import numpy as np
import torch

from speechtrt.errors import InputError
from speechtrt.models.audio import FEATURES, FeatureConfig, log_mel_frames


class StreamSlotPool:
    """``capacity`` slots of model state (on the backend's device) and sample buffers (host memory).

    ``state_template`` is the model's ``initial_state(1)``; ``batch_dims`` names the batch axis of each state tensor
    (``h``/``c`` are ``[layers, B, hidden]``, so their batch axis is 1). Slot rows are zero when free, which is the
    streaming model's start state.
    """

    def __init__(self, capacity: int, state_template: dict[str, torch.Tensor], batch_dims: dict[str, int],
                 max_frames: int, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, features: FeatureConfig = FEATURES):
        if capacity < 1:
            raise ValueError(f"a slot pool needs at least one slot, got capacity={capacity}")
        self.capacity = capacity
        self.batch_dims = dict(batch_dims)
        self.device = torch.device(device)
        self.features = features
        self.state: dict[str, torch.Tensor] = {}
        for name, t in state_template.items():
            shape = list(t.shape)
            shape[self.batch_dims[name]] = capacity
            self.state[name] = torch.zeros(shape, dtype=dtype, device=self.device)
        # host sample storage: [capacity, samples for max_frames frames]
        self.max_frames = max_frames
        self.samples = np.zeros((capacity, (max_frames - 1) * features.hop + features.n_fft), dtype=np.float32)
        self._free = list(range(capacity - 1, -1, -1))  # pop() hands out slot 0 first
        self._in_use = bytearray(capacity)

    @property
    def free_count(self) -> int:
        return len(self._free)

    @property
    def in_use_count(self) -> int:
        return self.capacity - len(self._free)

    def acquire(self) -> int | None:
        """A free slot index (its state is the start state), or ``None`` when all slots are taken."""
        if not self._free:
            return None
        slot = self._free.pop()
        self._in_use[slot] = 1
        return slot

    def release(self, slot: int) -> None:
        """Zero the slot's state and return it to the free list. Releasing a free slot is a bug and raises."""
        if not 0 <= slot < self.capacity or not self._in_use[slot]:
            raise RuntimeError(f"slot {slot} is not in use (capacity {self.capacity}); double release")
        for name, t in self.state.items():
            t.select(self.batch_dims[name], slot).zero_()
        self._in_use[slot] = 0
        self._free.append(slot)

    def gather(self, slots: torch.Tensor) -> dict[str, torch.Tensor]:
        """State rows of ``slots`` (int64 on the pool's device) stacked into a batch, in the order given."""
        return {name: t.index_select(self.batch_dims[name], slots) for name, t in self.state.items()}

    def scatter(self, slots: torch.Tensor, new_state: dict[str, torch.Tensor]) -> None:
        """Write a batch of updated state rows back to their slots."""
        for name, t in self.state.items():
            t.index_copy_(self.batch_dims[name], slots, new_state[name].to(t.dtype))

    def state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.state.values())

    def buffer_bytes(self) -> int:
        return self.samples.nbytes

    def sample_buffer(self, slot: int) -> "SampleBuffer":
        return SampleBuffer(self.samples[slot], self.features)


class SampleBuffer:
    """Bounded raw samples of one stream, starting at the first sample of its next unprocessed frame.

    A view into the pool's storage (no allocation of its own). Frame ``i`` of the stream covers samples
    ``[i*hop, i*hop + n_fft)``; taking ``k`` frames copies their window (``(k-1)*hop + n_fft`` samples) and drops the
    first ``k*hop`` samples, keeping the overlap the next frame needs.
    """

    __slots__ = ("data", "cfg", "count", "total_samples")

    def __init__(self, data: np.ndarray, cfg: FeatureConfig):
        self.data = data  # [capacity samples]
        self.cfg = cfg
        self.count = 0  # samples buffered
        self.total_samples = 0  # samples ever accepted

    @property
    def capacity(self) -> int:
        return self.data.shape[0]

    @property
    def frames_ready(self) -> int:
        """Whole frames the buffered samples make."""
        return self.cfg.frames_for(self.count)

    @property
    def total_frames(self) -> int:
        """Frames all accepted samples make (what the offline front end gives for the same audio)."""
        return self.cfg.frames_for(self.total_samples)

    def samples_that_fit(self) -> int:
        return self.capacity - self.count

    def append(self, samples: np.ndarray) -> None:
        """Copy ``samples`` (float32 [N]) in; the caller checks :meth:`samples_that_fit` first."""
        n = samples.shape[0]
        if n > self.capacity - self.count:
            raise RuntimeError(f"sample buffer overflow: {self.count} + {n} > {self.capacity}")
        self.data[self.count: self.count + n] = samples
        self.count += n
        self.total_samples += n

    def take(self, frames: int, out: np.ndarray) -> int:
        """Copy the window of up to ``frames`` ready frames into ``out`` (zero-filling the rest of ``out``) and drop
        their hops; returns the number of frames taken."""
        k = min(frames, self.frames_ready)
        span = (k - 1) * self.cfg.hop + self.cfg.n_fft if k else 0
        out[:span] = self.data[:span]
        out[span:] = 0.0
        drop = k * self.cfg.hop
        rest = self.count - drop
        if k and rest:
            self.data[:rest] = self.data[drop: self.count]
        self.count = rest
        return k

    def reset(self) -> None:
        self.count = 0
        self.total_samples = 0


class ChunkFeaturizer:
    """Log-mel frames of a batch of chunk windows: [B, (chunk-1)*hop + n_fft] samples -> [B, chunk, n_mels].

    The arithmetic is :func:`speechtrt.models.audio.log_mel_frames`, the one :func:`~speechtrt.models.audio.log_mel`
    uses (no centring, periodic Hann window, HTK mel filterbank, natural log with floor), batched, on ``device``.
    Frames past a stream's last sample come out of zero-padding; the causal model never lets them change a valid
    output.
    """

    def __init__(self, chunk_frames: int, device: str | torch.device = "cpu", cfg: FeatureConfig = FEATURES):
        self.chunk_frames = chunk_frames
        self.cfg = cfg
        self.window_samples = (chunk_frames - 1) * cfg.hop + cfg.n_fft
        self.device = torch.device(device)

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        return log_mel_frames(windows.unfold(1, self.cfg.n_fft, self.cfg.hop), self.cfg)  # [B, chunk, n_mels]


def validate_samples(stream_id: str, samples, sample_rate: int | None, expected_rate: int) -> np.ndarray:
    """Check one chunk of audio; returns mono float32 samples [N] or raises :class:`InputError` saying what to fix."""
    if sample_rate is not None and sample_rate != expected_rate:
        raise InputError(f"stream {stream_id!r}: audio at {sample_rate} Hz, the engine runs at {expected_rate} Hz; "
                         "resample before pushing (speechtrt.models.audio.resample)")
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu().numpy()
    if not isinstance(samples, np.ndarray):
        raise InputError(f"stream {stream_id!r}: samples must be a NumPy float32 array, got {type(samples).__name__}")
    if samples.dtype not in (np.float32, np.float64):
        raise InputError(f"stream {stream_id!r}: samples have dtype {samples.dtype}; push float32 in [-1, 1] "
                         "(16-bit PCM: divide by 32768)")
    if samples.ndim == 2 and samples.shape[1] == 1:
        samples = samples[:, 0]
    if samples.ndim != 1:
        raise InputError(f"stream {stream_id!r}: samples have shape {samples.shape}; push mono audio [N]")
    if samples.shape[0] == 0:
        raise InputError(f"stream {stream_id!r}: empty chunk; push at least one sample (finalize() ends a stream)")
    finite = np.isfinite(samples)
    if not finite.all():
        raise InputError(f"stream {stream_id!r}: chunk has {int((~finite).sum())} NaN/Inf samples of "
                         f"{samples.shape[0]}; nothing was accepted, clean the audio and push again")
    return np.ascontiguousarray(samples, dtype=np.float32)
