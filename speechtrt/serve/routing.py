"""Which model answers a transcription or a stream: the one asked for, the one the evaluation recommends for the
declared dialect (``--select reports/asr_eval.json``), or the default — and which faster model takes auto-routed
work under sustained overload.

The evaluation's recommendations are variants (``asr-small/ort/int8``: model / backend / precision). The server
loads each model once on its configured backend and precision, so a recommendation routes to its **model**; the
variant is reported alongside. A stream can only go to a streaming model: a dialect whose recommendation is an
offline model streams on the default streaming model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from speechtrt.errors import InputError

# OpenAI model names a client may send; they mean "let the server choose"
TTS_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
ASR_ALIASES = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "auto")
_SIZE_ORDER = {"asr-small": 0, "asr-medium": 1, "asr-large": 2, "asr-stream": 1}


@dataclass(frozen=True)
class Selection:
    """Per-dialect recommended variants from an evaluation report, and each model's best measured RTFx."""

    source: str
    per_dialect: dict[str, str]  # dialect -> variant (model/backend/precision)
    overall: str | None
    rtfx: dict[str, float] = field(default_factory=dict)  # model -> best RTFx among its variants

    @classmethod
    def from_report(cls, path: str | Path) -> "Selection":
        path = Path(path)
        try:
            report = json.loads(path.read_text())
            per = report["selection"]["per_dialect"]
        except FileNotFoundError:
            raise InputError(f"--select {path}: no such file; run `speechtrt eval` to write reports/asr_eval.json") \
                from None
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise InputError(f"--select {path}: not an evaluation report with selection.per_dialect ({exc!r}); "
                             "pass the asr_eval.json that `speechtrt eval` writes") from None
        picks = {d: v["recommended"] for d, v in per.items() if isinstance(v, dict) and v.get("recommended")}
        rtfx: dict[str, float] = {}
        for variant, row in (report.get("models") or {}).items():
            if isinstance(row, dict) and isinstance(row.get("rtfx"), (int, float)):
                model = row.get("model") or variant.split("/")[0]
                rtfx[model] = max(rtfx.get(model, 0.0), float(row["rtfx"]))
        overall = picks.pop("overall", None)
        return cls(str(path), picks, overall, rtfx)


def model_of(variant: str) -> str:
    return variant.split("/")[0]


@dataclass(frozen=True)
class Route:
    model: str
    reason: str  # requested | selection | default | degraded
    dialect: str | None
    variant: str | None = None  # the evaluation's recommendation behind a selection route
    auto: bool = True  # the server chose (so it may degrade); False when the client named the model


class Router:
    """Routes by the rules in the module docstring over the models this server loaded."""

    def __init__(self, offline: tuple[str, ...], streaming: tuple[str, ...], selection: Selection | None = None,
                 default: str | None = None):
        self.offline = tuple(offline)
        self.streaming = tuple(streaming)
        self.selection = selection
        if default is not None and default not in self.offline:
            raise InputError(f"default transcription model {default!r} is not served; serve one of "
                             f"{', '.join(self.offline) or 'none'}")
        pick = model_of(selection.overall) if selection and selection.overall else None
        self.default = default or (pick if pick in self.offline else (self.offline[0] if self.offline else None))

    @property
    def dialects(self) -> tuple[str, ...]:
        return tuple(self.selection.per_dialect) if self.selection else ()

    def dialect_label(self, dialect: str | None) -> str:
        """A bounded label for metrics: a dialect the selection knows, ``none``, or ``other``."""
        if not dialect:
            return "none"
        return dialect if dialect in self.dialects else "other"

    def _recommended(self, dialect: str | None, served: tuple[str, ...]) -> tuple[str, str] | None:
        if not self.selection or not dialect:
            return None
        variant = self.selection.per_dialect.get(dialect)
        if variant and model_of(variant) in served:
            return model_of(variant), variant
        return None

    def transcription(self, requested: str | None, dialect: str | None) -> Route:
        if requested and requested not in ASR_ALIASES:
            if requested not in self.offline:
                raise LookupError(requested)
            return Route(requested, "requested", dialect, auto=False)
        rec = self._recommended(dialect, self.offline)
        if rec:
            return Route(rec[0], "selection", dialect, rec[1])
        if self.default is None:
            raise LookupError(requested or "default")
        return Route(self.default, "default", dialect)

    def stream(self, requested: str | None, dialect: str | None) -> Route:
        if requested and requested not in ASR_ALIASES:
            if requested not in self.streaming:
                raise LookupError(requested)
            return Route(requested, "requested", dialect, auto=False)
        rec = self._recommended(dialect, self.streaming)
        if rec:
            return Route(rec[0], "selection", dialect, rec[1])
        if not self.streaming:
            raise LookupError(requested or "stream")
        return Route(self.streaming[0], "default", dialect)

    def faster(self, model: str) -> str | None:
        """The fastest served offline model that is faster than ``model`` (by the report's measured RTFx when it
        has both, else by size), or None."""
        rtfx = self.selection.rtfx if self.selection else {}

        def quicker(m: str) -> bool:
            if m in rtfx and model in rtfx:
                return rtfx[m] > rtfx[model]
            return _SIZE_ORDER.get(m, 9) < _SIZE_ORDER.get(model, 9)

        candidates = [m for m in self.offline if m != model and quicker(m)]
        return max(candidates, key=lambda m: (rtfx.get(m, 0.0), -_SIZE_ORDER.get(m, 9))) if candidates else None
