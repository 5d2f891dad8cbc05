"""Report plumbing shared by the benchmark commands: environment facts, JSON, Markdown tables, PNG plots.

Every report records the device, library versions and git commit it was measured with, so numbers from different
machines or code are never compared by accident.
"""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path


def git_commit(cwd: str | Path | None = None) -> dict:
    """``{"sha": ..., "dirty": bool}``; ``sha`` is None outside a repository or before the first commit."""
    def run(*args):
        try:
            return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None

    head = run("rev-parse", "HEAD")
    sha = head.stdout.strip() if head is not None and head.returncode == 0 else None
    status = run("status", "--porcelain", "--untracked-files=no")
    dirty = bool(status.stdout.strip()) if status is not None and status.returncode == 0 else None
    return {"sha": sha, "dirty": dirty}


def versions() -> dict:
    import numpy
    import torch

    from speechtrt import __version__

    out = {"speechtrt": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "numpy": numpy.__version__}
    for mod in ("onnxruntime", "tensorrt", "tensorrt_rtx_bindings"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # not installed, or no version attribute
            continue
    if torch.cuda.is_available():
        out["cuda"] = torch.version.cuda
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_info(device: str) -> dict:
    import os

    import torch

    info = {"type": "cuda" if device.startswith("cuda") else "cpu", "cpu": _cpu_name(),
            "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if info["type"] == "cuda":
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(name=props.name, compute_capability=f"sm_{props.major}{props.minor}",
                    memory_gb=round(props.total_memory / 2**30, 1))
    else:
        info["name"] = info["cpu"]
    return info


def write_json(path: str | Path, data: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(x):
    if hasattr(x, "item"):
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured Markdown table; floats keep 4 significant digits (large ones print whole)."""
    def cell(v):
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.0f}" if abs(v) >= 1e4 else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def line_plot(path: str | Path, series: dict[str, tuple[list, list]], xlabel: str, ylabel: str, title: str,
              logx: bool = True) -> Path:
    """One PNG with a line per series (name → (xs, ys))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for name, (xs, ys) in series.items():
        if xs:
            ax.plot(xs, ys, marker="o", label=name)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
