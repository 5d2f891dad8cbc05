"""``engines/<gpu>/<model>/manifest.json``: what each plan is, and the checks a plan must pass before it is loaded.

One manifest per model folder, one entry per plan, keyed ``<component>.<precision>``::

    {"format": "speechtrt-engines/1", "gpu": "sm86", "model": "asr-small",
     "engines": {"asr_small.int8": {"plan": "asr_small.int8.plan", "plan_bytes": ..., "plan_sha256": ...,
                                    "tensorrt": {"flavour": "tensorrt-rtx", "version": "1.7.1.116"},
                                    "target": {"gpu": "sm86", "compute_capability": "8.6", ...},
                                    "device": null, "precision": "int8", "profiles": [...],
                                    "onnx": {"file": ..., "sha256": ...}, "build_seconds": ...,
                                    "precision_summary": {...}}}}

A plan is refused (:class:`EngineLoadError`, naming the engine and the fix) when its file is missing, when its size or
SHA-256 differ from the manifest (truncated or corrupt), when it was built by another TensorRT flavour or version than
the one installed, or when a GPU is present whose compute capability the plan was not built for.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from speechtrt.engines.arch import DeviceInfo, current_device
from speechtrt.engines.flavour import FLAVOURS, TrtFlavour, import_flavour
from speechtrt.errors import EngineLoadError
from speechtrt.files import sha256_file

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "speechtrt-engines/1"
PLAN_SUFFIX = ".plan"
_DETECT = object()  # sentinel: look for the GPU at call time


def model_dir(engines_dir: str | Path, gpu: str, model: str) -> Path:
    """``engines/<gpu>/<model>``: the folder holding one model's plans and its manifest."""
    return Path(engines_dir) / gpu / model


def plan_path(engines_dir: str | Path, gpu: str, model: str, component: str, precision: str) -> Path:
    return model_dir(engines_dir, gpu, model) / f"{component}.{precision}{PLAN_SUFFIX}"


def entry_key(component: str, precision: str) -> str:
    return f"{component}.{precision}"


def read_manifest(folder: str | Path) -> dict:
    """The manifest in ``folder``; EngineLoadError when it is missing or unreadable."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise EngineLoadError(f"{path} does not exist: build the engines with `speechtrt build`")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EngineLoadError(
            f"{path} is not readable JSON ({exc}): rebuild the engines with `speechtrt build`"
        ) from exc
    if data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("engines"), dict):
        raise EngineLoadError(f"{path} is not a {MANIFEST_FORMAT} manifest: rebuild the engines with `speechtrt build`")
    return data


def update_manifest(folder: str | Path, gpu: str, model: str, key: str, entry: dict) -> Path:
    """Add or replace one entry and write the manifest atomically (a crash leaves the old file intact).

    An unreadable manifest is started afresh: the plans it described then fail :func:`check_engine` until rebuilt.
    """
    folder = Path(folder)
    try:
        data = read_manifest(folder)
    except EngineLoadError:
        data = {"format": MANIFEST_FORMAT, "gpu": gpu, "model": model, "engines": {}}
    data.update(format=MANIFEST_FORMAT, gpu=gpu, model=model)
    data["engines"][key] = entry
    data["engines"] = dict(sorted(data["engines"].items()))
    path = folder / MANIFEST_NAME
    tmp = folder / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def _rebuild_command(gpu: str, model: str, precision: str, engines_root: Path | None) -> str:
    cmd = f"speechtrt build --gpu {gpu} --model {model} --{precision}"
    if engines_root is not None and engines_root != Path("engines"):
        cmd += f" --engine-dir {engines_root}"
    return f"`{cmd}`"


def _parse_plan_name(path: Path) -> tuple[str, str]:
    stem = path.name.removesuffix(PLAN_SUFFIX)
    component, _, precision = stem.rpartition(".")
    return (component or stem), (precision or "fp32")


def check_engine(plan: str | Path, *, flavour: TrtFlavour | None = None, device: DeviceInfo | None | object = _DETECT,
                 verify_sha256: bool = True) -> dict:
    """Check that the plan at ``plan`` can be loaded here, and return its manifest entry.

    ``flavour``: the TensorRT that will load it (default: the installed one of the flavour that built it).
    ``device``: the GPU it will run on (default: the one present, if any; pass None to skip the GPU check).
    ``verify_sha256`` re-hashes the file (a 200 MB plan takes well under a second).
    """
    plan = Path(plan)
    folder = plan.parent
    gpu_name, model = folder.parent.name, folder.name
    component, precision = _parse_plan_name(plan)
    fix = _rebuild_command(gpu_name, model, precision, folder.parent.parent)
    engine = f"engine {component} ({precision}, {gpu_name}, {plan})"

    if not plan.is_file():
        raise EngineLoadError(f"{engine} does not exist: build it with {fix}")
    try:
        data = read_manifest(folder)
    except EngineLoadError as exc:
        raise EngineLoadError(f"{engine} has no usable manifest ({exc}); rebuild it with {fix}") from exc
    entry = data["engines"].get(entry_key(component, precision))
    if entry is None or entry.get("plan") != plan.name:
        raise EngineLoadError(f"{engine} is not listed in {folder / MANIFEST_NAME}: rebuild it with {fix}")
    gpu_name = entry.get("target", {}).get("gpu", gpu_name)
    model = data.get("model", model)
    root = folder.parent.parent
    fix = _rebuild_command(gpu_name, model, precision, root)

    size = plan.stat().st_size
    if size != entry.get("plan_bytes"):
        state = "truncated" if size < entry.get("plan_bytes", 0) else "corrupt"
        raise EngineLoadError(
            f"{engine} is {state}: {size} bytes on disk, {entry.get('plan_bytes')} when built; rebuild it with {fix}"
        )
    if verify_sha256 and sha256_file(plan) != entry.get("plan_sha256"):
        raise EngineLoadError(
            f"{engine} is corrupt: its SHA-256 differs from the one recorded at build; rebuild it with {fix}"
        )

    _check_tensorrt(engine, entry, flavour, fix)
    if device is _DETECT:
        device = current_device()
    if device is not None:
        _check_device(engine, entry, device, _rebuild_command(device.sm, model, precision, root))
    return entry


def _check_tensorrt(engine: str, entry: dict, loader: TrtFlavour | None, fix: str) -> None:
    built = entry.get("tensorrt", {})
    flavour, version = built.get("flavour"), built.get("version")
    if flavour not in FLAVOURS:
        raise EngineLoadError(f"{engine} records no known TensorRT flavour ({flavour!r}): rebuild it with {fix}")
    here = loader if loader is not None else import_flavour(flavour)
    built_label = f"{'TensorRT-RTX' if flavour == 'tensorrt-rtx' else 'TensorRT'} {version}"
    if here is None:
        raise EngineLoadError(
            f"{engine} was built with {built_label}, which is not installed here: install that version, or rebuild "
            f"it here with {fix}"
        )
    if here.flavour != flavour or here.version != version:
        raise EngineLoadError(
            f"{engine} was built with {built_label} but {here.label} is installed, and a plan loads only in the "
            f"TensorRT that built it: rebuild it with {fix}, or install {built_label}"
        )


def _check_device(engine: str, entry: dict, device: DeviceInfo, fix_here: str) -> None:
    """``fix_here`` is the build command for this GPU."""
    target = entry.get("target", {})
    want = target.get("compute_capability")
    if target.get("hardware_compat") == "ampere-plus" and device.major >= 8:
        return
    if want == device.capability:
        return
    if entry.get("tensorrt", {}).get("flavour") == "tensorrt-rtx" and device.major in (9, 10):
        raise EngineLoadError(
            f"{engine} is a TensorRT-RTX plan for compute capability {want}, and this GPU is {device.name} "
            f"({device.sm}), where TensorRT-RTX engines do not run: install TensorRT "
            f"(pip install --extra-index-url https://pypi.nvidia.com tensorrt) and rebuild on this GPU with {fix_here}"
        )
    raise EngineLoadError(
        f"{engine} was built for compute capability {want} but this GPU is {device.name} ({device.sm}, compute "
        f"capability {device.capability}): rebuild it for this GPU with {fix_here}"
    )
