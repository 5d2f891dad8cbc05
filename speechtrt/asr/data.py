"""ASR data: JSONL manifests and a real accented English set spoken by several synthesizers.

A manifest is one JSON object per line with ``audio_filepath`` (absolute, or relative to the manifest's folder),
``text``, ``duration`` (seconds), ``dialect`` and ``speaker``; synthesized sets add ``synthesizer`` (``espeak-ng``,
``festival``, ``flite``) and ``voice`` (the engine's voice: ``en-gb-scotland``, ``kal_diphone``). Any corpus in
that format drops in; manifests without the last two read as synthesizer and voice unknown.

The synthesized set is built so that a test number means generalisation, not memory:

* **Sentences** come from an installed English text (Debian ``fortunes-min``: ``/usr/share/games/fortunes``) or
  any text file; each sentence goes to train or test by a hash of its normalised words, so the split is stable
  when the source grows and no test sentence is ever heard in training.
* **Speakers** are a synthesizer's voice with a variant at a rate (words per minute) and pitch: espeak-ng voices
  ``<accent>+<variant>``, festival and flite voices shifted in pitch and formants (:mod:`speechtrt.asr.synth`).
  Training and test speakers use disjoint variant pools, so every test speaker is unseen; every voice has its own
  speakers. espeak-ng is planned first, so the espeak-ng part of a mixed set equals the espeak-ng-only set of the
  same seed.
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
from speechtrt.asr.synth import ESPEAK, TEST_VARIANTS, TRAIN_VARIANTS, SpeechRequest, synthesizer  # noqa: F401
from speechtrt.errors import InputError
from speechtrt.models.corpus import FORTUNES_DIR, fortune_entries, fortune_files
from speechtrt.vocab import ACCENTS


MANIFEST_KEYS = ("audio_filepath", "text", "duration", "dialect", "speaker")
SYNTH_KEYS = ("synthesizer", "voice")
"""Written by ``speechtrt data synth``; optional when reading (empty: unknown)."""
SPLITS = ("train", "dev", "test")
"""``dev`` is for tuning (e.g. the decoder's language-model weights): training-split sentences that a training
manifest did not use (``SynthConfig.exclude``), read by training-pool voices at their own rates and pitches."""


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: an accent, a voice variant, a speaking rate (wpm) and a pitch (0–99), spoken by
    ``synthesizer`` with its voice ``engine_voice`` (empty for espeak-ng, whose voice is the accent)."""

    accent: str
    variant: str
    rate: int
    pitch: int
    synthesizer: str = ESPEAK
    engine_voice: str = ""

    @property
    def base_voice(self) -> str:
        """The engine's voice: the accent for espeak-ng (``en-gb-scotland``), else e.g. ``kal_diphone``."""
        return self.engine_voice or self.accent

    @property
    def voice(self) -> str:
        return f"{self.base_voice}+{self.variant}"

    @property
    def id(self) -> str:
        label = synthesizer(self.synthesizer).speaker_label(self.base_voice)
        return f"{label}/{self.variant}-r{self.rate}-p{self.pitch}"


def espeak_voices() -> set[str]:
    """The English voices espeak-ng has here (its ``--voices=en`` language column), e.g. ``en-gb-scotland``."""
    return set(synthesizer(ESPEAK).english_voices())


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


def speakers(accent: str, split: str, count: int, seed: int = 0, engine: str = ESPEAK) -> list[Speaker]:
    """``count`` speakers of voice ``accent`` of ``engine`` for ``split``: distinct variants from that split's pool,
    spread rate/pitch. For espeak-ng the voice is the accent; for another engine, the speakers' accent is the
    voice's (``awb`` → ``en-gb-scotland``).

    Deterministic in ``(accent, split, count, seed, engine)``. Raises :class:`InputError` when the pool is too small.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    synth = synthesizer(engine)
    pool = synth.variants(split)
    if count > len(pool):
        raise InputError(f"{count} {split} speakers per voice requested; {synth.name}'s variant pool has {len(pool)}")
    if synth.name == ESPEAK:
        rng = random.Random(f"{seed}:{accent}:{split}")
        dialect, engine_voice = accent, ""
    else:
        rng = random.Random(f"{seed}:{synth.name}:{accent}:{split}")
        dialect, engine_voice = synth.accent(accent), accent
    variants = rng.sample(pool, count)
    out = []
    for i, variant in enumerate(variants):
        # rates 140..200 wpm and pitches 30..70 spread across the speakers, jittered per accent
        rate = int(140 + 60 * ((i + rng.random()) / count))
        pitch = int(30 + 40 * rng.random())
        out.append(Speaker(dialect, variant, rate, pitch, synth.name, engine_voice))
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
    synthesizer: str = ""  # empty: unknown (a manifest that does not say)
    voice: str = ""

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
            synthesizer=str(obj.get("synthesizer") or ""), voice=str(obj.get("voice") or ""),
        ))
    return rows, problems


UNKNOWN_SYNTHESIZER = "unknown"


def composition(rows: Iterable[Utterance]) -> dict:
    """What a set is made of, per synthesizer (``unknown`` for rows that do not say): its voices and accents,
    utterances, speakers and hours. Training sidecars record it; ``speechtrt eval`` reads it to tell which test
    voices and accents a model never heard."""
    out: dict[str, dict] = {}
    for row in rows:
        entry = out.setdefault(row.synthesizer or UNKNOWN_SYNTHESIZER,
                               {"voices": set(), "accents": set(), "speakers": set(), "utterances": 0, "hours": 0.0})
        entry["voices"].add(row.voice or row.dialect)
        entry["accents"].add(row.dialect)
        entry["speakers"].add(row.speaker)
        entry["utterances"] += 1
        entry["hours"] += row.duration / 3600
    return {"synthesizers": {engine: {"voices": sorted(e["voices"]), "accents": sorted(e["accents"]),
                                      "speakers": len(e["speakers"]), "utterances": e["utterances"],
                                      "hours": round(e["hours"], 3)} for engine, e in sorted(out.items())}}


def write_manifest(path: str | Path, rows: Iterable[Utterance]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            obj = asdict(row)
            for key in SYNTH_KEYS:  # a corpus that does not say stays as it was
                if not obj[key]:
                    del obj[key]
            f.write(json.dumps(obj) + "\n")
    return path


# ---------------------------------------------------------------- synthesis


@dataclass(frozen=True)
class SynthConfig:
    """What ``speechtrt data synth`` makes: ``split`` speakers per voice, each reading ``sentences_per_speaker``.

    ``synthesizers`` speak it: espeak-ng reads in ``accents`` (its voices); every other engine in the voices of
    ``voices`` (``engine:voice``) that name it, or in all its English voices when none does. ``speakers_by_synthesizer``
    and ``sentences_by_synthesizer`` override the two counts for an engine (``(("festival", 6),)``).

    Training speakers each read a different random sample of the training sentences, with the rate and pitch
    jittered per utterance (``jitter``) so the model hears more than a fixed point per speaker; test speakers read
    the same test sentences (a paired design: every dialect and voice sees the same words).
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
    synthesizers: tuple[str, ...] = (ESPEAK,)
    voices: tuple[str, ...] = ()
    speakers_by_synthesizer: tuple[tuple[str, int], ...] = ()
    sentences_by_synthesizer: tuple[tuple[str, int], ...] = ()

    def speakers_of(self, engine: str) -> int:
        return dict(self.speakers_by_synthesizer).get(engine, self.speakers_per_accent)

    def sentences_of(self, engine: str) -> int:
        return dict(self.sentences_by_synthesizer).get(engine, self.sentences_per_speaker)


def parse_engine_counts(value: str, flag: str) -> tuple[tuple[str, int], ...]:
    """``festival=6,flite=4`` as ``(("festival", 6), ("flite", 4))``; an InputError naming ``flag`` otherwise."""
    out = []
    for item in (v.strip() for v in value.split(",") if v.strip()):
        name, sep, count = item.partition("=")
        if not sep or not count.strip().isdigit() or int(count) < 1:
            raise InputError(f"{flag} {item!r}: give <synthesizer>=<count ≥ 1>, e.g. festival=6")
        out.append((synthesizer(name.strip(), flag).name, int(count)))
    return tuple(out)


def check_synth_config(cfg: SynthConfig) -> SynthConfig:
    """``cfg`` when every engine, voice and count can be made here; else an InputError naming the flag.

    Checked before any audio is made: engines installed (``--synthesizers``), espeak-ng accents (``--accents``),
    other engines' voices (``--voices engine:voice``, of an engine in ``--synthesizers``), per-engine counts
    (``--synth-speakers``/``--synth-sentences``) and that each engine's variant pool has enough speakers.
    """
    from speechtrt.asr.synth import parse_synthesizers

    if cfg.split not in SPLITS:
        raise InputError(f"unknown split {cfg.split!r} (--split): choose one of {', '.join(SPLITS)}")
    engines = parse_synthesizers(",".join(cfg.synthesizers), "--synthesizers")
    if ESPEAK in engines:
        check_voices(cfg.accents, "--accents")
    by_engine: dict[str, list[str]] = {}
    for item in cfg.voices:
        name, sep, voice = item.partition(":")
        if not sep or not voice:
            raise InputError(f"--voices {item!r}: give <synthesizer>:<voice>, e.g. festival:kal_diphone")
        engine = synthesizer(name, "--voices").name
        if engine == ESPEAK:
            raise InputError(f"--voices {item!r}: espeak-ng voices are accents; give them with --accents")
        if engine not in engines:
            raise InputError(f"--voices {item!r}: {engine} is not in --synthesizers ({','.join(engines)})")
        by_engine.setdefault(engine, []).append(voice)
    for engine, voices in by_engine.items():
        synthesizer(engine).check_voices(voices, "--voices")
    for flag, pairs in (("--synth-speakers", cfg.speakers_by_synthesizer),
                        ("--synth-sentences", cfg.sentences_by_synthesizer)):
        stray = [e for e, _ in pairs if e not in engines]
        if stray:
            raise InputError(f"{flag}: {', '.join(stray)} not in --synthesizers ({','.join(engines)})")
    for engine in engines:
        pool = synthesizer(engine).variants(cfg.split)
        if cfg.speakers_of(engine) > len(pool):
            flag = "--synth-speakers" if engine in dict(cfg.speakers_by_synthesizer) else "--speakers"
            raise InputError(f"{flag}: {cfg.speakers_of(engine)} {cfg.split} speakers per voice of {engine} asked; "
                             f"its {cfg.split} variant pool has {len(pool)}")
        if engine != ESPEAK and not synthesizer(engine).english_voices():
            raise InputError(f"--synthesizers {engine}: no English voice installed: `{synthesizer(engine).install}`")
    return cfg


def voice_plan(cfg: SynthConfig) -> list[tuple[str, str]]:
    """``(engine, voice)`` pairs ``cfg`` speaks, espeak-ng first (so its part of a mixed set equals the
    espeak-ng-only set of the same seed), then the other engines in the order given."""
    engines = [synthesizer(e).name for e in cfg.synthesizers]
    plan = [(ESPEAK, a) for a in cfg.accents] if ESPEAK in engines else []
    named = [v.split(":", 1) for v in cfg.voices]
    for engine in engines:
        if engine == ESPEAK:
            continue
        mine = [voice for e, voice in named if synthesizer(e, "--voices").name == engine]
        plan += [(engine, v) for v in (mine or sorted(synthesizer(engine).english_voices()))]
    return plan


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
    voices = voice_plan(cfg)
    rng = random.Random(f"{cfg.seed}:{cfg.split}:sentences")
    most = max([cfg.sentences_of(engine) for engine, _ in voices] or [cfg.sentences_per_speaker])
    shared = rng.sample(pool, min(most, len(pool)))
    for engine, voice in voices:
        count = cfg.sentences_of(engine)
        for speaker in speakers(voice, cfg.split, cfg.speakers_of(engine), cfg.seed, engine):
            own = rng.sample(pool, min(count, len(pool))) if cfg.split == "train" else shared[:count]
            for sentence in own:
                rate, pitch = speaker.rate, speaker.pitch
                if cfg.jitter:
                    rate = max(110, min(230, rate + rng.randint(-15, 15)))
                    pitch = max(5, min(95, pitch + rng.randint(-10, 10)))
                yield speaker, sentence, rate, pitch


SPEAK_CHUNK = 64  # utterances handed to an engine at once (festival starts one process per chunk)


def synthesize(out_dir: str | Path, cfg: SynthConfig, progress=None) -> Path:
    """Speak every planned utterance into ``out_dir/wav/<split>/`` (16 kHz mono PCM) and write
    ``out_dir/<split>.jsonl`` with paths relative to ``out_dir``. Returns the manifest path.

    ``progress``, when given, is called as ``progress(done, total)``.
    """
    from speechtrt.models.audio import FEATURES, write_wav

    out_dir = Path(out_dir)
    plan = list(plan_utterances(cfg))
    rows = []
    start = 0
    while start < len(plan):
        engine = plan[start][0].synthesizer
        stop = start
        while stop < len(plan) and stop - start < SPEAK_CHUNK and plan[stop][0].synthesizer == engine:
            stop += 1
        chunk = plan[start:stop]
        requests = [SpeechRequest(sentence, speaker.base_voice, speaker.variant, rate, pitch)
                    for speaker, sentence, rate, pitch in chunk]
        audio = synthesizer(engine).speak_many(requests, FEATURES.sample_rate)
        for i, (speaker, sentence, _, _), samples in zip(range(start, stop), chunk, audio):
            name = (f"{speaker.accent}_{speaker.variant}_{i:05d}.wav" if engine == ESPEAK
                    else f"{engine}_{speaker.base_voice}_{speaker.variant}_{i:05d}.wav")
            rel = Path("wav") / cfg.split / name
            write_wav(out_dir / rel, samples, FEATURES.sample_rate)
            rows.append(Utterance(str(rel), sentence, round(len(samples) / FEATURES.sample_rate, 3), speaker.accent,
                                  speaker.id, engine, speaker.base_voice))
        start = stop
        if progress:
            progress(start, len(plan))
    return write_manifest(out_dir / f"{cfg.split}.jsonl", rows)
