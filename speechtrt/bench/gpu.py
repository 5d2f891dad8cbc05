"""Memory and utilisation probes: torch's CUDA allocator, NVML sampling on GPU, resident set size on CPU."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


def rss_mb() -> float:
    """This process's resident set size in MiB (Linux ``/proc``; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def nvml_available() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetCount() > 0
    except Exception:  # no library, no driver, no device
        return False


@dataclass
class UsageSampler:
    """Samples GPU utilisation and memory (NVML) or the process RSS (CPU) every ``interval_s`` on a thread.

    ``with UsageSampler("cuda") as s: ...`` then ``s.result()``: peak memory (allocator peak, NVML peak used, RSS
    peak), mean and max GPU utilisation in percent (None without NVML).
    """

    device: str = "cpu"
    interval_s: float = 0.05
    gpu_index: int = 0
    util: list[float] = field(default_factory=list)
    nvml_mem_mb: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = None
        self._handle = None
        self._rss0 = rss_mb()

    def __enter__(self):
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            if nvml_available():
                import pynvml

                self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.gpu_index)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.rss.append(rss_mb())
            if self._handle is not None:
                import pynvml

                self.util.append(float(pynvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
                self.nvml_mem_mb.append(pynvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20)
            self._stop.wait(self.interval_s)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def result(self) -> dict:
        import torch

        out = {
            "rss_peak_mb": max(self.rss, default=self._rss0),
            "rss_growth_mb": max(self.rss, default=self._rss0) - self._rss0,
            "gpu_util_mean_pct": (sum(self.util) / len(self.util)) if self.util else None,
            "gpu_util_max_pct": max(self.util) if self.util else None,
            "nvml_used_peak_mb": max(self.nvml_mem_mb) if self.nvml_mem_mb else None,
            "allocator_peak_mb": None,
        }
        if self.device.startswith("cuda"):
            out["allocator_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return out
