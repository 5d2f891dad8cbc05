"""The machine, the library versions and the commit a measurement was taken with — one shape for every report."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent

# distributions reported when installed (import name not needed: metadata only, nothing heavy is imported)
_DISTRIBUTIONS = ("torch", "numpy", "onnxruntime", "onnx", "nvidia-modelopt", "tensorrt", "tensorrt-rtx-cu13-bindings",
                  "jiwer", "scipy", "fastapi", "uvicorn", "nvidia-pytriton", "tritonclient", "speechmos")


def git_commit(cwd: str | Path | None = None) -> dict:
    """``{"sha": ..., "dirty": bool}`` of the checkout holding the package (``sha`` None outside a repository)."""
    def run(*args):
        try:
            return subprocess.run(["git", *args], cwd=cwd or _PACKAGE_DIR, capture_output=True, text=True,
                                  timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None

    head = run("rev-parse", "HEAD")
    sha = head.stdout.strip() if head is not None and head.returncode == 0 else None
    status = run("status", "--porcelain", "--untracked-files=no")
    dirty = bool(status.stdout.strip()) if sha and status is not None and status.returncode == 0 else None
    return {"sha": sha, "dirty": dirty}


def commit_label(commit: dict) -> str:
    """``abc1234`` or ``abc1234-dirty`` (``unknown`` outside a repository), for Markdown headers."""
    if not commit.get("sha"):
        return "unknown"
    return commit["sha"][:12] + ("-dirty" if commit.get("dirty") else "")


@lru_cache(maxsize=1)
def _espeak_version() -> str | None:
    try:
        out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, timeout=10).stdout
        return out.split(":")[1].split()[0] if ":" in out else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def versions() -> dict:
    """speechtrt, Python and every installed library a measurement can depend on (name → version)."""
    from speechtrt import __version__

    out = {"speechtrt": __version__, "python": platform.python_version()}
    for dist in _DISTRIBUTIONS:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    espeak = _espeak_version()
    if espeak:
        out["espeak-ng"] = espeak
    try:
        import torch

        if torch.cuda.is_available():
            out["cuda"] = torch.version.cuda
    except ImportError:
        pass
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


INT8_ISA = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
"""CPU features that decide how fast and how exact integer kernels are (VNNI: no 16-bit saturation in u8×s8)."""


def _cpu_isa() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                return [f for f in INT8_ISA if f in have]
    except OSError:
        pass
    return []


def device_info(device: str = "cpu", threads: int | None = None) -> dict:
    """The processor a run used: ``type`` (cpu | cuda), ``name``, CPU model and visible cores, the CPU's integer
    vector features (``cpu_isa``: INT8 kernels differ in speed and exactness with them), torch threads, and
    on CUDA the GPU's compute capability and memory; ``summary`` says it in words."""
    import torch

    device = str(device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    isa = _cpu_isa()
    info = {"type": "cuda" if device.startswith("cuda") else "cpu", "cpu": _cpu_name(), "cpu_cores": cores,
            "cpu_isa": isa, "torch_threads": threads or torch.get_num_threads()}
    if info["type"] == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(name=props.name, compute_capability=f"sm_{props.major}{props.minor}",
                    memory_gb=round(props.total_memory / 2**30, 1))
        info["summary"] = f"{props.name} ({info['compute_capability']}, {info['memory_gb']} GB)"
    else:
        info["name"] = info["cpu"]
        vnni = "VNNI" if any("vnni" in f or f.startswith("amx") for f in isa) else "no VNNI"
        info["summary"] = (f"{info['cpu']} ({cores} cores visible, {info['torch_threads']} torch threads; "
                           f"{'/'.join(isa) or 'ISA unknown'}, {vnni})")
    return info


def environment(device: str = "cpu", threads: int | None = None) -> dict:
    """``{"device": ..., "versions": ..., "commit": ...}``: what every report records about how it was measured."""
    return {"device": device_info(device, threads), "versions": versions(), "commit": git_commit()}
