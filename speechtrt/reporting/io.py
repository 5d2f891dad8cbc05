"""Writing reports: JSON that stays standard (no NaN/Infinity literals), Markdown tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

from speechtrt.files import check_writable  # noqa: F401  (re-exported for report writers)


def _finite(obj):
    """NaN becomes ``null`` and ±inf the strings ``"inf"``/``"-inf"`` (``float()`` reads them back; an SNR of
    identical outputs is infinite, not unknown); numpy scalars and arrays become plain numbers and lists."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        return obj if math.isfinite(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy scalar or array
        return _finite(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, data: dict) -> Path:
    """``data`` as indented standard JSON (no NaN literals), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(data), indent=2, allow_nan=False, default=str) + "\n")
    return path


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")
    return path


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured Markdown table; floats keep 4 significant digits (large ones print whole), None is –."""
    def cell(v):
        if v is None:
            return "–"
        if isinstance(v, float):
            if not math.isfinite(v):
                return "–"
            return f"{v:.0f}" if abs(v) >= 1e4 else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
