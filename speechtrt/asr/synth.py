"""Speech synthesizers behind one interface, so an ASR data set can mix engines and another engine drops in.

A :class:`Synthesizer` names its installed English voices (each with the accent it speaks), its voice variants for
training and for test speakers (disjoint pools, so every test speaker is unseen), and speaks a batch of
:class:`SpeechRequest` into mono float32 audio at 16 kHz. Three engines are registered:

* **espeak-ng** (formant synthesis): every English voice it has except MBROLA ones without the ``mbrola`` binary;
  a voice is an accent (``en-gb-scotland``); variants are espeak-ng's own (``+m3``, ``+klatt2``, …); rate in words
  per minute and pitch 0–99 are its ``-s`` and ``-p``.
* **festival** (diphone and HTS voices of Debian's ``festvox-*`` packages: ``kal_diphone``, ``ked_diphone``,
  ``cmu_us_slt_arctic_hts``): one ``festival`` process speaks a whole batch (its start-up costs more than a
  sentence); rate is ``Duration_Stretch`` (diphone) or hts_engine's ``-r``; output is resampled to 16 kHz.
* **flite** (CMU Flite: ``kal``, ``kal16``, ``awb`` (Scottish), ``rms``, ``slt``): rate is ``duration_stretch``.

festival and flite have no voice variants of their own. Their variants are shifts of pitch and formants together
(sox ``pitch``, in cents: ``s+090``), which is how voices of different vocal-tract length differ; the pitch
setting (50 = the voice's own) adds ``(pitch − 50) × 5`` cents. Training and test shifts are disjoint, but a test
speaker of a trained festival voice is the same recorded person at another setting: only a held-out voice (or
engine) is a person the model never heard.

A missing engine, voice or helper program is an :class:`~speechtrt.errors.InputError` that says what to install.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from speechtrt.errors import InputError
from speechtrt.models.audio import FEATURES, espeak_speech, read_audio, resample

ESPEAK = "espeak-ng"

DEFAULT_RATE = 175
"""Words per minute that each engine's own speaking rate stands for (espeak-ng's default)."""

TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "f1", "f2", "f3", "klatt", "klatt3", "Alex", "Andy", "adam",
                  "john", "linda", "Annie")
TEST_VARIANTS = ("m6", "m7", "f4", "f5", "klatt2", "Michael", "belinda", "max")
"""espeak-ng voice variants (timbre, formants) for training and test speakers; disjoint, so test speakers are
unseen."""

SHIFT_TRAIN_VARIANTS = tuple(f"s{c:+04d}" for c in (-330, -270, -210, -150, -90, -30, 30, 90, 150, 210, 270, 330))
SHIFT_TEST_VARIANTS = tuple(f"s{c:+04d}" for c in (-300, -180, -60, 60, 180, 300))
"""Pitch-and-formant shifts (cents) that make speakers of engines without variants; disjoint pools."""


@dataclass(frozen=True)
class SpeechRequest:
    """One sentence for one speaker setting: ``voice`` of the engine, its ``variant``, rate (wpm) and pitch (0–99)."""

    text: str
    voice: str
    variant: str
    rate: int = DEFAULT_RATE
    pitch: int = 50


class Synthesizer(ABC):
    """A speech engine. Subclasses set the class attributes and implement :meth:`english_voices` and
    :meth:`speak_many`; :func:`register` makes one available to ``speechtrt data synth --synthesizers``."""

    name: ClassVar[str]
    install: ClassVar[str]  # what a user runs to get the engine
    programs: ClassVar[tuple[str, ...]]  # executables that must be on PATH
    train_variants: ClassVar[tuple[str, ...]]
    test_variants: ClassVar[tuple[str, ...]]

    def missing_programs(self) -> list[str]:
        return [p for p in self.programs if shutil.which(p) is None]

    def available(self) -> bool:
        return not self.missing_programs()

    def require(self) -> None:
        """Raise :class:`InputError` naming the programs and the install command when the engine is missing."""
        missing = self.missing_programs()
        if missing:
            raise InputError(f"synthesizer {self.name} is not installed ({', '.join(missing)} not found): "
                             f"`{self.install}`")

    @abstractmethod
    def english_voices(self) -> dict[str, str]:
        """Installed English voices of this engine, each with the accent it speaks (``{'awb': 'en-gb-scotland'}``)."""

    def check_voices(self, voices: Sequence[str], flag: str) -> tuple[str, ...]:
        """``voices`` when the engine is installed and has each one; else an InputError naming ``flag``."""
        self.require()
        known = self.english_voices()
        unknown = [v for v in voices if v not in known]
        if unknown:
            raise InputError(f"{flag}: {self.name} has no English voice {', '.join(unknown)}; installed: "
                             f"{', '.join(sorted(known)) or 'none'}")
        return tuple(voices)

    def accent(self, voice: str) -> str:
        return self.english_voices()[voice]

    def speaker_label(self, voice: str) -> str:
        """The part of a speaker id before the variant: the accent for espeak-ng, ``<engine>:<voice>`` otherwise."""
        return f"{self.name}:{voice}"

    def variants(self, split: str) -> tuple[str, ...]:
        return self.test_variants if split == "test" else self.train_variants

    @abstractmethod
    def speak_many(self, requests: Sequence[SpeechRequest], sample_rate: int = FEATURES.sample_rate
                   ) -> list[np.ndarray]:
        """Mono float32 samples at ``sample_rate`` for every request, in order."""

    def speak(self, request: SpeechRequest, sample_rate: int = FEATURES.sample_rate) -> np.ndarray:
        return self.speak_many([request], sample_rate)[0]


# ---------------------------------------------------------------- espeak-ng


class EspeakNG(Synthesizer):
    name = ESPEAK
    install = "apt-get install espeak-ng"
    programs = ("espeak-ng",)
    train_variants = TRAIN_VARIANTS
    test_variants = TEST_VARIANTS

    def english_voices(self) -> dict[str, str]:
        return dict(_espeak_english_voices())

    def speaker_label(self, voice: str) -> str:
        return voice  # keeps the ids of every set made before other engines existed

    def speak_many(self, requests, sample_rate=FEATURES.sample_rate):
        self.require()
        return [espeak_speech(r.text, f"{r.voice}+{r.variant}", r.rate, r.pitch, sample_rate) for r in requests]


@functools.lru_cache(maxsize=1)
def _espeak_english_voices() -> tuple[tuple[str, str], ...]:
    """``espeak-ng --voices=en``: the language column of every voice, MBROLA ones only with ``mbrola`` present."""
    try:
        out = subprocess.run(["espeak-ng", "--voices=en"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    mbrola = shutil.which("mbrola") is not None
    voices = set()
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 5 or not cols[1].startswith("en") or (cols[4].startswith("mb/") and not mbrola):
            continue
        voices.add(cols[1])
    return tuple((v, v) for v in sorted(voices))


# ---------------------------------------------------------------- shifted voices (festival, flite)


def shift_cents(variant: str, pitch: int) -> int:
    """The pitch-and-formant shift of a ``s±NNN`` variant at a pitch setting (50 = none added)."""
    m = re.fullmatch(r"s([+-]\d+)", variant)
    if not m:
        raise InputError(f"variant {variant!r} is not a shift (s+090, s-150, ...)")
    return int(m.group(1)) + 5 * (pitch - 50)


def shift_pitch(samples: np.ndarray, rate: int, cents: int) -> np.ndarray:
    """Shift pitch and formants by ``cents`` keeping the duration (sox ``pitch``); float32 [N] -> float32 [~N]."""
    if cents == 0:
        return samples
    from speechtrt.models.audio import encode_audio

    exe = shutil.which("sox")
    if exe is None:
        raise InputError("sox is not installed (festival/flite speakers are pitch-shifted with it): "
                         "`apt-get install sox`")
    proc = subprocess.run([exe, "-q", "-t", "wav", "-", "-t", "wav", "-e", "float", "-b", "32", "-", "pitch",
                           str(cents)], input=encode_audio(samples * 0.9, rate), capture_output=True, timeout=60)
    if proc.returncode != 0 or not proc.stdout:
        raise InputError(f"sox pitch {cents} failed: {proc.stderr.decode(errors='replace').strip()[:200]}")
    shifted, _ = read_audio(proc.stdout)
    return np.clip(shifted / 0.9, -1.0, 1.0).astype(np.float32)


def _finish(samples: np.ndarray, rate: int, request: SpeechRequest, sample_rate: int) -> np.ndarray:
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    shifted = shift_pitch(samples, rate, shift_cents(request.variant, request.pitch))
    return resample(shifted, rate, sample_rate)


def _stretch(rate: int) -> float:
    return round(DEFAULT_RATE / max(60, min(400, rate)), 4)


class Festival(Synthesizer):
    """The Festival Speech Synthesis System with its Debian English voices."""

    name = "festival"
    install = "apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox"
    programs = ("festival", "sox")
    train_variants = SHIFT_TRAIN_VARIANTS
    test_variants = SHIFT_TEST_VARIANTS
    ACCENTS: ClassVar[dict[str, str]] = {
        "kal_diphone": "en-us", "ked_diphone": "en-us", "cmu_us_slt_arctic_hts": "en-us",
        "rab_diphone": "en-gb", "cmu_us_awb_arctic_hts": "en-gb-scotland", "cmu_us_rms_arctic_hts": "en-us",
    }
    """Accents of the English voices Debian packages or festvox.org distribute; any other voice installed under
    an ``english`` or ``us`` folder counts as English (accent ``en``)."""
    BATCH = 64  # sentences per festival process

    def english_voices(self) -> dict[str, str]:
        return dict(_festival_english_voices(tuple(sorted(self.ACCENTS.items()))))

    def speak_many(self, requests, sample_rate=FEATURES.sample_rate):
        self.require()
        self.check_voices(sorted({r.voice for r in requests}), "voice")
        out: list[np.ndarray] = []
        for start in range(0, len(requests), self.BATCH):
            out += self._batch(requests[start:start + self.BATCH], sample_rate)
        return out

    def _batch(self, requests: Sequence[SpeechRequest], sample_rate: int) -> list[np.ndarray]:
        with tempfile.TemporaryDirectory(prefix="speechtrt-festival-") as tmp:
            lines = ["(defvar speechtrt_hts_base nil)",
                     "(define (speechtrt_rate stretch)",
                     "  (Parameter.set 'Duration_Stretch stretch)",
                     "  (if (equal? (Parameter.get 'Synth_Method) 'HTS)",
                     "      (set! hts_engine_params",
                     "            (append speechtrt_hts_base (list (list \"-r\" (/ 1.0 stretch)))))))"]
            voice = None
            for i, r in enumerate(requests):
                if r.voice != voice:
                    voice = r.voice
                    lines += [f"(voice_{voice})",
                              "(if (equal? (Parameter.get 'Synth_Method) 'HTS) (set! speechtrt_hts_base "
                              "hts_engine_params))"]
                text = r.text.replace("\\", " ").replace('"', '\\"')
                lines += [f"(speechtrt_rate {_stretch(r.rate)})",
                          f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{tmp}/{i}.wav" \'riff)']
            script = Path(tmp) / "speak.scm"
            script.write_text("\n".join(lines) + "\n", encoding="utf-8")
            try:
                proc = subprocess.run(["festival", "-b", str(script)], capture_output=True,
                                      timeout=60 + 10 * len(requests))
            except subprocess.TimeoutExpired as exc:
                raise InputError(f"festival did not finish {len(requests)} sentences in {exc.timeout} s") from exc
            out = []
            for i, r in enumerate(requests):
                wav = Path(tmp) / f"{i}.wav"
                if not wav.is_file():
                    detail = (proc.stderr or proc.stdout).decode(errors="replace").strip()[-300:]
                    raise InputError(f"festival failed for voice {r.voice!r} on {r.text!r}: {detail or 'no output'}")
                samples, rate = read_audio(wav)
                out.append(_finish(samples, rate, r, sample_rate))
            return out


def _listing(cmd: list[str], timeout: float) -> str | None:
    """What an engine prints when asked for its voices; None when it is not installed or does not answer."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=2)
def _festival_english_voices(accents: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """``(voice.list)`` of festival, kept when known English or installed under an English voice folder."""
    out = _listing(["festival", "-b", "(print (voice.list))"], 60)
    if out is None:
        return ()
    known = dict(accents)
    english_dirs = {p.name for d in ("english", "us", "british")
                    for p in Path("/usr/share/festival/voices", d).glob("*") if p.is_dir()}
    names = re.findall(r"[A-Za-z0-9_]+", out)
    return tuple((v, known.get(v, "en")) for v in names if v in known or v in english_dirs)


class Flite(Synthesizer):
    """CMU Flite, Festival's small run-time engine, with the voices built into Debian's ``flite``."""

    name = "flite"
    install = "apt-get install flite sox"
    programs = ("flite", "sox")
    train_variants = SHIFT_TRAIN_VARIANTS
    test_variants = SHIFT_TEST_VARIANTS
    ACCENTS: ClassVar[dict[str, str]] = {"kal": "en-us", "kal16": "en-us", "awb": "en-gb-scotland", "rms": "en-us",
                                         "slt": "en-us"}
    """flite's full English voices (``awb_time`` only says the time, so it is not one)."""

    def english_voices(self) -> dict[str, str]:
        return dict(_flite_english_voices(tuple(sorted(self.ACCENTS.items()))))

    def speak_many(self, requests, sample_rate=FEATURES.sample_rate):
        self.require()
        self.check_voices(sorted({r.voice for r in requests}), "voice")  # flite falls back to kal silently
        out = []
        with tempfile.TemporaryDirectory(prefix="speechtrt-flite-") as tmp:
            wav = Path(tmp) / "out.wav"
            for r in requests:
                proc = subprocess.run(["flite", "-voice", r.voice, "--setf", f"duration_stretch={_stretch(r.rate)}",
                                       "-t", r.text, "-o", str(wav)], capture_output=True, timeout=120)
                if proc.returncode != 0 or not wav.is_file():
                    raise InputError(f"flite failed for voice {r.voice!r}: "
                                     f"{proc.stderr.decode(errors='replace').strip()[:300]}")
                samples, rate = read_audio(wav)
                out.append(_finish(samples, rate, r, sample_rate))
                wav.unlink()
        return out


@functools.lru_cache(maxsize=2)
def _flite_english_voices(accents: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    out = _listing(["flite", "-lv"], 30)
    if out is None:
        return ()
    listed = out.split(":", 1)[-1].split()
    known = dict(accents)
    return tuple((v, known[v]) for v in listed if v in known)


# ---------------------------------------------------------------- registry

_REGISTRY: dict[str, Synthesizer] = {}
ALIASES = {"espeak": "espeak-ng"}


def register(synth: Synthesizer) -> Synthesizer:
    """Make ``synth`` available by its name (``--synthesizers``, manifests' ``synthesizer`` field)."""
    _REGISTRY[synth.name] = synth
    return synth


for _engine in (EspeakNG(), Festival(), Flite()):
    register(_engine)

SYNTHESIZERS = tuple(_REGISTRY)
"""Names of the engines registered with this package."""


def synthesizer(name: str, flag: str = "--synthesizers") -> Synthesizer:
    """The registered engine called ``name`` (or an alias such as ``espeak``); an InputError naming ``flag``."""
    engine = _REGISTRY.get(ALIASES.get(name, name))
    if engine is None:
        raise InputError(f"{flag}: unknown synthesizer {name!r}; choose from {', '.join(_REGISTRY)}")
    return engine


def parse_synthesizers(value: str, flag: str = "--synthesizers") -> tuple[str, ...]:
    """Canonical engine names of a comma-separated list, each installed; InputErrors name ``flag``."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise InputError(f"{flag} is empty: give one or more of {', '.join(_REGISTRY)}")
    out = []
    for name in names:
        engine = synthesizer(name, flag)
        missing = engine.missing_programs()
        if missing:
            raise InputError(f"{flag} {name}: not installed ({', '.join(missing)} not found): `{engine.install}`")
        if engine.name not in out:
            out.append(engine.name)
    return tuple(out)

