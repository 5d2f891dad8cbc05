"""Memory and utilisation during a measured section: a real high-water mark, not samples that can miss a peak.

On Linux the kernel keeps the process's peak resident set (``VmHWM``) and lets it be reset (``/proc/self/clear_refs``
← ``5``), so the peak of a section is exact however short the spike. Where that reset is not allowed the sampler
falls back to polling the resident set every ``interval_s`` and says so (``rss_peak_method``). On CUDA it also
reports the allocator's peak and, with NVML, the device's peak used memory and utilisation.
"""

from __future__ import annotations

import resource
import threading
from dataclasses import dataclass, field
from pathlib import Path


def _status_kb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_mb() -> float:
    """This process's resident set size now, in MiB (0 where unavailable)."""
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else 0.0


def peak_rss_mb() -> float:
    """This process's peak resident set size since start (or since the last reset), in MiB."""
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    return kb / 1024


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter for this process; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _nvml_handle(index: int):
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(index) if pynvml.nvmlDeviceGetCount() > index else None
    except Exception:  # no library, no driver, no device
        return None


@dataclass
class UsageSampler:
    """``with UsageSampler("cpu") as s: ...`` then ``s.result()`` — the section's peak memory and GPU use.

    ``rss_peak_mb`` is the resident-set high-water mark of the section (kernel counter, exact), ``rss_start_mb`` what
    was resident when it began, so ``rss_growth_mb`` is what the section added at its peak. On CUDA:
    ``allocator_peak_mb`` (torch), ``nvml_used_peak_mb`` and GPU utilisation mean/max (NVML, when present).
    """

    device: str = "cpu"
    interval_s: float = 0.02
    gpu_index: int = 0
    util: list[float] = field(default_factory=list)
    nvml_mem_mb: list[float] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle = None
        self._polled_peak = 0.0
        self._exact = False
        self.rss_start_mb = 0.0
        self._peak_mb: float | None = None

    def __enter__(self) -> "UsageSampler":
        import torch

        if str(self.device).startswith("cuda") and torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._handle = _nvml_handle(self.gpu_index)
        self.rss_start_mb = rss_mb()
        self._exact = _reset_peak()
        self._polled_peak = self.rss_start_mb
        self._thread = threading.Thread(target=self._run, daemon=True, name="usage-sampler")
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._polled_peak = max(self._polled_peak, rss_mb())
            if self._handle is not None:
                import pynvml

                self.util.append(float(pynvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
                self.nvml_mem_mb.append(pynvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20)
            self._stop.wait(self.interval_s)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._polled_peak = max(self._polled_peak, rss_mb())
        self._peak_mb = peak_rss_mb() if self._exact else self._polled_peak

    @property
    def peak_mb(self) -> float:
        """The section's resident-set peak in MiB (available after the ``with`` block)."""
        return self._peak_mb if self._peak_mb is not None else max(self._polled_peak, rss_mb())

    def result(self) -> dict:
        import torch

        peak = self.peak_mb
        out = {
            "rss_peak_mb": round(peak, 1),
            "rss_start_mb": round(self.rss_start_mb, 1),
            "rss_growth_mb": round(max(0.0, peak - self.rss_start_mb), 1),
            "rss_peak_method": "kernel high-water mark (VmHWM)" if self._exact else f"polled every {self.interval_s} s",
            "gpu_util_mean_pct": (sum(self.util) / len(self.util)) if self.util else None,
            "gpu_util_max_pct": max(self.util) if self.util else None,
            "nvml_used_peak_mb": max(self.nvml_mem_mb) if self.nvml_mem_mb else None,
            "allocator_peak_mb": None,
        }
        if str(self.device).startswith("cuda") and torch.cuda.is_available():
            out["allocator_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return out
