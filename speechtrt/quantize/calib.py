"""Calibration and held-out inputs for every exported graph, captured from real text, real speech and real decoding.

Sources (recorded in ``calib_data/manifest.json``):

- Text: English sayings, quotations and riddles from the Debian ``fortunes-min`` package
  (``/usr/share/games/fortunes``), installed with ``apt-get install fortunes-min``; nothing of it is copied into
  the repository. Sentences are split deterministically into a calibration part and a held-out part.
- Speech: espeak-ng in several English accents, speaking rates and pitches, turned into the 80-bin log-mel features
  every ASR model consumes (:func:`speechtrt.models.audio.log_mel`).
- Decoder-step and streaming inputs: the PyTorch model's own autoregressive decoding (KV cache through
  ``decode_step``, ``FrameRule`` frames) and chunked streaming (``step``), sampled at positions across the
  utterance, so positions, KV rows and LSTM states are the values that occur at run time, not random tensors.

A set is one ``.npz`` keyed by graph input name. Every array holds the samples along the input's ``batch`` axis
(axis 1 for ``[L, B, ...]`` tensors), padded to the longest sample; the length inputs (``text_lengths``,
``feature_lengths``, ``past_len``) say what is valid. Samples are sorted by length, so :func:`minibatches` cuts
batches of similar lengths and crops each to its own longest sample: calibration sees little padding.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from speechtrt.config import FrameRule, TTSConfig
from speechtrt.errors import InputError
from speechtrt.export.components import Component, component, per_layer_feeds
from speechtrt.models.corpus import FORTUNES_DIR, fortune_entries, fortune_files

FORTUNE_FILES = ("fortunes", "literature", "riddles")
TEXT_SOURCE = "Debian package fortunes-min (/usr/share/games/fortunes: fortunes, literature, riddles)"
MANIFEST_FORMAT = "speechtrt-calib/1"

# Accents and speakers for calibration audio; held-out audio uses the other list, so no voice is in both.
CALIB_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-us-nyc", "en-gb-x-rp", "en-029")
HELDOUT_VOICES = ("en-gb-x-gbclan", "en-us+f3", "en-gb-x-gbcwmd", "en-gb+m3")

# Which length input bounds which dynamic axis (a batch is cropped to its longest valid extent).
LENGTH_INPUT = {"text": "text_lengths", "frames": "feature_lengths", "past": "past_len"}

VOCODER_WINDOW = 64  # mel frames per vocoder sample, cut from decoded mels
TTS_MAX_CHARS = 40  # 40 chars -> 200 frames: keeps the decoder-step set (past K/V) small on disk
ASR_MAX_CHARS = 120


@contextlib.contextmanager
def single_thread():
    """Run PyTorch on one intra-op thread: step-by-step decoding at small batch is latency-bound, and on a shared
    2-core machine more threads only add synchronisation (measured: 12 s instead of 110 s for a TTS capture)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class CalibSet:
    """One component's inputs: ``arrays`` keyed by graph input name, and where they came from."""

    component: str
    arrays: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)
    spec: Component | None = None  # the component, when it is not a registry one (a user's model)

    @property
    def samples(self) -> int:
        comp = self.spec or component(self.component)
        spec = comp.inputs[0]
        return int(self.arrays[spec.name].shape[spec.shape.index("batch")])


# ---------------------------------------------------------------- text


def english_sentences(min_words: int = 3, max_chars: int = 200, directory: Path = FORTUNES_DIR) -> list[str]:
    """Every fortune entry of ``fortunes-min`` as one whitespace-collapsed line, deduplicated, in file order.

    Raises :class:`InputError` when the package is not installed.
    """
    files = fortune_files(directory, FORTUNE_FILES)
    if not files:
        raise InputError(
            f"no English text source: {directory} has none of {', '.join(FORTUNE_FILES)}; "
            "install it with `apt-get install fortunes-min`"
        )
    seen: set[str] = set()
    out: list[str] = []
    for path in files:
        for entry in fortune_entries([path]):
            # drop attributions ("-- Mark Twain"): keep the saying itself
            line = entry.split(" -- ")[0].strip()
            if len(line.split()) < min_words or len(line) > max_chars or line in seen:
                continue
            if not all(32 <= ord(ch) < 127 for ch in line):
                continue
            seen.add(line)
            out.append(line)
    return out


def split_sentences(sentences: list[str], max_chars: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Shuffle (seeded) the sentences of at most ``max_chars`` characters; every 4th goes to the held-out part."""
    pool = [s for s in sentences if len(s) <= max_chars]
    random.Random(seed).shuffle(pool)
    return [s for i, s in enumerate(pool) if i % 4], [s for i, s in enumerate(pool) if i % 4 == 0]


def _pad_stack(rows: list[np.ndarray], axis_len: int, dtype, value=0) -> np.ndarray:
    """Stack [len_i, ...] rows into [N, axis_len, ...], padding the first axis with ``value``."""
    out = np.full((len(rows), axis_len, *rows[0].shape[1:]), value, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


# ---------------------------------------------------------------- TTS


def _tts_batch(texts: list[str], tokenizer=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded token ids and lengths of ``texts`` by ``tokenizer`` (default: the seed's byte table)."""
    from speechtrt.models.text import ByteTokenizer

    tokenizer = tokenizer or ByteTokenizer()
    toks = [np.array(tokenizer.tokens(t), dtype=np.int64) for t in texts]
    lengths = np.array([len(t) for t in toks], dtype=np.int64)
    return torch.from_numpy(_pad_stack(toks, int(lengths.max()), np.int64)), torch.from_numpy(lengths)


@torch.no_grad()
def tts_decode(model, texts: list[str], rule: FrameRule = FrameRule(), stop_token: bool = False) -> dict:
    """Decode ``texts`` together with the KV cache, each to its ``FrameRule`` length — or, with ``stop_token``
    (a trained model), each until its stop probability crosses 0.5 (at most the rule's length, within
    ``config.max_frames``).

    Returns the encoder inputs, cross K/V, per-text frame counts and, per step, the decoder-step inputs as they
    occurred: ``prev`` [T, B, M], the self-attention cache ``k``/``v`` [L, B, H, T, D], and the decoded ``mel``
    [B, T, M]. Rows of a text past its frame count are decoded but never used.
    """
    with single_thread():
        return _tts_decode(model, texts, rule, stop_token)


def _tts_decode(model, texts: list[str], rule: FrameRule, stop_token: bool = False) -> dict:
    from speechtrt.models.text import tokenizer_of

    tokens, lengths = _tts_batch(texts, tokenizer_of(model))
    memory = model.encode(tokens, lengths)
    cross_k, cross_v = model.cross_kv(memory)
    c: TTSConfig = model.config
    frames = [min(rule.frames_for_text(len(t)), c.max_frames) for t in texts]
    b, n = len(texts), max(frames)
    ks = torch.zeros(c.num_layers, b, c.num_heads, n, c.head_dim)
    vs = torch.zeros_like(ks)
    prev = torch.zeros(n, b, c.mel_dim)
    mel = torch.zeros(b, n, c.mel_dim)
    frame = torch.zeros(b, c.mel_dim)
    stopped = [False] * b
    for t in range(n):
        prev[t] = frame
        past = max(t, 1)
        frame, stop, k, v = model.decode_step(
            frame, torch.full((b,), t, dtype=torch.long), list(ks[:, :, :, :past]), list(vs[:, :, :, :past]),
            list(cross_k), list(cross_v), lengths,
        )
        ks[:, :, :, t: t + 1] = k
        vs[:, :, :, t: t + 1] = v
        mel[:, t] = frame
        if stop_token:
            for i in range(b):
                if not stopped[i] and float(stop[i]) > 0.5:
                    stopped[i], frames[i] = True, min(frames[i], t + 1)
            if all(stopped):
                n = t + 1
                prev, ks, vs, mel = prev[:n], ks[:, :, :, :n], vs[:, :, :, :n], mel[:, :n]
                break
    return {"tokens": tokens, "text_lengths": lengths, "cross_k": cross_k, "cross_v": cross_v,
            "frames": frames, "prev": prev, "k": ks, "v": vs, "mel": mel}


def capture_tts(model, texts: list[str], steps_per_text: int, seed: int = 0, stop_token: bool = False
                ) -> dict[str, CalibSet]:
    """Encoder, decoder-step and vocoder sets from one real decoding run over ``texts`` (to each text's stop token
    with ``stop_token``)."""
    rng = np.random.default_rng(seed)
    run = tts_decode(model, texts, stop_token=stop_token)
    lengths = run["text_lengths"].numpy()
    order = np.argsort(lengths, kind="stable")
    encoder = {"tokens": run["tokens"].numpy()[order], "text_lengths": lengths[order]}

    # decoder steps: positions drawn across each text's frames (first and last included when there are two or more)
    picks = []
    for i, n in enumerate(run["frames"]):
        pos = rng.choice(n, size=min(steps_per_text, n), replace=False)
        if len(pos) >= 2:
            pos[:2] = [0, n - 1]
        picks += [(i, int(p)) for p in pos]
    picks.sort(key=lambda ip: ip[1])
    rows = [i for i, _ in picks]
    past_len = np.array([p for _, p in picks], dtype=np.int64)
    p_max = max(1, int(past_len.max()))
    k = run["k"][:, rows, :, :p_max].clone()
    v = run["v"][:, rows, :, :p_max].clone()
    keep = torch.arange(p_max)[None, :] < torch.from_numpy(past_len)[:, None]  # [N, P]
    k *= keep[None, :, None, :, None]
    v *= keep[None, :, None, :, None]
    decoder = per_layer_feeds({
        "prev_frame": run["prev"][torch.from_numpy(past_len), torch.tensor(rows)].numpy(),
        "past_len": past_len,
        "text_lengths": lengths[rows],
        "past_k": k.numpy(),
        "past_v": v.numpy(),
        "cross_k": run["cross_k"][:, rows].numpy(),
        "cross_v": run["cross_v"][:, rows].numpy(),
    }, model.config.num_layers)

    # vocoder: windows of decoded mel, all of the shortest text's length when a text is shorter than a window
    mels = []
    window = min(VOCODER_WINDOW, *run["frames"])
    for i, n in enumerate(run["frames"]):
        for _ in range(steps_per_text):
            w = window
            start = int(rng.integers(0, n - w + 1))
            mels.append(run["mel"][i, start: start + w].numpy())
    w = min(m.shape[0] for m in mels)
    vocoder = {"mel": np.stack([m[:w] for m in mels]).astype(np.float32)}

    meta = {"texts": len(texts), "decoded_frames": int(sum(run["frames"])),
            "frame_rule": "to the stop token" if stop_token else "clamp(5*chars, 10, 1000)"}
    return {
        "tts_encoder": CalibSet("tts_encoder", encoder, {**meta, "source": "text"}),
        "tts_decoder_step": CalibSet("tts_decoder_step", decoder, {
            **meta, "source": "decode_step KV-cache decoding", "max_past": p_max}),
        "tts_vocoder": CalibSet("tts_vocoder", vocoder, {**meta, "source": "decoded mel windows", "window": w}),
    }


# ---------------------------------------------------------------- ASR


def speak_set(texts: list[str], voices: tuple[str, ...], seed: int = 0, progress=None) -> list[dict]:
    """espeak-ng utterances: each text once, voice cycling, rate 140–200 wpm, pitch 30–70 (seeded).

    Returns ``[{text, voice, rate, pitch, features [T, 80] float32}]``.
    """
    from speechtrt.models.audio import espeak_speech, log_mel

    rng = random.Random(seed)
    out = []
    for i, text in enumerate(texts):
        voice, rate, pitch = voices[i % len(voices)], rng.randint(140, 200), rng.randint(30, 70)
        feats = log_mel(espeak_speech(text, voice=voice, rate=rate, pitch=pitch)).numpy()
        out.append({"text": text, "voice": voice, "rate": rate, "pitch": pitch, "features": feats})
        if progress:
            progress()
    return out


def asr_features(utterances: list[dict]) -> dict[str, np.ndarray]:
    """Whole utterances as one padded ``features``/``feature_lengths`` pair, sorted by length (padding is 0)."""
    feats = sorted((u["features"] for u in utterances), key=len)
    lengths = np.array([len(f) for f in feats], dtype=np.int64)
    return {"features": _pad_stack(feats, int(lengths.max()), np.float32), "feature_lengths": lengths}


@torch.no_grad()
def capture_stream(model, utterances: list[dict], samples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Stream every utterance chunk by chunk through ``model.step`` and keep ``samples`` chunks with their states.

    Chunks are drawn across positions (first chunks, middles, ends) so the recurrent state seen by calibration
    ranges from the zero start state to a long-running one.
    """
    with single_thread():
        return _capture_stream(model, utterances, samples, np.random.default_rng(seed))


def _capture_stream(model, utterances: list[dict], samples: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    chunk = model.config.chunk_frames
    taken: list[dict] = []
    per_utt = max(1, -(-samples // len(utterances)))
    for u in utterances:
        feats = torch.from_numpy(u["features"])
        n_chunks = len(feats) // chunk
        if n_chunks == 0:
            continue
        want = set(rng.choice(n_chunks, size=min(per_utt, n_chunks), replace=False).tolist())
        state = model.initial_state(1)
        for j in range(n_chunks):
            x = feats[j * chunk: (j + 1) * chunk][None]
            if j in want:
                taken.append({"features": x[0].numpy(), **{k: s[:, 0] if k in "hc" else s[0] for k, s in state.items()}})
            _, *new = model.step(x, state["ctx1"], state["ctx2"], state["h"], state["c"])
            state = dict(zip(("ctx1", "ctx2", "h", "c"), new))
    rng.shuffle(taken)
    taken = taken[:samples]
    return {
        "features": np.stack([t["features"] for t in taken]),
        "ctx1": np.stack([t["ctx1"].numpy() for t in taken]),
        "ctx2": np.stack([t["ctx2"].numpy() for t in taken]),
        "h": np.stack([t["h"].numpy() for t in taken], axis=1),
        "c": np.stack([t["c"].numpy() for t in taken], axis=1),
    }


# ---------------------------------------------------------------- batching for calibration and evaluation


def batch_axis(comp: Component, name: str) -> int:
    spec = next(s for s in comp.inputs if s.name == name)
    return spec.shape.index("batch")


def minibatches(comp: Component, arrays: dict[str, np.ndarray], batch_size: int) -> list[dict[str, np.ndarray]]:
    """Cut a set into consecutive feeds of ``batch_size`` samples, each cropped to its longest valid extent."""
    missing = [s.name for s in comp.inputs if s.name not in arrays]
    if missing:
        raise InputError(f"calibration set for {comp.name} lacks input(s) {', '.join(missing)}: re-run calibrate")
    n = arrays[comp.inputs[0].name].shape[batch_axis(comp, comp.inputs[0].name)]
    feeds = []
    for lo in range(0, n, batch_size):
        idx = np.arange(lo, min(n, lo + batch_size))
        feed = {s.name: np.take(arrays[s.name], idx, axis=s.shape.index("batch")) for s in comp.inputs}
        for spec in comp.inputs:
            crops = {}
            for axis, dim in enumerate(spec.shape):
                length_name = LENGTH_INPUT.get(dim) if isinstance(dim, str) else None
                if length_name and length_name in feed:
                    crops[axis] = max(comp.dims[dim].min, int(feed[length_name].max()))
            for axis, size in crops.items():
                feed[spec.name] = np.take(feed[spec.name], np.arange(size), axis=axis)
        feeds.append({k: np.ascontiguousarray(v) for k, v in feed.items()})
    return feeds


# ---------------------------------------------------------------- files


def save_set(cs: CalibSet, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **cs.arrays)
    return path


def load_set(calib_dir: str | Path, name: str, heldout: bool = False) -> dict[str, np.ndarray]:
    """The arrays of ``<calib_dir>/[heldout/]<name>.npz``; an :class:`InputError` says how to make them."""
    path = Path(calib_dir) / ("heldout" if heldout else "") / f"{name}.npz"
    if not path.is_file():
        raise InputError(f"no {'held-out' if heldout else 'calibration'} set {path}: run `speechtrt calibrate` first")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def describe(cs: CalibSet, path: Path) -> dict:
    from speechtrt.files import sha256_file

    return {
        "file": path.name if path.parent.name != "heldout" else f"heldout/{path.name}",
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "samples": cs.samples,
        "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in cs.arrays.items()},
        **cs.meta,
    }


def write_manifest(calib_dir: Path, entries: dict, extra: dict) -> Path:
    """Merge ``entries`` (component -> {calibration, heldout}) into ``calib_dir/manifest.json``."""
    path = calib_dir / "manifest.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    if data.get("format") != MANIFEST_FORMAT:
        data = {"format": MANIFEST_FORMAT, "components": {}}
    data["components"].update(entries)
    data.update(extra)
    data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


# ---------------------------------------------------------------- everything, for the CLI


@dataclass(frozen=True)
class CaptureConfig:
    """How much to capture. ``samples`` per component and split; ``heldout`` samples for the fidelity report."""

    samples: int = 48
    heldout: int = 16
    seed: int = 0
    tts_max_chars: int = TTS_MAX_CHARS
    asr_max_chars: int = ASR_MAX_CHARS


def load_model(model_name: str, checkpoint: str | Path | None = None, seed: int = 0):
    """The PyTorch model the FP32 graphs were exported from: a checkpoint when given, else the seeded init."""
    from speechtrt.models import build_model, load_checkpoint

    if checkpoint:
        model, _ = load_checkpoint(checkpoint)
        return model
    return build_model(model_name, seed=seed)


def capture(components: list[Component], calib_dir: str | Path, config: CaptureConfig = CaptureConfig(),
            checkpoints: dict[str, str] | None = None, progress=None, model=None,
            stop_token: bool = False) -> dict[str, dict]:
    """Capture calibration and held-out sets for ``components`` into ``calib_dir`` and update its manifest.

    ``model``: the PyTorch model the components belong to (a trained voice, a user's model); default the reference
    model of each component (from ``checkpoints`` when given, else seeded). ``stop_token``: TTS decoding runs to each
    text's stop token instead of the frame rule. ``progress(description, advance)`` is called as work proceeds (for
    a progress bar). Returns the manifest entries written: ``{component: {"calibration": {...}, "heldout": {...},
    "seconds": s}}``.
    """
    from speechtrt.files import check_writable

    with single_thread():
        return _capture(components, check_writable(calib_dir), config, checkpoints or {}, progress, model,
                        stop_token)


def _readable_texts(texts: list[str], tokenizer) -> list[str]:
    """The texts ``tokenizer`` reads (a voice refuses some characters the byte table takes)."""
    from speechtrt.errors import InputError as _Refused

    out = []
    for t in texts:
        try:
            tokenizer.tokens(t)
        except _Refused:
            continue
        out.append(t)
    return out


def _capture(components, calib_dir: Path, config: CaptureConfig, checkpoints: dict[str, str], progress,
             user_model=None, stop_token: bool = False) -> dict:
    tick = progress or (lambda desc, advance=0: None)
    wanted = {c.name for c in components}
    specs = {c.name: c for c in components}
    entries: dict[str, dict] = {}
    t_start = time.perf_counter()
    sentences = english_sentences()

    def store(sets: dict[str, CalibSet], which: str, seconds: float) -> None:
        for name, cs in sets.items():
            if name not in wanted:
                continue
            cs.spec = specs.get(name)
            path = save_set(cs, calib_dir / ("heldout" if which == "heldout" else "") / f"{name}.npz")
            entries.setdefault(name, {})[which] = describe(cs, path)
            entries[name]["seconds"] = round(entries[name].get("seconds", 0.0) + seconds, 3)

    torch.manual_seed(config.seed)
    if wanted & {"tts_encoder", "tts_decoder_step", "tts_vocoder"}:
        tick("TTS: decoding real text")
        from speechtrt.models.text import tokenizer_of

        model = user_model if user_model is not None else load_model("tts", checkpoints.get("tts"), config.seed)
        tokenizer = tokenizer_of(model)
        calib_texts, held_texts = split_sentences(sentences, config.tts_max_chars, config.seed)
        if user_model is not None:
            calib_texts, held_texts = _readable_texts(calib_texts[:256], tokenizer), _readable_texts(
                held_texts[:64], tokenizer)
        # encoder: one sample per text; decoder step and vocoder: several positions per text
        per_text = 2
        for which, pool, n in (("calibration", calib_texts, config.samples), ("heldout", held_texts, config.heldout)):
            t0 = time.perf_counter()
            # the decoder-step set holds padded past K/V ([L, N, H, P, D] twice): at most 32 samples keeps it ~150 MB
            texts = pool[: max(1, min(n, 32) // per_text)]
            sets = capture_tts(model, texts, per_text, seed=config.seed + (which == "heldout"), stop_token=stop_token)
            enc_texts = pool[:n]
            tokens, lengths = _tts_batch(enc_texts, tokenizer)
            order = np.argsort(lengths.numpy(), kind="stable")
            sets["tts_encoder"] = CalibSet("tts_encoder", {
                "tokens": tokens.numpy()[order], "text_lengths": lengths.numpy()[order]}, {
                "texts": len(enc_texts), "source": "text"})
            for cs in sets.values():
                cs.meta["text_source"] = TEXT_SOURCE
            store(sets, which, time.perf_counter() - t0)
            tick(f"TTS {which} captured", 1)

    asr_names = [n for n in ("asr_small", "asr_medium", "asr_large", "asr_stream_step") if n in wanted]
    if user_model is not None:  # a model of its own: its one ASR graph takes the same whole-utterance features
        asr_names = [c.name for c in components if not c.name.startswith("tts_")]
        if any(len(specs[n].inputs) != 2 and n != "asr_stream_step" for n in asr_names):
            raise InputError("calibration of a streaming model of your own is not supported yet: export it, and "
                             "run it at FP32 (or INT8 with ONNX Runtime's dynamic quantization)")

    if asr_names:
        calib_texts, held_texts = split_sentences(sentences, config.asr_max_chars, config.seed + 1)
        for which, pool, n, voices in (("calibration", calib_texts, config.samples, CALIB_VOICES),
                                       ("heldout", held_texts, config.heldout, HELDOUT_VOICES)):
            t0 = time.perf_counter()
            tick(f"ASR: speaking {n} {which} utterances")
            utts = speak_set(pool[:n], voices, seed=config.seed + (which == "heldout"))
            speak_s = time.perf_counter() - t0
            audio_meta = {
                "source": "espeak-ng speech -> log_mel", "text_source": TEXT_SOURCE,
                "voices": sorted({u["voice"] for u in utts}), "utterances": len(utts),
                "seconds_of_audio": round(sum(len(u["features"]) for u in utts) / 100.0, 2),
            }
            sets = {}
            for name in asr_names:
                if name == "asr_stream_step":
                    t1 = time.perf_counter()
                    stream_model = user_model if user_model is not None else load_model(
                        "asr-stream", checkpoints.get("asr-stream"), config.seed)
                    arrays = capture_stream(stream_model, utts, n, seed=config.seed)
                    sets[name] = CalibSet(name, arrays, {**audio_meta, "source": "espeak-ng speech -> log_mel -> "
                                                         "chunked streaming states (model.step)"})
                    store({name: sets.pop(name)}, which, speak_s + time.perf_counter() - t1)
                else:
                    sets[name] = CalibSet(name, asr_features(utts), dict(audio_meta))
            store(sets, which, speak_s)
            if which == "heldout":
                # whole held-out utterances (the streaming step's transcripts) with their texts and voices
                (calib_dir / "heldout").mkdir(exist_ok=True)
                np.savez(calib_dir / "heldout" / "asr_utterances.npz", **asr_features(utts))
                (calib_dir / "heldout" / "asr_utterances.json").write_text(json.dumps(
                    [{k: u[k] for k in ("text", "voice", "rate", "pitch")} | {"frames": len(u["features"])}
                     for u in sorted(utts, key=lambda u: len(u["features"]))], indent=1) + "\n")
            tick(f"ASR {which} captured", 1)

    write_manifest(calib_dir, entries, {
        "text_source": TEXT_SOURCE, "seed": config.seed, "samples": config.samples, "heldout": config.heldout,
        "checkpoints": checkpoints, "calib_voices": list(CALIB_VOICES), "heldout_voices": list(HELDOUT_VOICES),
        "capture_seconds": round(time.perf_counter() - t_start, 2),
    })
    return entries
