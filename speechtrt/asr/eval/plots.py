"""Report figures: WER by dialect with speaker-bootstrap intervals, and accuracy against speed with the frontier."""

from __future__ import annotations

from pathlib import Path

from speechtrt.reporting.plots import figure, grouped_bars

WER_BY_DIALECT = "asr_wer_by_dialect.png"
WER_VS_RTFX = "asr_wer_vs_rtfx.png"


def _error_bar(entry: dict) -> tuple[float, float]:
    """Distances (WER %) from the estimate to the interval's ends; none where no interval is given."""
    ci = entry.get("ci95")
    if ci is None:
        return 0.0, 0.0
    return 100 * (entry["wer"] - ci[0]), 100 * (ci[1] - entry["wer"])


def _wer_by_dialect(report: dict, path: Path) -> None:
    per_d = report["per_dialect"]
    dialects = list(per_d)
    series = {}
    for name in report["models"]:
        bars = [_error_bar(per_d[d][name]) for d in dialects]
        series[name] = ([100 * per_d[d][name]["wer"] for d in dialects], [b[0] for b in bars], [b[1] for b in bars])
    grouped_bars(path, dialects, series, "WER % (95 % speaker bootstrap)", "WER by dialect")


def _wer_vs_rtfx(report: dict, path: Path) -> None:
    models = report["models"]
    with figure(path, size=(6, 4)) as ax:
        for name, m in models.items():
            lo, hi = _error_bar(m)
            ax.errorbar(m["rtfx"], 100 * m["wer"], yerr=[[lo], [hi]], fmt="o", capsize=3, label=name)
        front = report["selection"]["per_dialect"].get("overall", {}).get("frontier", [])
        pts = sorted((models[n]["rtfx"], 100 * models[n]["wer"]) for n in front)
        if len(pts) > 1:
            ax.plot(*zip(*pts), "k--", lw=0.8, label="frontier")
        ax.set_xscale("log")
        ax.set(xlabel="RTFx (audio seconds per compute second)", ylabel="WER %", title="Accuracy vs speed")
        ax.legend(fontsize=7)


def plot(report: dict, out_dir: Path) -> list[str]:
    """Write the report's figures under ``out_dir``; returns their file names (none without a variant)."""
    if not report["models"]:
        return []
    _wer_by_dialect(report, Path(out_dir) / WER_BY_DIALECT)
    _wer_vs_rtfx(report, Path(out_dir) / WER_VS_RTFX)
    return [WER_BY_DIALECT, WER_VS_RTFX]
