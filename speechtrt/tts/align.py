"""Phoneme durations, the training targets of an aligned voice (:class:`~speechtrt.models.voice.VoiceTTS`,
``aligned=True``), from one of two sources:

* **espeak-ng's own timing** (``--durations-from espeak``): for data espeak-ng spoke, libespeak-ng reports every
  phoneme's start (its phoneme events) while synthesizing the same text with the same settings; the phonemes are
  lined up with the voice's tokens (:func:`espeak_durations`). Exact.
* **an attention voice's attention** (``--durations-from <checkpoint>``): a voice trained with guided attention
  attends, when fed the true previous frames, near-diagonally from each decoder step to the phonemes it is speaking;
  the attention mass a phoneme receives over all steps, averaged over every layer and head, is its duration in
  decoder steps (fractional, summing to the utterance's step count). For data espeak-ng did not speak; on espeak-ng
  data its phoneme centres sat 2.5 steps from the exact ones on average, and exact durations train faster.

Durations are cached beside the prepared data (``durations-espeak<version>-r<reduction>.pt``, or
``durations-<sha12 of the checkpoint>.pt``).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch

from speechtrt.errors import InputError


def checkpoint_key(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


@torch.no_grad()
def attention_durations(model, items: list[dict], batch_frames: int = 6000, progress=None) -> list[torch.Tensor]:
    """Per-item durations (float32 [S], decoder steps per phoneme) from ``model``'s teacher-forced attention."""
    from speechtrt.tts.train import length_batches, make_batch

    model.eval()
    c = model.config
    mean, std = model.mel_mean.float(), model.mel_std.float()
    silence = ((math.log(c.mel.log_floor) - mean) / std)[None, None]
    lengths = [math.ceil(x["mel"].shape[0] / c.reduction) * c.reduction for x in items]
    import random

    out: list[torch.Tensor | None] = [None] * len(items)
    batches = sorted(length_batches(lengths, batch_frames, random.Random(0)))
    for n, ids in enumerate(batches, start=1):
        bt = make_batch([items[i] for i in ids], mean, std, c.reduction, silence)
        _, _, weights = model.teacher_forced(bt.tokens, bt.text_lengths, bt.inputs)
        w = weights.mean(dim=(0, 2))  # [B, T, S]
        for j, i in enumerate(ids):
            g, s = int(bt.groups[j]), int(bt.text_lengths[j])
            out[i] = w[j, :g, :s].sum(0).float()
        if progress is not None:
            progress(n / len(batches))
    return out  # type: ignore[return-value]


def durations_for(data: str | Path, aligner: str | Path, items_by_split: dict[str, list[dict]], reduction: int,
                  log=print) -> None:
    """Attach ``"durations"`` to every item of ``items_by_split`` (``{"train": [...], "dev": [...]}``), read from the
    cache in ``data`` or computed and cached: ``aligner`` is ``espeak`` (espeak-ng's own phoneme timing, for data it
    spoke; an utterance whose phonemes do not line up gets none and is left out of training, counted in the log) or
    the path of an attention voice (its attention)."""
    if str(aligner) == "espeak":
        _espeak_durations_for(Path(data), items_by_split, reduction, log)
        return
    from speechtrt.models.checkpoints import load_checkpoint
    from speechtrt.models.voice import VoiceTTS

    if not Path(aligner).is_file():
        raise InputError(f"--durations-from {aligner}: no such file; pass a trained attention voice (a .pt "
                         "written by speechtrt train tts)")
    cache = Path(data) / f"durations-{checkpoint_key(aligner)}.pt"
    if cache.is_file():
        table = torch.load(cache, weights_only=True)
    else:
        model, _ = load_checkpoint(aligner)
        if not isinstance(model, VoiceTTS) or model.config.aligned:
            raise InputError(f"--durations-from {aligner}: durations are read off an attention voice's "
                             "cross-attention; this checkpoint is not one")
        model = model.float()
        table = {}
        for split, items in items_by_split.items():
            log(f"durations: reading {len(items)} {split} utterances with {aligner}")
            d = attention_durations(model, items)
            table[split] = [x.to(torch.float16) for x in d]
        torch.save(table, cache)
        log(f"durations cached in {cache}")
    for split, items in items_by_split.items():
        if split not in table or len(table[split]) != len(items):
            raise InputError(f"{cache} does not match the prepared data's {split} set; delete it to read again")
        for item, d in zip(items, table[split]):
            if d.shape[0] != item["tokens"].shape[0]:
                raise InputError(f"{cache} does not match the prepared data (token counts differ); delete it")
            item["durations"] = d


# ---------------------------------------------------------------- exact durations from espeak-ng itself

ESPEAK_TIMING_VERSION = 2  # in the cache's name: a change to how tokens take espeak-ng's timing times the data again
_ESPEAK_LOCK = __import__("threading").Lock()
_ESPEAK: dict = {}


def _espeak_lib():
    """libespeak-ng through ctypes, initialised once for synchronous synthesis with phoneme events."""
    import ctypes
    import ctypes.util

    if "lib" in _ESPEAK:
        return _ESPEAK
    name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        raise InputError("libespeak-ng is not installed (it comes with espeak-ng: `apt-get install espeak-ng`)") \
            from None

    class Event(ctypes.Structure):  # espeak_EVENT of speak_lib.h
        _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                    ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                    ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]

    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                     ctypes.POINTER(Event))
    state = {"samples": 0, "events": []}

    def on_audio(wav, count, events):
        state["samples"] += count
        i = 0
        while events[i].type != 0:  # espeakEVENT_LIST_TERMINATED
            if events[i].type == 7:  # espeakEVENT_PHONEME
                state["events"].append((int(events[i].sample), bytes(events[i].id).split(b"\0")[0].decode()))
            i += 1
        return 0

    rate = lib.espeak_Initialize(2, 0, None, 0x0001 | 0x8000)  # synchronous; phoneme events; do not exit on error
    if rate <= 0:
        raise InputError("libespeak-ng failed to initialise (is espeak-ng-data installed?)")
    cb = callback_type(on_audio)
    lib.espeak_SetSynthCallback(cb)
    _ESPEAK.update(lib=lib, rate=rate, state=state, callback=cb)
    return _ESPEAK


def espeak_phoneme_times(text: str, voice: str, rate: int, pitch: int) -> tuple[list[tuple[float, str]], float]:
    """([(start seconds, phoneme mnemonic)], total seconds) of espeak-ng speaking ``text`` with these settings."""
    with _ESPEAK_LOCK:
        es = _espeak_lib()
        lib, state = es["lib"], es["state"]
        state["samples"], state["events"] = 0, []
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise InputError(f"espeak-ng has no voice {voice!r}")
        lib.espeak_SetParameter(1, rate, 0)  # espeakRATE
        lib.espeak_SetParameter(3, pitch, 0)  # espeakPITCH
        data = text.encode("utf-8")
        lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, 1, None, None)  # POS_CHARACTER, espeakCHARS_UTF8
        lib.espeak_Synchronize()
        sr = float(es["rate"])
        return [(s / sr, p) for s, p in state["events"]], state["samples"] / sr


def espeak_durations(text: str, symbols: list[str], steps: int, steps_per_second: float, voice: str = "en-us",
                     rate: int = 175, pitch: int = 50) -> torch.Tensor | None:
    """Durations (decoder steps per token, float32 [len(symbols)], summing to ``steps``) of the tokens of ``text``
    from espeak-ng's own phoneme timing, or None when its phonemes do not line up with the tokens.

    Each phoneme token takes its phoneme's span; a clause token takes the pauses espeak-ng makes there; stress marks
    and word boundaries take none; the leading silence goes to the first token, and ``<eos>`` takes the silence the
    command-line synthesizer appends (its audio, which the voice learns, is about 0.3 s longer than the library's)."""
    from speechtrt.models.phonemes import PAUSES, PHONEMES

    events, total = espeak_phoneme_times(text, voice, rate, pitch)
    if not events or total <= 0:
        return None
    starts = [t for t, _ in events] + [total]
    spans = [b - a for a, b in zip(starts, starts[1:])]
    phones = set(PHONEMES) | set(PAUSES)
    out = [0.0] * len(symbols)
    i, holder = 0, 0  # next symbol; the token that takes a pause no symbol asks for
    for (_, phone), span in zip(events, spans):
        while i < len(symbols) and symbols[i] not in phones:
            if symbols[i] == "<unk>":
                return None
            if symbols[i].startswith("<") and symbols[i] not in ("<w>", "<eos>"):
                holder = i  # a clause token takes the pauses espeak-ng makes at its clause end
            i += 1
        if i < len(symbols) and symbols[i] == phone:
            out[i] += span
            holder = i
            i += 1
        elif phone.startswith("_"):
            out[holder] += span
        else:
            return None
    if any(s in phones for s in symbols[i:]):
        return None
    out[0] += starts[0]
    d = torch.tensor(out, dtype=torch.float32) * steps_per_second
    rest = steps - float(d.sum())
    if symbols[-1] != "<eos>" or rest < -1.0:
        return None
    d[-1] = max(rest, 0.0)
    return d * (steps / float(d.sum()))


def _espeak_durations_for(data: Path, items_by_split: dict[str, list[dict]], reduction: int, log) -> None:
    import json

    from speechtrt.models.phonemes import VOCAB

    meta = json.loads((data / "data.json").read_text())
    voice, rate, pitch = meta["config"]["voice"], meta["config"]["rate"], meta["config"]["pitch"]
    steps_per_second = meta["mel"]["sample_rate"] / meta["mel"]["hop"] / reduction
    cache = data / f"durations-espeak{ESPEAK_TIMING_VERSION}-r{reduction}.pt"
    if cache.is_file():
        table = torch.load(cache, weights_only=True)
    else:
        from rich.progress import track

        table = {}
        for split, items in items_by_split.items():
            rows = []
            for item in track(items, description=f"durations: espeak-ng timing of {len(items)} {split} utterances"):
                symbols = [VOCAB[int(t)] for t in item["tokens"]]
                steps = math.ceil(item["mel"].shape[0] / reduction)
                d = espeak_durations(item["text"], symbols, steps, steps_per_second, voice, rate, pitch)
                rows.append(None if d is None else d.to(torch.float16))
            table[split] = rows
        torch.save(table, cache)
        log(f"durations cached in {cache}")
    for split, items in items_by_split.items():
        rows = table.get(split, [])
        if len(rows) != len(items):
            raise InputError(f"{cache} does not match the prepared data's {split} set; delete it to time again")
        missing = 0
        for item, d in zip(items, rows):
            if d is None:
                missing += 1
                item.pop("durations", None)
            else:
                item["durations"] = d
        if missing:
            log(f"durations: {missing} of {len(items)} {split} utterances have phonemes espeak-ng's timing does not "
                "line up with" + ("; they are left out of training" if split == "train" else
                                  "; they are evaluated with predicted durations"))
