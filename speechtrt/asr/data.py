"""ASR data: JSONL manifests and a real accented English set spoken by espeak-ng.

A manifest is one JSON object per line with ``audio_filepath`` (absolute, or relative to the manifest's folder),
``text``, ``duration`` (seconds), ``dialect`` and ``speaker``. Any corpus in that format drops in.

The synthesized set is built so that a test number means generalisation, not memory:

* **Sentences** come from an installed English text (Debian ``fortunes-min``: ``/usr/share/games/fortunes``) or
  any text file; each sentence goes to train or test by a hash of its normalised words, so the split is stable
  when the source grows and no test sentence is ever heard in training.
* **Speakers** are espeak-ng voices ``<accent>+<variant>`` at a rate (words per minute) and pitch. Training and test
  speakers use disjoint variant pools, so every test speaker is unseen; every accent has its own speakers.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

from speechtrt.asr.normalize import normalize_text
from speechtrt.errors import InputError
from speechtrt.models.corpus import FORTUNES_DIR, fortune_entries, fortune_files

ACCENTS = ("en-us", "en-us-nyc", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan")
"""espeak-ng English accents the reference checkpoints are trained and tested on."""

TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "f1", "f2", "f3", "klatt", "klatt3", "Alex", "Andy", "adam",
                  "john", "linda", "Annie")
TEST_VARIANTS = ("m6", "m7", "f4", "f5", "klatt2", "Michael", "belinda", "max")
"""Voice variants (timbre, formants) for training and test speakers; disjoint, so test speakers are unseen."""

MANIFEST_KEYS = ("audio_filepath", "text", "duration", "dialect", "speaker")
SPLITS = ("train", "dev", "test")
"""``dev`` is for tuning (e.g. the decoder's language-model weights): training-split sentences that a training
manifest did not use (``SynthConfig.exclude``), read by training-pool voices at their own rates and pitches."""


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an accent, a voice variant, a speaking rate (wpm) and a pitch (0–99)."""

    accent: str
    variant: str
    rate: int
    pitch: int

    @property
    def voice(self) -> str:
        return f"{self.accent}+{self.variant}"

    @property
    def id(self) -> str:
        return f"{self.accent}/{self.variant}-r{self.rate}-p{self.pitch}"


def espeak_voices() -> set[str]:
    """The English voices espeak-ng has here (its ``--voices=en`` language column), e.g. ``en-gb-scotland``."""
    import subprocess

    try:
        out = subprocess.run(["espeak-ng", "--voices=en"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    return {line.split()[1] for line in out.splitlines()[1:] if len(line.split()) > 1}


def check_voices(accents: tuple[str, ...], flag: str = "--accents") -> tuple[str, ...]:
    """``accents`` when every one is an espeak-ng voice here; else an InputError naming the unknown ones."""
    from speechtrt.models.audio import espeak_available

    if not accents:
        raise InputError(f"{flag} is empty: give one or more espeak-ng voices, e.g. {','.join(ACCENTS[:3])}")
    if not espeak_available():
        raise InputError("espeak-ng is not installed: `apt-get install espeak-ng` (Debian/Ubuntu)")
    known = espeak_voices()
    unknown = [a for a in accents if a not in known]
    if unknown:
        raise InputError(f"unknown accent(s) {', '.join(unknown)} ({flag}): espeak-ng has {', '.join(sorted(known))}")
    return accents


def speakers(accent: str, split: str, count: int, seed: int = 0) -> list[Speaker]:
    """``count`` speakers of ``accent`` for ``split``: distinct variants from that split's pool, spread rate/pitch.

    Deterministic in ``(accent, split, count, seed)``. Raises :class:`InputError` when the pool is too small.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    pool = TEST_VARIANTS if split == "test" else TRAIN_VARIANTS
    if count > len(pool):
        raise InputError(f"{count} {split} speakers per accent requested; the variant pool has {len(pool)}")
    rng = random.Random(f"{seed}:{accent}:{split}")
    variants = rng.sample(pool, count)
    out = []
    for i, variant in enumerate(variants):
        # rates 140..200 wpm and pitches 30..70 spread across the speakers, jittered per accent
        rate = int(140 + 60 * ((i + rng.random()) / count))
        pitch = int(30 + 40 * rng.random())
        out.append(Speaker(accent, variant, rate, pitch))
    return out


# ---------------------------------------------------------------- sentences

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_UNSPEAKABLE = re.compile(
    r"[0-9&@#$%*+=<>\[\]{}|\\~^_:;()]"  # digits, symbols, dialogue markers
    r"|\b[A-Z][a-z]?\.|\b[a-z]\.[a-z]\."  # abbreviations (Dr. St. e.g.)
    r"|\b[A-Z]{2,5}\b"  # acronyms, which espeak-ng may spell out
)
_SKIPPED_FILES = ("ascii-art", "translate-me")


def load_sentences(source: str | Path | None = None, min_words: int = 3, max_words: int = 14) -> list[str]:
    """Sentences from a text source: a fortune folder (entries split on ``%`` lines), or any text file.

    Kept: sentences of ``min_words..max_words`` normalised words with nothing espeak-ng would read differently from
    the written words (no digits, symbols or abbreviations). Duplicates (after normalising) are dropped; the order
    is the source's. Raises :class:`InputError` when the source is missing or yields nothing.
    """
    path = Path(source) if source else FORTUNES_DIR
    if path.is_dir():
        files = fortune_files(path, skip=_SKIPPED_FILES)
    elif path.is_file():
        files = [path]
    else:
        raise InputError(
            f"text source {path} does not exist: install Debian's fortunes-min (`apt-get install fortunes-min`) "
            "or pass --text-source with a text file"
        )
    seen: set[str] = set()
    out: list[str] = []
    for flat in fortune_entries(files):
        for sentence in _SENTENCE_END.split(flat):
            sentence = re.sub(r"^[QA]:\s*", "", sentence.strip())
            sentence = re.sub(r"^[^A-Za-z]+", "", sentence).split(' --')[0].strip()  # leading marks;
            # ' -- Name' is an attribution
            if "--" in sentence and sentence.index("--") < 3:  # attribution lines
                continue
            if _UNSPEAKABLE.search(sentence):
                continue
            norm = normalize_text(sentence)
            n = len(norm.split())
            if not (min_words <= n <= max_words) or norm in seen:
                continue
            seen.add(norm)
            out.append(sentence)
    if not out:
        raise InputError(f"text source {path} gave no usable sentences of {min_words}-{max_words} words")
    return out


def sentence_split(sentence: str, test_fraction: float = 0.2) -> str:
    """``'train'`` or ``'test'`` for a sentence, by a hash of its normalised words (stable, source-order free)."""
    digest = hashlib.sha256(normalize_text(sentence).encode()).digest()
    return "test" if int.from_bytes(digest[:4], "big") / 2**32 < test_fraction else "train"


# ---------------------------------------------------------------- manifests


@dataclass(frozen=True)
class Utterance:
    """One manifest row. ``audio_filepath`` is resolved against the manifest's folder when relative."""

    audio_filepath: str
    text: str
    duration: float
    dialect: str
    speaker: str

    def path(self, root: Path) -> Path:
        p = Path(self.audio_filepath)
        return p if p.is_absolute() else root / p


@dataclass(frozen=True)
class ManifestProblem:
    """A manifest line that could not be read as an utterance: its line number and why."""

    line: int
    reason: str


def read_manifest(path: str | Path) -> tuple[list[Utterance], list[ManifestProblem]]:
    """Rows of a JSONL manifest, and the lines that are not valid rows (bad JSON, missing keys) with reasons.

    A bad line does not stop the read: evaluation counts and lists it. Raises :class:`InputError` only when the
    manifest itself is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest {path} does not exist: create one with `speechtrt data synth` or pass a JSONL file")
    rows: list[Utterance] = []
    problems: list[ManifestProblem] = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(ManifestProblem(i, f"not JSON ({exc.msg})"))
            continue
        missing = [k for k in ("audio_filepath", "text") if k not in obj]
        if not isinstance(obj, dict) or missing:
            problems.append(ManifestProblem(i, f"missing keys {missing}"))
            continue
        rows.append(Utterance(
            audio_filepath=str(obj["audio_filepath"]), text=str(obj.get("text") or ""),
            duration=float(obj.get("duration") or 0.0), dialect=str(obj.get("dialect") or "unknown"),
            speaker=str(obj.get("speaker") or obj["audio_filepath"]),
        ))
    return rows, problems


def write_manifest(path: str | Path, rows: Iterable[Utterance]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(asdict(row)) + "\n")
    return path


# ---------------------------------------------------------------- synthesis


@dataclass(frozen=True)
class SynthConfig:
    """What ``speechtrt data synth`` makes: ``split`` speakers per accent, each reading ``sentences_per_speaker``.

    Training speakers each read a different random sample of the training sentences, with the rate and pitch
    jittered per utterance (``jitter``) so the model hears more than a fixed point per speaker; test speakers read
    the same test sentences (a paired design: every dialect sees the same words).
    """

    split: str = "test"
    accents: tuple[str, ...] = ACCENTS
    speakers_per_accent: int = 4
    sentences_per_speaker: int = 20
    test_fraction: float = 0.2
    text_source: str | None = None
    jitter: bool = False
    seed: int = 0
    exclude: tuple[str, ...] = ()  # manifests whose sentences are not used (a dev set unseen by training)


def plan_utterances(cfg: SynthConfig) -> Iterator[tuple[Speaker, str, int, int]]:
    """``(speaker, sentence, rate, pitch)`` for every utterance ``cfg`` asks for, deterministic in ``cfg``."""
    if cfg.split not in SPLITS:
        raise InputError(f"unknown split {cfg.split!r}: choose one of {', '.join(SPLITS)}")
    text_split = "test" if cfg.split == "test" else "train"
    used = {normalize_text(row.text) for m in cfg.exclude for row in read_manifest(m)[0]}
    pool = [s for s in load_sentences(cfg.text_source)
            if sentence_split(s, cfg.test_fraction) == text_split and normalize_text(s) not in used]
    if not pool:
        raise InputError(f"the text source has no {cfg.split} sentences left (after {len(used)} excluded); "
                         "lower or raise --test-fraction, or exclude fewer manifests")
    rng = random.Random(f"{cfg.seed}:{cfg.split}:sentences")
    shared = rng.sample(pool, min(cfg.sentences_per_speaker, len(pool)))
    for accent in cfg.accents:
        for speaker in speakers(accent, cfg.split, cfg.speakers_per_accent, cfg.seed):
            own = rng.sample(pool, min(cfg.sentences_per_speaker, len(pool))) if cfg.split == "train" else shared
            for sentence in own:
                rate, pitch = speaker.rate, speaker.pitch
                if cfg.jitter:
                    rate = max(110, min(230, rate + rng.randint(-15, 15)))
                    pitch = max(5, min(95, pitch + rng.randint(-10, 10)))
                yield speaker, sentence, rate, pitch


def synthesize(out_dir: str | Path, cfg: SynthConfig, progress=None) -> Path:
    """Speak every planned utterance with espeak-ng into ``out_dir/wav/`` (16 kHz mono PCM) and write
    ``out_dir/<split>.jsonl`` with paths relative to ``out_dir``. Returns the manifest path.

    ``progress``, when given, is called as ``progress(done, total)``.
    """
    from speechtrt.models.audio import FEATURES, espeak_speech, write_wav

    out_dir = Path(out_dir)
    plan = list(plan_utterances(cfg))
    rows = []
    for i, (speaker, sentence, rate, pitch) in enumerate(plan):
        samples = espeak_speech(sentence, speaker.voice, rate, pitch, FEATURES.sample_rate)
        rel = Path("wav") / cfg.split / f"{speaker.accent}_{speaker.variant}_{i:05d}.wav"
        write_wav(out_dir / rel, samples, FEATURES.sample_rate)
        rows.append(Utterance(str(rel), sentence, round(len(samples) / FEATURES.sample_rate, 3), speaker.accent,
                              speaker.id))
        if progress:
            progress(i + 1, len(plan))
    return write_manifest(out_dir / f"{cfg.split}.jsonl", rows)
