"""``--model``: a reference name, a shipped voice, a checkpoint file, or a user's ``module:factory``.

:func:`resolve_model` turns what a user typed into a :class:`ModelRef` — the PyTorch module, the name its graphs,
calibration sets and engines are filed under, where it came from, and whether it decodes to its stop token:

* a reference name (``tts``, ``asr-small`` … ``asr-stream``): the seeded reference model;
* a shipped checkpoint by name (``voice-en`` → ``checkpoints/voice-en.pt``, looked up in ``./checkpoints`` and
  beside the package);
* a checkpoint file (``path/to/model.pt``): a speechtrt checkpoint with its config — the reference kinds
  (:func:`~speechtrt.models.checkpoints.load_checkpoint`) or a user's model saved with :func:`save_model` (it
  records the factory that rebuilds the module from the stored config);
* ``module:factory`` or ``path/to/file.py:factory``: ``factory()`` (or ``factory(config)`` for a stored config)
  returns the model.

Every model is checked against its protocol (:mod:`speechtrt.models.protocol`) before any work, so a model that
lacks something is refused in one line naming what.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from speechtrt.errors import InputError

if TYPE_CHECKING:
    import torch

REFERENCE_NAMES = ("tts", "asr-small", "asr-medium", "asr-large", "asr-stream")
"""The seeded reference models (same list as :data:`speechtrt.vocab.MODEL_NAMES`)."""

DEFAULT_VOICE = "voice-en"
"""The trained reference voice, ``checkpoints/voice-en.pt``."""

PACKAGE_CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"

_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class ModelRef:
    """A model as ``--model`` named it.

    ``name``: the folder its graphs, calibration sets and engines go to (a reference name, a checkpoint's stem, the
    model's own ``name`` or its factory's). ``kind``: ``tts``, ``asr`` or ``asr-stream``. ``source``: where it came
    from (recorded in sidecars). ``reference``: one of speechtrt's seeded reference models.
    """

    name: str
    kind: str
    model: torch.nn.Module
    source: dict = field(default_factory=dict)
    reference: bool = False
    meta: dict = field(default_factory=dict)

    @property
    def stop_token(self) -> bool:
        """Whether requests decode until the model's stop token. Every model does except the seeded reference TTS,
        whose random stop head fires after one frame (it decodes a fixed ``FrameRule`` length instead)."""
        return self.kind == "tts" and not (self.reference and self.name == "tts")

    def onnx_dir(self, root: str | Path = "out/onnx") -> Path:
        """Where its graphs go by default: ``root`` for the reference models (as before), ``root/<name>`` else."""
        return Path(root) if self.reference else Path(root) / self.name

    def calib_dir(self, root: str | Path = "calib_data") -> Path:
        """Where its calibration sets go by default: ``root`` for the reference models, ``root/<name>`` else (a
        user's decoder step has other cache shapes than the reference's)."""
        return Path(root) if self.reference else Path(root) / self.name


def checkpoint_path(name: str) -> Path | None:
    """``checkpoints/<name>.pt`` in the working directory or beside the package, when it exists."""
    for folder in (Path("checkpoints"), PACKAGE_CHECKPOINTS):
        path = folder / f"{name}.pt"
        if path.is_file():
            return path
    return None


def shipped_checkpoints() -> list[str]:
    """The names of the checkpoints in ``./checkpoints`` and beside the package (``voice-en``, ``asr-medium`` ...)."""
    names = {p.stem for folder in (Path("checkpoints"), PACKAGE_CHECKPOINTS) if folder.is_dir()
             for p in folder.glob("*.pt") if not p.name.endswith(".last.pt")}
    return sorted(names - set(REFERENCE_NAMES))


def _unknown_hint(spec: str) -> str:
    """What to type instead of an unknown model name: a close match first, then every name that works."""
    if spec == DEFAULT_VOICE:
        return f"train it with `speechtrt train tts` (it writes checkpoints/{spec}.pt)"
    names = [*REFERENCE_NAMES, *shipped_checkpoints()]
    close = difflib.get_close_matches(spec, names, n=1, cutoff=0.6)
    guess = f"did you mean {close[0]!r}? " if close else ""
    return f"{guess}give one of {', '.join(names)}, a checkpoint file, or module:factory"


def default_voice() -> str:
    """``voice-en`` when its checkpoint is present, else the seeded reference ``tts`` (whose audio is noise)."""
    return DEFAULT_VOICE if checkpoint_path(DEFAULT_VOICE) else "tts"


def check_model_spec(spec: str, flag: str = "--model") -> str:
    """``spec`` stripped, when it can name a model (a reference name, a shipped checkpoint, a file, or
    ``module:factory``); InputError otherwise. It loads nothing (no torch), so commands call it before their heavy
    imports and a mistyped name is refused at once."""
    spec = str(spec).strip()
    if not spec:
        raise InputError(f"{flag} is empty: give a model name ({', '.join(REFERENCE_NAMES)}, {DEFAULT_VOICE}), a "
                         "checkpoint file, or module:factory")
    if spec in REFERENCE_NAMES or _is_factory(spec) or _checkpoint_file(spec) is not None:
        return spec
    if spec.endswith(".pt"):
        raise InputError(f"{flag} {spec}: no such checkpoint file")
    raise InputError(f"unknown model {spec!r} ({flag}): no checkpoints/{spec}.pt; {_unknown_hint(spec)}")


def _checkpoint_file(spec: str) -> Path | None:
    """The checkpoint file ``spec`` names: a path, or a shipped checkpoint's name."""
    return Path(spec) if Path(spec).is_file() else checkpoint_path(spec)


def resolve_model(spec: str, *, seed: int = 0, flag: str = "--model", kind: str | None = None,
                  probe: bool = True) -> ModelRef:
    """The model ``spec`` names (see the module docstring), checked against its protocol.

    ``kind`` (``tts`` / ``asr``): refuse a model of the other kind, naming ``flag``. Raises InputError for a spec
    that names nothing, a file that is not a checkpoint, a factory that cannot be imported or returns something
    else, and a model that lacks part of its protocol.
    """
    spec = check_model_spec(spec, flag)
    from speechtrt.models.protocol import check_asr_model, check_tts_model, model_kind

    if spec in REFERENCE_NAMES:
        from speechtrt.models import build_model

        ref = ModelRef(spec, "tts" if spec == "tts" else ("asr-stream" if spec == "asr-stream" else "asr"),
                       build_model(spec, seed=seed), {"seed": seed}, reference=True)
    elif _is_factory(spec):
        model = _call_factory(spec, None, flag)
        ref = ModelRef(_name_of(model, spec.rsplit(":", 1)[1]), model_kind(model), model, {"factory": spec})
    else:
        path = _checkpoint_file(spec)
        model, meta, source = load_model_file(path, flag)
        ref = ModelRef(_name_of(model, path.stem), model_kind(model), model, source, meta=meta)
    if kind is not None and (ref.kind == "tts") != (kind == "tts"):
        want = "a TTS model" if kind == "tts" else "an ASR model"
        raise InputError(f"{flag} {spec}: {want} is needed here, and this is {'a TTS' if ref.kind == 'tts' else 'an ASR'} "
                         "model")
    if ref.kind == "tts":
        _attach_voice_tokenizer(ref.model)
        check_tts_model(ref.model, probe=probe, flag=f"{flag} {spec}")
    else:
        check_asr_model(ref.model, probe=probe, flag=f"{flag} {spec}")
    ref.model.eval()
    return ref


def resolve_own(spec: str, checkpoint, *, seed: int = 0) -> ModelRef:
    """The model of a pipeline command's ``--model`` when it is not a reference name: refuses ``--checkpoint``
    beside it (a model of one's own carries its weights) and resolves it like :func:`resolve_model`."""
    if checkpoint:
        raise InputError("--checkpoint goes with a reference --model; a model of your own comes as --model "
                         "<checkpoint file> or --model module:factory")
    return resolve_model(spec, seed=seed)


# ---------------------------------------------------------------- factories


def _is_factory(spec: str) -> bool:
    head, sep, tail = spec.rpartition(":")
    return bool(sep and head and tail.isidentifier() and not re.match(r"^[A-Za-z]:[\\/]", spec))


def _import(target: str, flag: str):
    """The module ``target`` names: a dotted module path, or a ``.py`` file."""
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise InputError(f"{flag} {target}: no such file")
        name = f"speechtrt_user_{_NAME.sub('_', path.stem)}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise InputError(f"{flag} {target}: importing it raised {type(exc).__name__}: {exc}") from exc
        return module
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        raise InputError(f"{flag} {target}: cannot import module {exc.name!r} (is it on PYTHONPATH? a file path "
                         "works too: path/to/file.py:factory)") from exc
    except Exception as exc:
        raise InputError(f"{flag} {target}: importing it raised {type(exc).__name__}: {exc}") from exc


def _call_factory(spec: str, config: dict | None, flag: str) -> torch.nn.Module:
    import torch

    target, _, attr = spec.rpartition(":")
    factory = getattr(_import(target, flag), attr, None)
    if not callable(factory):
        raise InputError(f"{flag} {spec}: {target} has no callable {attr!r}")
    try:
        model = factory() if config is None else factory(config)
    except Exception as exc:
        raise InputError(f"{flag} {spec}: the factory raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"{flag} {spec}: the factory returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _name_of(model, fallback: str) -> str:
    name = getattr(model, "name", None)
    name = name if isinstance(name, str) and name else fallback.replace("_", "-")
    name = _NAME.sub("-", name).strip("-.") or "model"
    if not isinstance(getattr(model, "name", None), str):
        try:
            model.name = name  # the TTS service and the runtime file its plans under this name
        except (AttributeError, TypeError):
            pass
    return name


# ---------------------------------------------------------------- checkpoints of a user's model


def _config_dict(config) -> dict:
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    if isinstance(config, dict):
        return dict(config)
    return {k: v for k, v in vars(config).items() if not k.startswith("_")}


def save_model(model: torch.nn.Module, path: str | Path, factory: str, meta: dict | None = None) -> Path:
    """Write a user's model as a speechtrt checkpoint: its weights, its config (as a dict) and ``factory``
    (``module:function`` or ``file.py:function``), which :func:`resolve_model` calls with that dict to rebuild it."""
    import torch

    from speechtrt.models.checkpoints import FORMAT
    from speechtrt.models.protocol import model_kind

    if not _is_factory(factory):
        raise InputError(f"factory {factory!r}: give module:function or path/to/file.py:function")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "kind": model_kind(model), "size": "custom", "factory": factory,
                "config": _config_dict(model.config),
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta": meta or {}},
               path)
    return path


def load_model_file(path: str | Path, flag: str = "--model") -> tuple[torch.nn.Module, dict, dict]:
    """(model in eval mode, meta, source) of a checkpoint file: a user's (with a factory) or a reference kind."""
    import torch

    from speechtrt.models.checkpoints import load_checkpoint

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{flag} {path}: no such checkpoint file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        blob = None  # load_checkpoint says why in one line
    if isinstance(blob, dict) and blob.get("factory"):
        model = _call_factory(blob["factory"], blob.get("config") or {}, f"{flag} {path}")
        try:
            model.load_state_dict(blob["state_dict"])
        except RuntimeError as exc:
            raise InputError(f"{flag} {path}: the weights do not fit the model its factory builds: "
                             f"{str(exc).splitlines()[0]}") from exc
        model = model.float()
        return model.eval(), blob.get("meta", {}), {"checkpoint": str(path), "factory": blob["factory"]}
    model, meta = load_checkpoint(path)
    return model.float().eval(), meta, {"checkpoint": str(path)}


def _attach_voice_tokenizer(model) -> None:
    """A trained voice reads phonemes: give it its phoneme front end when it does not carry one itself (a voice
    checkpoint names its espeak-ng voice in ``config.phoneme_voice``)."""
    voice = getattr(getattr(model, "config", None), "phoneme_voice", None)
    if voice is None or getattr(model, "tokenizer", None) is not None:
        return
    if importlib.util.find_spec("speechtrt.models.phonemes") is None:
        return
    model.tokenizer = PhonemeTokenizer(voice)


class PhonemeTokenizer:
    """The voices' text front end as a tokenizer object (``normalize``, ``tokens``): espeak-ng phonemes
    (:mod:`speechtrt.models.phonemes`) in the espeak-ng ``voice`` the model was trained with."""

    def __init__(self, voice: str):
        self.voice = voice

    def normalize(self, text: str) -> str:
        from speechtrt.models.phonemes import normalize_voice_text

        return normalize_voice_text(text)

    def tokens(self, text: str) -> list[int]:
        from speechtrt.models.phonemes import phoneme_ids

        return phoneme_ids(text, self.voice)
